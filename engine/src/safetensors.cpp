#include "safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <limits>
#include <new>
#include <set>
#include <sstream>
#include <system_error>
#include <unordered_set>
#include <utility>

#include <nlohmann/json.hpp>

namespace mlmamba {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

// Real headers are a few hundred KiB even for thousands of tensors; anything this large is a lie
// and would only make the JSON parser allocate unbounded memory.
constexpr uint64_t kMaxHeaderBytes = 100ull << 20;
// An index lists names and file names only; same reasoning as for the header.
constexpr uintmax_t kMaxIndexBytes = 100ull << 20;

constexpr const char* kSingleFileName = "model.safetensors";
constexpr const char* kIndexFileName = "model.safetensors.index.json";

Error corrupt(const fs::path& file, const std::string& what) {
  return make_error(ErrorCode::kCorruptFile, file.string() + ": " + what);
}

Error corrupt_tensor(const fs::path& file, const std::string& name, const std::string& what) {
  return make_error(ErrorCode::kCorruptFile, file.string() + ": tensor '" + name + "': " + what);
}

// A read-only view of a whole file. Owns the mapping; the address never changes once made, so
// TensorView pointers into it survive moves of whatever holds the Mapping.
class Mapping {
 public:
  Mapping() = default;
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  Mapping(Mapping&& o) noexcept
      : path_(std::move(o.path_)), addr_(std::exchange(o.addr_, nullptr)), size_(o.size_) {}
  Mapping& operator=(Mapping&&) = delete;
  ~Mapping() {
    if (addr_ != nullptr) munmap(addr_, size_);
  }

  static Result<Mapping> open(const fs::path& path) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      const int err = errno;
      const ErrorCode code = err == ENOENT ? ErrorCode::kNotFound : ErrorCode::kIo;
      return make_error(code, path.string() + ": cannot open: " + std::strerror(err));
    }
    struct stat st {};
    if (fstat(fd, &st) != 0) {
      const int err = errno;
      ::close(fd);
      return make_error(ErrorCode::kIo, path.string() + ": cannot stat: " + std::strerror(err));
    }
    if (!S_ISREG(st.st_mode)) {
      ::close(fd);
      return make_error(ErrorCode::kInvalidArgument, path.string() + ": not a regular file");
    }
    const auto size = static_cast<uint64_t>(st.st_size);
    // mmap refuses a zero length, and nothing shorter than the length prefix can be valid anyway.
    if (size < 8) {
      ::close(fd);
      return corrupt(path, size == 0 ? "file is empty"
                                     : "file is " + std::to_string(size) +
                                           " bytes, shorter than the 8-byte header length");
    }
    void* addr = mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
    const int err = errno;
    ::close(fd);  // the mapping keeps its own reference to the file
    if (addr == MAP_FAILED) {
      return make_error(ErrorCode::kIo, path.string() + ": mmap failed: " + std::strerror(err));
    }
    Mapping m;
    m.path_ = path;
    m.addr_ = addr;
    m.size_ = size;
    return m;
  }

  const fs::path& path() const { return path_; }
  const std::byte* data() const { return static_cast<const std::byte*>(addr_); }
  uint64_t size() const { return size_; }

 private:
  fs::path path_;
  void* addr_ = nullptr;
  uint64_t size_ = 0;
};

struct ParsedFile {
  std::vector<TensorView> tensors;
  std::map<std::string, std::string> metadata;
};

enum class DTypeClass { kSupported, kUnsupported, kUnknown };

// Every dtype name the safetensors format defines, so that a real but unhandled dtype is reported
// as unsupported while a garbage string is reported as corruption.
DTypeClass classify_dtype(const std::string& s, DType* out) {
  static const std::map<std::string, DType, std::less<>> kSupported = {
      {"F32", DType::kF32}, {"F16", DType::kF16}, {"BF16", DType::kBF16}};
  static const std::set<std::string, std::less<>> kKnownUnsupported = {
      "BOOL", "U8",  "I8", "I16",     "U16",     "I32",     "U32",     "I64",    "U64",
      "F64",  "C64", "F4", "F8_E5M2", "F8_E4M3", "F8_E8M0", "F6_E2M3", "F6_E3M2"};
  if (const auto it = kSupported.find(s); it != kSupported.end()) {
    *out = it->second;
    return DTypeClass::kSupported;
  }
  return kKnownUnsupported.count(s) != 0 ? DTypeClass::kUnsupported : DTypeClass::kUnknown;
}

// Reads a JSON integer into u64 only when it is a non-negative integer as written (no floats,
// no negatives), so that "2.0", "-1" or 1e30 cannot sneak through a conversion.
bool as_u64(const json& j, uint64_t* out) {
  if (j.is_number_unsigned()) {
    *out = j.get<uint64_t>();
    return true;
  }
  if (j.is_number_integer()) {
    const auto v = j.get<int64_t>();
    if (v < 0) return false;
    *out = static_cast<uint64_t>(v);
    return true;
  }
  return false;
}

// Parses JSON text without letting exceptions out and rejects duplicate keys in the top-level
// object: nlohmann keeps the last duplicate silently, which would let a header describe one
// tensor twice and have the reader see only one of them.
Result<json> parse_json_object(const fs::path& file, const char* begin, const char* end,
                               const char* what) {
  std::unordered_set<std::string> top_keys;
  std::string duplicate;
  json::parser_callback_t cb = [&](int depth, json::parse_event_t event, json& parsed) {
    if (event == json::parse_event_t::key && depth == 1 && duplicate.empty()) {
      const std::string& key = parsed.get_ref<const std::string&>();
      if (!top_keys.insert(key).second) duplicate = key;
    }
    return true;
  };
  json j;
  try {
    j = json::parse(begin, end, cb, /*allow_exceptions=*/true);
  } catch (const json::exception& e) {
    return corrupt(file, std::string(what) + " is not valid JSON: " + e.what());
  }
  if (!j.is_object()) return corrupt(file, std::string(what) + " is not a JSON object");
  if (!duplicate.empty()) {
    return corrupt(file, std::string(what) + " has the key '" + duplicate + "' twice");
  }
  return j;
}

Result<ParsedFile> parse_header(const Mapping& map) {
  const fs::path& file = map.path();
  const std::byte* base = map.data();
  const uint64_t file_size = map.size();

  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | std::to_integer<uint64_t>(base[i]);
  // The shortest meaningful header is "{}".
  if (header_len < 2) {
    return corrupt(file, "header length " + std::to_string(header_len) + " is too small");
  }
  if (header_len > kMaxHeaderBytes) {
    return corrupt(file, "header length " + std::to_string(header_len) + " exceeds the " +
                             std::to_string(kMaxHeaderBytes) + "-byte limit");
  }
  if (header_len > file_size - 8) {
    return corrupt(file, "header length " + std::to_string(header_len) +
                             " runs past the end of the " + std::to_string(file_size) +
                             "-byte file");
  }
  const auto* text = reinterpret_cast<const char*>(base + 8);
  // The format requires the header to start with '{' (only trailing space padding is allowed).
  // NUL is checked separately because nlohmann's lexer takes it as end of input and would
  // silently ignore whatever follows it.
  if (text[0] != '{')
    return corrupt(file, "header is not a JSON object: it does not start with '{'");
  if (std::memchr(text, '\0', header_len) != nullptr) {
    return corrupt(file, "header is not valid JSON: it contains a NUL byte");
  }
  MLM_ASSIGN_OR_RETURN(json header, parse_json_object(file, text, text + header_len, "header"));

  const std::byte* data_begin = base + 8 + header_len;
  const uint64_t data_size = file_size - 8 - header_len;

  ParsedFile out;
  out.tensors.reserve(header.size());
  for (auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      if (!entry.is_object()) return corrupt(file, "__metadata__ is not a JSON object");
      for (auto& [key, value] : entry.items()) {
        if (!value.is_string()) {
          return corrupt(file, "__metadata__ value of '" + key + "' is not a string");
        }
        out.metadata.emplace(key, value.get<std::string>());
      }
      continue;
    }
    if (!entry.is_object()) return corrupt_tensor(file, name, "entry is not a JSON object");

    TensorView t;
    t.name = name;

    const auto dt = entry.find("dtype");
    if (dt == entry.end() || !dt->is_string()) {
      return corrupt_tensor(file, name, "missing or non-string dtype");
    }
    const std::string& dtype_str = dt->get_ref<const std::string&>();
    switch (classify_dtype(dtype_str, &t.dtype)) {
      case DTypeClass::kSupported:
        break;
      case DTypeClass::kUnsupported:
        return make_error(ErrorCode::kUnsupported, file.string() + ": tensor '" + name +
                                                       "': dtype " + dtype_str +
                                                       " is not supported (F32, F16 and BF16 are)");
      case DTypeClass::kUnknown:
        return corrupt_tensor(file, name, "unknown dtype '" + dtype_str + "'");
    }

    const auto sh = entry.find("shape");
    if (sh == entry.end() || !sh->is_array()) {
      return corrupt_tensor(file, name, "missing or non-array shape");
    }
    uint64_t numel = 1;
    t.shape.reserve(sh->size());
    for (const json& d : *sh) {
      uint64_t dim = 0;
      if (!as_u64(d, &dim)) {
        return corrupt_tensor(file, name,
                              "shape holds " + d.dump() + ", not a non-negative integer");
      }
      if (dim > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) ||
          __builtin_mul_overflow(numel, dim, &numel) ||
          numel > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        return corrupt_tensor(file, name, "shape " + sh->dump() + " overflows");
      }
      t.shape.push_back(static_cast<int64_t>(dim));
    }
    uint64_t nbytes = 0;
    if (__builtin_mul_overflow(numel, static_cast<uint64_t>(dtype_size(t.dtype)), &nbytes)) {
      return corrupt_tensor(file, name, "shape " + sh->dump() + " overflows");
    }

    const auto off = entry.find("data_offsets");
    uint64_t begin = 0, end = 0;
    if (off == entry.end() || !off->is_array() || off->size() != 2 || !as_u64((*off)[0], &begin) ||
        !as_u64((*off)[1], &end)) {
      return corrupt_tensor(file, name,
                            "data_offsets must be [begin, end] of non-negative integers");
    }
    if (begin > end) {
      return corrupt_tensor(file, name, "data_offsets " + off->dump() + " has begin > end");
    }
    if (end > data_size) {
      return corrupt_tensor(file, name,
                            "data_offsets " + off->dump() + " run past the end of the data (" +
                                std::to_string(data_size) + " bytes)");
    }
    if (end - begin != nbytes) {
      return corrupt_tensor(file, name,
                            "data_offsets " + off->dump() + " span " + std::to_string(end - begin) +
                                " bytes but shape " + sh->dump() + " of " + dtype_str + " needs " +
                                std::to_string(nbytes));
    }
    t.data = data_begin + begin;
    t.nbytes = static_cast<size_t>(nbytes);
    out.tensors.push_back(std::move(t));
  }

  // Overlapping tensors would alias each other's bytes: a sign of a forged or damaged header.
  // Empty tensors own no bytes, so they cannot overlap anything wherever their offset points.
  std::vector<const TensorView*> order;
  order.reserve(out.tensors.size());
  for (const TensorView& t : out.tensors) {
    if (t.nbytes != 0) order.push_back(&t);
  }
  std::sort(order.begin(), order.end(),
            [](const TensorView* a, const TensorView* b) { return a->data < b->data; });
  for (size_t i = 1; i < order.size(); ++i) {
    if (order[i]->data < order[i - 1]->data + order[i - 1]->nbytes) {
      return corrupt_tensor(file, order[i]->name,
                            "data overlaps tensor '" + order[i - 1]->name + "'");
    }
  }
  return out;
}

Result<std::string> read_small_file(const fs::path& path, uintmax_t limit) {
  std::error_code ec;
  const uintmax_t size = fs::file_size(path, ec);
  if (ec) return make_error(ErrorCode::kIo, path.string() + ": " + ec.message());
  if (size > limit) {
    return corrupt(path, "is " + std::to_string(size) + " bytes, over the " +
                             std::to_string(limit) + "-byte limit");
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) return make_error(ErrorCode::kIo, path.string() + ": cannot open");
  std::string text(static_cast<size_t>(size), '\0');
  in.read(text.data(), static_cast<std::streamsize>(size));
  if (in.gcount() != static_cast<std::streamsize>(size)) {
    return make_error(ErrorCode::kIo, path.string() + ": short read");
  }
  return text;
}

// Shard names come from a file we do not control; keep them inside the model folder.
bool is_safe_relative(const fs::path& p) {
  if (p.empty() || p.is_absolute() || p.has_root_name() || p.has_root_directory()) return false;
  for (const fs::path& part : p) {
    if (part == "..") return false;
  }
  return true;
}

}  // namespace

const char* dtype_name(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return "f32";
    case DType::kF16:
      return "f16";
    case DType::kBF16:
      return "bf16";
  }
  return "unknown";
}

size_t dtype_size(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return 4;
    case DType::kF16:
      return 2;
    case DType::kBF16:
      return 2;
  }
  return 1;
}

int64_t TensorView::numel() const {
  // Unsigned so that a hand-made view with absurd dims wraps instead of hitting signed overflow;
  // views from a WeightStore were overflow-checked when the file was opened.
  uint64_t n = 1;
  for (int64_t d : shape) n *= static_cast<uint64_t>(d);
  return static_cast<int64_t>(n);
}

struct WeightStore::Impl {
  struct Entry {
    TensorView view;
    size_t file;  // index into `mappings`, to name both files when a tensor appears twice
  };
  // A std::vector may move Mapping objects, but never the mapped addresses TensorViews point to.
  std::vector<Mapping> mappings;
  std::map<std::string, Entry, std::less<>> tensors;
  std::map<std::string, std::string> metadata;

  Result<void> add_file(Mapping map) {
    MLM_ASSIGN_OR_RETURN(ParsedFile parsed, parse_header(map));
    for (const TensorView& t : parsed.tensors) {
      const auto it = tensors.find(t.name);
      if (it != tensors.end()) {
        return corrupt_tensor(map.path(), t.name,
                              "also present in " + mappings[it->second.file].path().string());
      }
    }
    if (mappings.empty()) metadata = std::move(parsed.metadata);
    const size_t file = mappings.size();
    mappings.push_back(std::move(map));
    for (TensorView& t : parsed.tensors) {
      std::string key = t.name;
      tensors.emplace(std::move(key), Entry{std::move(t), file});
    }
    return {};
  }

  Result<void> add_path(const fs::path& path) {
    MLM_ASSIGN_OR_RETURN(Mapping map, Mapping::open(path));
    return add_file(std::move(map));
  }

  Result<void> add_sharded(const fs::path& folder, const fs::path& index_path) {
    MLM_ASSIGN_OR_RETURN(std::string text, read_small_file(index_path, kMaxIndexBytes));
    MLM_ASSIGN_OR_RETURN(
        json index, parse_json_object(index_path, text.data(), text.data() + text.size(), "index"));
    const auto wm = index.find("weight_map");
    if (wm == index.end() || !wm->is_object()) {
      return corrupt(index_path, "missing or non-object weight_map");
    }
    if (wm->empty()) return corrupt(index_path, "weight_map lists no tensors");

    // Sorted, so shards are mapped in a stable order and "the first file" (whose metadata the
    // store reports) is the first shard by name, e.g. model-00001-of-00004.safetensors.
    std::map<std::string, std::vector<std::string>> shards;
    for (auto& [name, file] : wm->items()) {
      if (!file.is_string()) {
        return corrupt(index_path, "weight_map entry of '" + name + "' is not a string");
      }
      const std::string& file_name = file.get_ref<const std::string&>();
      if (!is_safe_relative(fs::path(file_name))) {
        return corrupt(index_path, "weight_map entry of '" + name + "' names '" + file_name +
                                       "', which is not a file inside the model folder");
      }
      shards[file_name].push_back(name);
    }

    for (const auto& [file_name, names] : shards) {
      const fs::path shard_path = folder / file_name;
      std::error_code ec;
      if (!fs::exists(shard_path, ec)) {
        return make_error(ErrorCode::kNotFound, index_path.string() + ": shard " +
                                                    shard_path.string() + " does not exist");
      }
      MLM_TRY(add_path(shard_path));
      const size_t file = mappings.size() - 1;
      for (const std::string& name : names) {
        const auto it = tensors.find(name);
        if (it == tensors.end() || it->second.file != file) {
          return corrupt(index_path, "tensor '" + name + "' is listed in shard " +
                                         shard_path.string() + " but that shard does not hold it");
        }
      }
    }
    return {};
  }
};

WeightStore::WeightStore(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
WeightStore::WeightStore(WeightStore&&) noexcept = default;
WeightStore& WeightStore::operator=(WeightStore&&) noexcept = default;
WeightStore::~WeightStore() = default;

Result<WeightStore> WeightStore::open(const fs::path& path) {
  // Parsing reports problems as values; what can still throw here is allocation and the
  // filesystem library, and none of it may cross the API.
  try {
    auto impl = std::make_unique<Impl>();
    std::error_code ec;
    const fs::file_status st = fs::status(path, ec);
    if (!fs::exists(st)) {
      if (ec && ec != std::errc::no_such_file_or_directory) {
        return make_error(ErrorCode::kIo, path.string() + ": " + ec.message());
      }
      return make_error(ErrorCode::kNotFound, path.string() + ": no such file or folder");
    }
    if (fs::is_directory(st)) {
      const fs::path single = path / kSingleFileName;
      const fs::path index = path / kIndexFileName;
      if (fs::exists(single, ec)) {
        MLM_TRY(impl->add_path(single));
      } else if (fs::exists(index, ec)) {
        MLM_TRY(impl->add_sharded(path, index));
      } else {
        return make_error(ErrorCode::kNotFound, path.string() + ": folder holds neither " +
                                                    kSingleFileName + " nor " + kIndexFileName);
      }
    } else if (path.filename().string().ends_with(".index.json")) {
      // Pointing at the index itself is as good as pointing at its folder.
      MLM_TRY(impl->add_sharded(path.parent_path(), path));
    } else {
      MLM_TRY(impl->add_path(path));
    }
    return WeightStore(std::move(impl));
  } catch (const std::bad_alloc&) {
    return make_error(ErrorCode::kOutOfMemory, path.string() + ": out of memory while reading");
  } catch (const std::exception& e) {
    return make_error(ErrorCode::kIo, path.string() + ": " + e.what());
  }
}

const TensorView* WeightStore::find(std::string_view name) const {
  if (!impl_) return nullptr;
  const auto it = impl_->tensors.find(name);
  return it == impl_->tensors.end() ? nullptr : &it->second.view;
}

std::vector<std::string> WeightStore::names() const {
  std::vector<std::string> out;
  if (!impl_) return out;
  out.reserve(impl_->tensors.size());
  for (const auto& kv : impl_->tensors) out.push_back(kv.first);
  return out;
}

size_t WeightStore::size() const {
  return impl_ ? impl_->tensors.size() : 0;
}

const std::map<std::string, std::string>& WeightStore::metadata() const {
  static const std::map<std::string, std::string> kEmpty;
  return impl_ ? impl_->metadata : kEmpty;
}

namespace {

// All loops below read through memcpy so the unaligned mapping is never dereferenced as a wider
// type, and are written as plain element loops that GCC/Clang vectorise at -O3.

void bf16_to_f32(const std::byte* src, float* out, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    uint16_t h;
    std::memcpy(&h, src + 2 * i, 2);
    const uint32_t bits = static_cast<uint32_t>(h) << 16;
    std::memcpy(out + i, &bits, 4);
  }
}

// Bit manipulation rather than a 64K-entry table: every lane takes the same mask-based path, so
// the loop vectorises and measured about 2.5x faster than a table lookup here (a table makes
// each element a scalar load, cannot vectorise without gathers, and occupies 256 KiB of cache).
void f16_to_f32(const std::byte* src, float* out, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    uint16_t h;
    std::memcpy(&h, src + 2 * i, 2);
    const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
    const uint32_t em = h & 0x7fffu;  // exponent and mantissa
    // All-ones masks instead of branches or ?: so that GCC sees straight-line code and vectorises.
    const uint32_t special_mask = 0u - static_cast<uint32_t>(em >= 0x7c00u);
    const uint32_t sub_mask = 0u - static_cast<uint32_t>(em < 0x0400u);
    // Normal: move the 5-bit exponent into the 8-bit field and rebias 15 -> 127. Inf/NaN: the
    // same rebias applied twice lands the all-ones 5-bit exponent on the all-ones 8-bit one,
    // keeping the NaN payload.
    const uint32_t rebias = (127u - 15u) << 23;
    const uint32_t wide = (em << 13) + rebias + (rebias & special_mask);
    // Zero/subnormal: value is mantissa * 2^-24; both factors are exact in f32 and the product is
    // a normal f32 (or zero), so the multiply is exact.
    const float sub_f = static_cast<float>(static_cast<int32_t>(em)) * 0x1p-24f;
    uint32_t sub;
    std::memcpy(&sub, &sub_f, 4);
    const uint32_t mag = (sub & sub_mask) | (wide & ~sub_mask);
    const uint32_t bits = sign | mag;
    std::memcpy(out + i, &bits, 4);
  }
}

void convert_range(DType dtype, const std::byte* src, float* out, size_t n) {
  switch (dtype) {
    case DType::kF32:
      std::memcpy(out, src, n * 4);
      return;
    case DType::kF16:
      f16_to_f32(src, out, n);
      return;
    case DType::kBF16:
      bf16_to_f32(src, out, n);
      return;
  }
}

}  // namespace

void convert_to_f32(const TensorView& t, float* out) {
  const size_t elem = dtype_size(t.dtype);
  // Bounded by both the bytes the view owns and the elements its shape declares, so a hand-made
  // inconsistent view can neither read past its data nor write past a numel-sized buffer.
  const int64_t numel = t.numel();
  const size_t n = std::min(t.nbytes / elem, numel > 0 ? static_cast<size_t>(numel) : size_t{0});
  if (n == 0 || t.data == nullptr) return;

  // One core does not saturate memory bandwidth on large servers; split big tensors into blocks.
  // Small ones are not worth waking threads for.
  constexpr size_t kBlock = size_t{1} << 20;
  if (n < 2 * kBlock) {
    convert_range(t.dtype, t.data, out, n);
    return;
  }
  const auto blocks = static_cast<int64_t>((n + kBlock - 1) / kBlock);
#pragma omp parallel for schedule(static)
  for (int64_t b = 0; b < blocks; ++b) {
    const size_t first = static_cast<size_t>(b) * kBlock;
    const size_t count = std::min(kBlock, n - first);
    convert_range(t.dtype, t.data + first * elem, out + first, count);
  }
}

std::vector<float> to_f32(const TensorView& t) {
  const int64_t numel = t.numel();
  const size_t n =
      std::min(t.nbytes / dtype_size(t.dtype), numel > 0 ? static_cast<size_t>(numel) : size_t{0});
  std::vector<float> out(n);
  convert_to_f32(t, out.data());
  return out;
}

}  // namespace mlmamba
