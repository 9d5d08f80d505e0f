#include "image.h"

#include <sys/stat.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#ifdef MLMAMBA_WITH_OPENCV
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#endif

namespace mlmamba {

namespace fs = std::filesystem;

namespace {

// ---------------------------------------------------------------------------------------------
// Header probing: width and height straight from the bytes, before OpenCV allocates anything.
// ---------------------------------------------------------------------------------------------

// OpenCV's own guards (CV_IO_MAX_IMAGE_WIDTH / _HEIGHT) refuse longer sides by throwing from inside
// imdecode; refusing them here gives the same answer with a readable message.
constexpr uint64_t kMaxSide = 1u << 20;

enum class Format { kPng, kJpeg, kBmp, kWebp, kGif, kTiff, kPpm };

const char* format_name(Format f) {
  switch (f) {
    case Format::kPng:
      return "PNG";
    case Format::kJpeg:
      return "JPEG";
    case Format::kBmp:
      return "BMP";
    case Format::kWebp:
      return "WebP";
    case Format::kGif:
      return "GIF";
    case Format::kTiff:
      return "TIFF";
    case Format::kPpm:
      return "PPM";
  }
  return "?";
}

struct Header {
  Format format;
  uint64_t width = 0;
  uint64_t height = 0;
};

Error corrupt(const std::string& what) {
  return make_error(ErrorCode::kCorruptFile, what);
}

// Bounds-checked reads; every offset comes from the file itself, so none is trusted.
class Bytes {
 public:
  explicit Bytes(std::span<const uint8_t> b) : b_(b) {}
  size_t size() const { return b_.size(); }
  bool has(uint64_t pos, uint64_t n) const { return pos <= b_.size() && n <= b_.size() - pos; }
  uint8_t u8(uint64_t p) const { return b_[p]; }
  uint32_t be16(uint64_t p) const { return (uint32_t{b_[p]} << 8) | b_[p + 1]; }
  uint32_t le16(uint64_t p) const { return (uint32_t{b_[p + 1]} << 8) | b_[p]; }
  uint32_t be32(uint64_t p) const { return (be16(p) << 16) | be16(p + 2); }
  uint32_t le32(uint64_t p) const { return (le16(p + 2) << 16) | le16(p); }
  uint32_t le24(uint64_t p) const {
    return uint32_t{b_[p]} | (uint32_t{b_[p + 1]} << 8) | (uint32_t{b_[p + 2]} << 16);
  }
  bool starts_with(uint64_t p, const char* s, size_t n) const {
    return has(p, n) && std::memcmp(b_.data() + p, s, n) == 0;
  }

 private:
  std::span<const uint8_t> b_;
};

// Every check that can run on dimensions alone, done as soon as a parser knows them, so a lying
// header is refused before the rest of the file is even walked.
Result<void> check_size(const Header& h, const ImageLimits& limits) {
  const std::string dims = std::to_string(h.width) + "x" + std::to_string(h.height);
  if (h.width == 0 || h.height == 0) {
    return corrupt(std::string(format_name(h.format)) + " header says the picture is " + dims +
                   " pixels (empty)");
  }
  if (h.width > kMaxSide || h.height > kMaxSide) {
    return make_error(ErrorCode::kLimitExceeded,
                      std::string(format_name(h.format)) + " picture of " + dims +
                          " pixels: sides longer than " + std::to_string(kMaxSide) +
                          " pixels are not supported");
  }
  const uint64_t max_pixels = limits.max_pixels > 0 ? static_cast<uint64_t>(limits.max_pixels) : 0;
  if (h.width > max_pixels / h.height) {
    return make_error(ErrorCode::kLimitExceeded,
                      std::string(format_name(h.format)) + " picture of " + dims + " pixels (" +
                          std::to_string(h.width * h.height) + ") is over the limit of " +
                          std::to_string(max_pixels) + " pixels");
  }
  return {};
}

// CRC-32 as PNG defines it (reflected polynomial 0xedb88320).
uint32_t crc32(std::span<const uint8_t> data) {
  static const auto table = [] {
    std::array<uint32_t, 256> t{};
    for (uint32_t n = 0; n < 256; ++n) {
      uint32_t c = n;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xedb88320u ^ (c >> 1) : c >> 1;
      t[n] = c;
    }
    return t;
  }();
  uint32_t c = 0xffffffffu;
  for (uint8_t v : data) c = table[(c ^ v) & 0xff] ^ (c >> 8);
  return c ^ 0xffffffffu;
}

// The chunk walk catches truncation and damage (every chunk's CRC) before libpng runs: libpng
// fails on such files too, but only after allocating the picture, and it prints its reason on
// stderr, which nothing here can switch off.
Result<Header> probe_png(std::span<const uint8_t> bytes, const Bytes& b,
                         const ImageLimits& limits) {
  if (!b.has(8, 8 + 13) || !b.starts_with(12, "IHDR", 4)) {
    return corrupt("PNG without an IHDR header (truncated or damaged)");
  }
  Header h{Format::kPng, b.be32(16), b.be32(20)};
  MLM_TRY(check_size(h, limits));
  bool seen_idat = false;
  uint64_t pos = 8;
  while (true) {
    if (!b.has(pos, 8)) return corrupt("truncated PNG (no IEND chunk)");
    const uint64_t len = b.be32(pos);
    if (len > 0x7fffffffu) return corrupt("PNG chunk length over 2^31 (damaged file)");
    if (!b.has(pos + 8, len + 4)) return corrupt("truncated PNG (a chunk runs past the end)");
    if (crc32(bytes.subspan(pos + 4, len + 4)) != b.be32(pos + 8 + len)) {
      std::string type(reinterpret_cast<const char*>(bytes.data() + pos + 4), 4);
      for (char& ch : type) {
        if (!std::isalpha(static_cast<unsigned char>(ch))) ch = '?';
      }
      return corrupt("damaged PNG (chunk " + type + " fails its CRC check)");
    }
    if (b.starts_with(pos + 4, "IDAT", 4)) seen_idat = true;
    if (b.starts_with(pos + 4, "IEND", 4)) break;
    pos += 12 + len;
  }
  if (!seen_idat) return corrupt("PNG without image data (no IDAT chunk)");
  return h;
}

// Walks the marker segments to the end of image. OpenCV 4.6 decodes a JPEG cut in half without a
// word and returns a full-size picture whose missing part is invented (flat grey); a clear refusal
// is better than answering questions about that, so a missing EOI marker is an error.
Result<Header> probe_jpeg(const Bytes& b, const ImageLimits& limits) {
  Header h{Format::kJpeg};
  bool have_sof = false;
  uint64_t pos = 2;
  while (true) {
    // libjpeg skips stray bytes before a marker (with a warning); so does this walk.
    while (pos < b.size() && b.u8(pos) != 0xff) ++pos;
    while (pos < b.size() && b.u8(pos) == 0xff) ++pos;  // fill bytes
    if (pos >= b.size()) break;
    const uint8_t marker = b.u8(pos++);
    if (marker == 0xd9) {  // EOI
      if (!have_sof) return corrupt("JPEG without a frame header (SOF marker)");
      return h;
    }
    if (marker == 0x01 || (marker >= 0xd0 && marker <= 0xd7)) continue;  // no payload
    if (marker == 0xd8) return corrupt("JPEG with a second start-of-image marker");
    if (!b.has(pos, 2)) break;
    const uint64_t len = b.be16(pos);
    if (len < 2) return corrupt("JPEG marker segment with a length below 2");
    const bool sof =
        marker >= 0xc0 && marker <= 0xcf && marker != 0xc4 && marker != 0xc8 && marker != 0xcc;
    // The size is judged as soon as it is readable, before the rest of the segment is required.
    if (sof && !have_sof && b.has(pos, 7)) {
      if (len < 8) return corrupt("JPEG frame header too short");
      h.height = b.be16(pos + 3);
      h.width = b.be16(pos + 5);
      if (h.height == 0) {
        // Height 0 means "given later by a DNL marker", which libjpeg does not implement.
        return make_error(ErrorCode::kUnsupported,
                          "JPEG whose height is given by a DNL marker is not supported");
      }
      MLM_TRY(check_size(h, limits));
      have_sof = true;
    }
    if (!b.has(pos, len)) break;
    pos += len;
    if (marker == 0xda) {  // SOS: entropy-coded data follows, up to the next real marker
      if (!have_sof) return corrupt("JPEG scan before the frame header");
      while (pos + 1 < b.size()) {
        if (b.u8(pos) == 0xff) {
          const uint8_t next = b.u8(pos + 1);
          // 0xff00 is a stuffed data byte, 0xffd0..d7 restart markers inside the scan.
          if (next == 0x00 || (next >= 0xd0 && next <= 0xd7)) {
            pos += 2;
            continue;
          }
          if (next != 0xff) break;
        }
        ++pos;
      }
    }
  }
  return corrupt(have_sof ? "truncated JPEG (no end-of-image marker)"
                          : "truncated JPEG (no frame header)");
}

Result<Header> probe_bmp(const Bytes& b, const ImageLimits& limits) {
  if (!b.has(0, 26)) return corrupt("truncated BMP header");
  Header h{Format::kBmp};
  const uint64_t data_offset = b.le32(10);
  const uint32_t info_size = b.le32(14);
  uint32_t bits = 0;
  uint32_t compression = 0;
  if (info_size == 12) {  // OS/2 1.x core header: 16-bit unsigned sides
    h.width = b.le16(18);
    h.height = b.le16(20);
    bits = b.le16(24);
  } else if (info_size >= 40 && info_size <= 124) {
    if (!b.has(0, 14 + 40)) return corrupt("truncated BMP header");
    const auto w = static_cast<int32_t>(b.le32(18));
    const auto hh = static_cast<int32_t>(b.le32(22));  // negative: rows stored top-down
    if (w < 0) return corrupt("BMP with a negative width");
    h.width = static_cast<uint64_t>(w);
    h.height = hh < 0 ? uint64_t{0} - static_cast<uint64_t>(static_cast<int64_t>(hh))
                      : static_cast<uint64_t>(hh);
    bits = b.le16(28);
    compression = b.le32(30);
  } else {
    return corrupt("BMP with an unknown header size " + std::to_string(info_size));
  }
  MLM_TRY(check_size(h, limits));
  // Uncompressed rows have a known length, so a cut file shows; RLE data is checked by the decoder.
  const bool uncompressed = compression == 0 || compression == 3 || compression == 6;
  if (uncompressed && bits >= 1 && bits <= 32) {
    const uint64_t stride = (h.width * bits + 31) / 32 * 4;
    if (data_offset > b.size() || stride * h.height > b.size() - data_offset) {
      return corrupt("truncated BMP (pixel rows run past the end)");
    }
  }
  return h;
}

Result<Header> probe_webp(const Bytes& b, const ImageLimits& limits) {
  Header h{Format::kWebp};
  if (b.starts_with(12, "VP8 ", 4)) {
    if (!b.has(0, 30)) return corrupt("truncated WebP header");
    if (b.u8(23) != 0x9d || b.u8(24) != 0x01 || b.u8(25) != 0x2a) {
      return corrupt("WebP (lossy) without the VP8 start code");
    }
    h.width = b.le16(26) & 0x3fff;
    h.height = b.le16(28) & 0x3fff;
  } else if (b.starts_with(12, "VP8L", 4)) {
    if (!b.has(0, 25)) return corrupt("truncated WebP header");
    if (b.u8(20) != 0x2f) return corrupt("WebP (lossless) without the VP8L signature");
    const uint32_t v = b.le32(21);
    h.width = (v & 0x3fff) + 1;
    h.height = ((v >> 14) & 0x3fff) + 1;
  } else if (b.starts_with(12, "VP8X", 4)) {
    if (!b.has(0, 30)) return corrupt("truncated WebP header");
    h.width = uint64_t{b.le24(24)} + 1;
    h.height = uint64_t{b.le24(27)} + 1;
  } else {
    return corrupt(b.has(0, 16) ? "WebP with an unknown first chunk" : "truncated WebP header");
  }
  MLM_TRY(check_size(h, limits));
  if (uint64_t{b.le32(4)} + 8 > b.size()) return corrupt("truncated WebP (RIFF size past the end)");
  return h;
}

Result<Header> probe_gif(const Bytes& b, const ImageLimits& limits) {
  if (!b.has(0, 10)) return corrupt("truncated GIF header");
  Header h{Format::kGif, b.le16(6), b.le16(8)};
  MLM_TRY(check_size(h, limits));
  return h;
}

Result<Header> probe_tiff(const Bytes& b, const ImageLimits& limits) {
  const bool le = b.u8(0) == 'I';
  auto u16 = [&](uint64_t p) { return le ? b.le16(p) : b.be16(p); };
  auto u32 = [&](uint64_t p) { return le ? b.le32(p) : b.be32(p); };
  if (!b.has(0, 8)) return corrupt("truncated TIFF header");
  if (u16(2) == 43) return make_error(ErrorCode::kUnsupported, "BigTIFF is not supported");
  const uint64_t ifd = u32(4);
  if (!b.has(ifd, 2)) return corrupt("truncated TIFF (first directory past the end)");
  const uint64_t n = u16(ifd);
  if (!b.has(ifd + 2, n * 12)) return corrupt("truncated TIFF (first directory past the end)");
  Header h{Format::kTiff};
  bool have_w = false;
  bool have_h = false;
  for (uint64_t i = 0; i < n; ++i) {
    const uint64_t e = ifd + 2 + i * 12;
    const uint32_t tag = u16(e);
    if (tag != 256 && tag != 257) continue;
    const uint32_t type = u16(e + 2);
    uint64_t v = 0;
    if (type == 3) {
      v = u16(e + 8);  // SHORT, left-justified in the value field
    } else if (type == 4) {
      v = u32(e + 8);
    } else {
      return corrupt("TIFF with an image size of field type " + std::to_string(type));
    }
    (tag == 256 ? h.width : h.height) = v;
    (tag == 256 ? have_w : have_h) = true;
  }
  if (!have_w || !have_h) return corrupt("TIFF without ImageWidth/ImageLength");
  MLM_TRY(check_size(h, limits));
  return h;
}

// Unused in a build without OpenCV, which reads PPM only.
[[maybe_unused]] Result<Header> probe(std::span<const uint8_t> bytes, const ImageLimits& limits) {
  const Bytes b(bytes);
  if (b.size() == 0) return corrupt("empty file");
  if (b.starts_with(0, "\x89PNG\r\n\x1a\n", 8)) return probe_png(bytes, b, limits);
  if (b.starts_with(0, "\xff\xd8\xff", 3)) return probe_jpeg(b, limits);
  if (b.starts_with(0, "BM", 2)) return probe_bmp(b, limits);
  if (b.starts_with(0, "RIFF", 4) && b.starts_with(8, "WEBP", 4)) return probe_webp(b, limits);
  if (b.starts_with(0, "GIF87a", 6) || b.starts_with(0, "GIF89a", 6)) return probe_gif(b, limits);
  if (b.starts_with(0, "II\x2a\x00", 4) || b.starts_with(0, "MM\x00\x2a", 4) ||
      b.starts_with(0, "II\x2b\x00", 4) || b.starts_with(0, "MM\x00\x2b", 4)) {
    return probe_tiff(b, limits);
  }
  return make_error(ErrorCode::kUnsupported,
                    "not a picture in a known format (PNG, JPEG, BMP, WebP or TIFF)");
}

#ifndef MLMAMBA_WITH_OPENCV
// Binary PPM (P6, maxval 255): "P6", width, height, maxval as decimal fields separated by white
// space (comments after '#'), one white-space byte, then RGB rows.
Result<RgbImage> decode_ppm(std::span<const uint8_t> bytes, const ImageLimits& limits) {
  size_t p = 2;
  uint64_t field[3] = {0, 0, 0};
  for (uint64_t& f : field) {
    while (p < bytes.size() && (std::isspace(bytes[p]) || bytes[p] == '#')) {
      if (bytes[p] == '#') {
        while (p < bytes.size() && bytes[p] != '\n') ++p;
      } else {
        ++p;
      }
    }
    if (p >= bytes.size() || !std::isdigit(bytes[p])) return corrupt("PPM header is damaged");
    while (p < bytes.size() && std::isdigit(bytes[p]) && f < (1u << 30))
      f = f * 10 + (bytes[p++] - '0');
  }
  if (p >= bytes.size() || !std::isspace(bytes[p])) return corrupt("PPM header is damaged");
  ++p;
  if (field[2] != 255) return make_error(ErrorCode::kUnsupported, "PPM with maxval other than 255");
  Header h{Format::kPpm};
  h.width = field[0];
  h.height = field[1];
  MLM_TRY(check_size(h, limits));
  const uint64_t n = h.width * h.height * 3;
  if (bytes.size() - p < n) return corrupt("truncated PPM");
  RgbImage out;
  out.width = static_cast<int>(h.width);
  out.height = static_cast<int>(h.height);
  out.pixels.assign(bytes.begin() + static_cast<std::ptrdiff_t>(p),
                    bytes.begin() + static_cast<std::ptrdiff_t>(p + n));
  return out;
}
#endif

Result<RgbImage> decode(std::span<const uint8_t> bytes, const ImageLimits& limits) {
  if (limits.max_file_bytes >= 0 && bytes.size() > static_cast<uint64_t>(limits.max_file_bytes)) {
    return make_error(ErrorCode::kLimitExceeded,
                      std::to_string(bytes.size()) + " bytes is over the limit of " +
                          std::to_string(limits.max_file_bytes) + " bytes");
  }
  if (bytes.size() > static_cast<size_t>(std::numeric_limits<int>::max())) {
    return make_error(ErrorCode::kLimitExceeded, "pictures over 2 GiB are not supported");
  }
#ifndef MLMAMBA_WITH_OPENCV
  // A build without OpenCV (the engine's tests on a machine that lacks it) reads only pictures
  // already decoded elsewhere, as binary PPM.
  if (bytes.size() >= 2 && bytes[0] == 'P' && bytes[1] == '6') return decode_ppm(bytes, limits);
  return make_error(ErrorCode::kUnsupported,
                    "this engine was built without picture decoding (no OpenCV): only binary PPM "
                    "(P6) pictures are read");
#else
  MLM_ASSIGN_OR_RETURN(const Header header, probe(bytes, limits));

  cv::Mat decoded;
  try {
    const cv::Mat buf(1, static_cast<int>(bytes.size()), CV_8U,
                      const_cast<uint8_t*>(bytes.data()));  // imdecode only reads it
    // IMREAD_COLOR: 8-bit BGR whatever the file holds (grey expanded, alpha stripped without
    // compositing, 16-bit PNG reduced to the high byte as PIL does; 16-bit TIFF is rounded), and
    // the EXIF orientation applied, which IMREAD_UNCHANGED would skip.
    //
    // Failures inside the decoders are reported on stderr by libpng, libjpeg and OpenCV 4.6 itself
    // (std::cerr, so its log level does not reach them). The checks in probe() catch the usual
    // causes first (truncation, PNG CRC damage), so those lines appear only for files damaged in
    // ways only a full decode notices.
    decoded = cv::imdecode(buf, cv::IMREAD_COLOR);
  } catch (const cv::Exception& e) {
    return corrupt(std::string(format_name(header.format)) +
                   " data could not be decoded: " + e.msg);
  } catch (const std::bad_alloc&) {
    return make_error(ErrorCode::kOutOfMemory, "out of memory while decoding the picture");
  }
  if (decoded.empty()) {
    if (header.format == Format::kGif) {
      return make_error(ErrorCode::kUnsupported, "GIF pictures are not supported");
    }
    return corrupt(std::string(format_name(header.format)) +
                   " data could not be decoded (damaged, or a variant the decoder lacks)");
  }
  const bool upright = static_cast<uint64_t>(decoded.cols) == header.width &&
                       static_cast<uint64_t>(decoded.rows) == header.height;
  const bool turned = static_cast<uint64_t>(decoded.cols) == header.height &&
                      static_cast<uint64_t>(decoded.rows) == header.width;
  if (decoded.type() != CV_8UC3 || !(upright || turned)) {
    return corrupt(std::string(format_name(header.format)) + " decoder returned " +
                   std::to_string(decoded.cols) + "x" + std::to_string(decoded.rows) +
                   " pixels for a header of " + std::to_string(header.width) + "x" +
                   std::to_string(header.height));
  }

  RgbImage out;
  out.width = decoded.cols;
  out.height = decoded.rows;
  out.pixels.resize(static_cast<size_t>(out.width) * out.height * 3);
  for (int y = 0; y < out.height; ++y) {
    const uint8_t* src = decoded.ptr<uint8_t>(y);
    uint8_t* dst = out.pixels.data() + static_cast<size_t>(y) * out.width * 3;
    for (int x = 0; x < out.width; ++x) {
      dst[3 * x + 0] = src[3 * x + 2];
      dst[3 * x + 1] = src[3 * x + 1];
      dst[3 * x + 2] = src[3 * x + 0];
    }
  }
  return out;
#endif
}

// ---------------------------------------------------------------------------------------------
// Resampling with PIL's arithmetic (Pillow, libImaging/Resample.c, 8 bits per channel).
// ---------------------------------------------------------------------------------------------

// Two spare bits over 8 bits of pixel, as PIL: the filter has negative lobes, so partial sums can
// leave [0, 255] in either direction.
constexpr int kPrecisionBits = 32 - 8 - 2;
constexpr int32_t kHalf = 1 << (kPrecisionBits - 1);

// Keys' cubic with a = -0.5, written in the same operation order as PIL so that the double
// coefficients (and hence their fixed-point roundings) come out bit for bit the same. That also
// needs the multiply-adds left unfused, which GCC guarantees in ISO mode (-std=c++20).
double bicubic(double x) {
  constexpr double a = -0.5;
  if (x < 0.0) x = -x;
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
  if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
  return 0.0;
}

uint8_t clip8(int32_t v) {
  v >>= kPrecisionBits;  // arithmetic shift: floors, as PIL's lookup index does
  return static_cast<uint8_t>(std::clamp(v, 0, 255));
}

// Fixed-point taps of one axis, for the output positions [first, first + count) of a resize
// from in_size to out_size (both may be huge for resize-crop; only the kept window is built).
struct Taps {
  std::vector<int64_t> start;  // first input index of each output position
  std::vector<int32_t> n;      // number of taps
  std::vector<size_t> offset;  // into k
  std::vector<int32_t> k;
};

Taps make_taps(int64_t in_size, int64_t out_size, int64_t first, int64_t count) {
  Taps t;
  t.start.resize(count);
  t.n.resize(count);
  t.offset.resize(count);
  const double scale = static_cast<double>(in_size) / static_cast<double>(out_size);
  const double filterscale = std::max(scale, 1.0);
  const double support = 2.0 * filterscale;  // bicubic support 2, widened when downscaling
  const double inv = 1.0 / filterscale;
  std::vector<double> w;
  for (int64_t i = 0; i < count; ++i) {
    const int64_t xx = first + i;
    const double center = (static_cast<double>(xx) + 0.5) * scale;
    // Truncation toward zero, as PIL's (int) casts; both ends are clamped right after.
    int64_t xmin = static_cast<int64_t>(center - support + 0.5);
    xmin = std::max<int64_t>(xmin, 0);
    int64_t xmax = static_cast<int64_t>(center + support + 0.5);
    xmax = std::min(xmax, in_size);
    const int64_t n = std::max<int64_t>(xmax - xmin, 0);
    w.assign(static_cast<size_t>(n), 0.0);
    double ww = 0.0;
    for (int64_t x = 0; x < n; ++x) {
      w[x] = bicubic((static_cast<double>(x + xmin) - center + 0.5) * inv);
      ww += w[x];
    }
    t.start[i] = xmin;
    t.n[i] = static_cast<int32_t>(n);
    t.offset[i] = t.k.size();
    for (int64_t x = 0; x < n; ++x) {
      const double v = ww != 0.0 ? w[x] / ww : w[x];
      const double scaled = v * (1 << kPrecisionBits);
      // PIL rounds half away from zero here.
      t.k.push_back(static_cast<int32_t>(v < 0 ? -0.5 + scaled : 0.5 + scaled));
    }
  }
  return t;
}

// A picture placed on a canvas of one colour: the letterbox's padded square without building it
// (a 1x20000 strip would otherwise become a 20000x20000 canvas). Without padding the canvas is the
// picture itself.
struct Canvas {
  const RgbImage* img;
  int64_t width, height;  // canvas size
  int64_t left, top;      // where the picture sits
  uint8_t fill[3];
};

// What PIL's resize(canvas, out_w x out_h) followed by crop(x0, y0, x0 + w, y0 + h) gives, computed
// for the kept window only. Horizontal pass first, each intermediate row rounded and clipped to 8
// bits, then the vertical pass: PIL's order, which the rounding makes observable.
RgbImage resample(const Canvas& c, int64_t out_w, int64_t out_h, int64_t x0, int64_t y0, int w,
                  int h) {
  const RgbImage& img = *c.img;
  const int64_t pic_w = img.width;
  const int64_t pic_h = img.height;
  const bool need_h = out_w != c.width;
  const bool need_v = out_h != c.height;
  const size_t row_len = static_cast<size_t>(w) * 3;

  Taps tx;
  std::vector<int32_t> kpad_x;  // per output column: sum of the taps that fall on the fill colour
  std::vector<int32_t> kall_x;
  if (need_h) {
    tx = make_taps(c.width, out_w, x0, w);
    kpad_x.assign(w, 0);
    kall_x.assign(w, 0);
    for (int j = 0; j < w; ++j) {
      for (int32_t t = 0; t < tx.n[j]; ++t) {
        const int64_t x = tx.start[j] + t;
        const int32_t k = tx.k[tx.offset[j] + t];
        kall_x[j] += k;
        if (x < c.left || x >= c.left + pic_w) kpad_x[j] += k;
      }
    }
  }

  // Intermediate row for a canvas row that holds picture pixels (picture row py).
  auto picture_row = [&](int64_t py, uint8_t* dst) {
    const uint8_t* src = img.pixels.data() + static_cast<size_t>(py) * pic_w * 3;
    if (!need_h) {
      for (int j = 0; j < w; ++j) {
        const int64_t x = x0 + j - c.left;
        const uint8_t* p = (x >= 0 && x < pic_w) ? src + x * 3 : c.fill;
        std::memcpy(dst + j * 3, p, 3);
      }
      return;
    }
    for (int j = 0; j < w; ++j) {
      const int32_t* k = tx.k.data() + tx.offset[j];
      const int64_t s = tx.start[j];
      const int64_t lo = std::max(s, c.left);
      const int64_t hi = std::min(s + tx.n[j], c.left + pic_w);
      int32_t a0 = kHalf + c.fill[0] * kpad_x[j];
      int32_t a1 = kHalf + c.fill[1] * kpad_x[j];
      int32_t a2 = kHalf + c.fill[2] * kpad_x[j];
      for (int64_t x = lo; x < hi; ++x) {
        const int32_t kk = k[x - s];
        const uint8_t* p = src + (x - c.left) * 3;
        a0 += p[0] * kk;
        a1 += p[1] * kk;
        a2 += p[2] * kk;
      }
      dst[j * 3 + 0] = clip8(a0);
      dst[j * 3 + 1] = clip8(a1);
      dst[j * 3 + 2] = clip8(a2);
    }
  };

  // Intermediate row for a canvas row of pure fill: the same for every such row.
  std::vector<uint8_t> fill_row(row_len);
  for (int j = 0; j < w; ++j) {
    for (int ch = 0; ch < 3; ++ch) {
      fill_row[j * 3 + ch] = need_h ? clip8(kHalf + c.fill[ch] * kall_x[j]) : c.fill[ch];
    }
  }

  RgbImage out;
  out.width = w;
  out.height = h;
  out.pixels.resize(row_len * h);

  if (!need_v) {
    for (int i = 0; i < h; ++i) {
      const int64_t py = y0 + i - c.top;
      uint8_t* dst = out.pixels.data() + i * row_len;
      if (py >= 0 && py < pic_h) {
        picture_row(py, dst);
      } else {
        std::memcpy(dst, fill_row.data(), row_len);
      }
    }
    return out;
  }

  const Taps ty = make_taps(c.height, out_h, y0, h);
  // The vertical windows only move forward, so the intermediate picture rows live in a ring of
  // one window: memory stays at (taps x output width) whatever the picture's height.
  int32_t max_taps = 1;
  for (int i = 0; i < h; ++i) max_taps = std::max(max_taps, ty.n[i]);
  const int64_t ring_rows = std::min<int64_t>(max_taps, pic_h);
  std::vector<uint8_t> ring(static_cast<size_t>(ring_rows) * row_len);
  int64_t next = 0;  // next picture row to compute
  std::vector<int32_t> acc(row_len);

  for (int i = 0; i < h; ++i) {
    const int32_t* k = ty.k.data() + ty.offset[i];
    const int64_t s = ty.start[i];
    const int64_t lo = std::max(s, c.top);
    const int64_t hi = std::min(s + ty.n[i], c.top + pic_h);
    int32_t kpad = 0;
    for (int32_t t = 0; t < ty.n[i]; ++t) {
      const int64_t y = s + t;
      if (y < c.top || y >= c.top + pic_h) kpad += k[t];
    }
    for (size_t q = 0; q < row_len; ++q) acc[q] = kHalf + fill_row[q] * kpad;
    if (lo < hi) {
      next = std::max(next, lo - c.top);
      for (; next < hi - c.top; ++next) {
        picture_row(next, ring.data() + static_cast<size_t>(next % ring_rows) * row_len);
      }
      for (int64_t y = lo; y < hi; ++y) {
        const int32_t kk = k[y - s];
        const uint8_t* row = ring.data() + static_cast<size_t>((y - c.top) % ring_rows) * row_len;
        for (size_t q = 0; q < row_len; ++q) acc[q] += row[q] * kk;
      }
    }
    uint8_t* dst = out.pixels.data() + i * row_len;
    for (size_t q = 0; q < row_len; ++q) dst[q] = clip8(acc[q]);
  }
  return out;
}

bool valid(const RgbImage& in) {
  return in.width > 0 && in.height > 0 &&
         in.pixels.size() == static_cast<size_t>(in.width) * in.height * 3;
}

// Python's round() on a half-integer picks the even neighbour; d >= 0.
int64_t round_half_even_div2(int64_t d) {
  int64_t q = d / 2;
  if (d % 2 == 1 && q % 2 == 1) ++q;
  return q;
}

// torchvision's Resize(size) (shorter side to size, the longer one scaled and truncated) followed
// by CenterCrop(size), on a canvas.
RgbImage resize_crop(const Canvas& c, int size) {
  const bool wide = c.width > c.height;
  const int64_t short_side = wide ? c.height : c.width;
  const int64_t long_side = wide ? c.width : c.height;
  // Python: int(size * long / short), an exact product then a correctly rounded division; both
  // are exact in doubles here (the product is far below 2^53).
  const auto new_long = static_cast<int64_t>(static_cast<double>(int64_t{size} * long_side) /
                                             static_cast<double>(short_side));
  const int64_t new_w = wide ? new_long : size;
  const int64_t new_h = wide ? size : new_long;
  return resample(c, new_w, new_h, round_half_even_div2(new_w - size),
                  round_half_even_div2(new_h - size), size, size);
}

}  // namespace

Result<RgbImage> decode_image_bytes(std::span<const uint8_t> bytes, const ImageLimits& limits) {
  return decode(bytes, limits);
}

Result<RgbImage> decode_image_file(const fs::path& path, const ImageLimits& limits) {
  const std::string name = path.string();
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    const int err = errno;
    const ErrorCode code = err == ENOENT || err == ENOTDIR ? ErrorCode::kNotFound : ErrorCode::kIo;
    return make_error(code, name + ": cannot open: " + std::strerror(err));
  }
  if (!S_ISREG(st.st_mode)) {
    return make_error(ErrorCode::kInvalidArgument, name + ": not a regular file");
  }
  const auto size = static_cast<uint64_t>(st.st_size);
  if (limits.max_file_bytes >= 0 && size > static_cast<uint64_t>(limits.max_file_bytes)) {
    return make_error(ErrorCode::kLimitExceeded,
                      name + ": " + std::to_string(size) + " bytes is over the limit of " +
                          std::to_string(limits.max_file_bytes) + " bytes");
  }
  std::vector<uint8_t> bytes(size);
  std::ifstream f(path, std::ios::binary);
  if (!f) {
    return make_error(ErrorCode::kIo, name + ": cannot open: " + std::strerror(errno));
  }
  f.read(reinterpret_cast<char*>(bytes.data()), static_cast<std::streamsize>(size));
  if (static_cast<uint64_t>(f.gcount()) != size) {
    return make_error(ErrorCode::kIo, name + ": read " + std::to_string(f.gcount()) + " of " +
                                          std::to_string(size) + " bytes");
  }
  auto r = decode(bytes, limits);
  if (!r.ok()) return make_error(r.error().code, name + ": " + r.error().message);
  return r;
}

RgbImage resize_bicubic_antialias(const RgbImage& in, int out_width, int out_height) {
  // A malformed input or an empty target has no meaningful result; callers get an empty picture.
  if (!valid(in) || out_width <= 0 || out_height <= 0) return {};
  const Canvas c{&in, in.width, in.height, 0, 0, {0, 0, 0}};
  return resample(c, out_width, out_height, 0, 0, out_width, out_height);
}

Result<ResizeMode> parse_resize_mode(const std::string& name) {
  if (name == "resize-naive") return ResizeMode::kNaive;
  if (name == "letterbox") return ResizeMode::kLetterbox;
  if (name == "resize-crop") return ResizeMode::kResizeCrop;
  return make_error(
      ErrorCode::kUnsupported,
      "image resize mode \"" + name + "\" is not one of resize-naive, letterbox, resize-crop");
}

RgbImage to_square(const RgbImage& in, int size, ResizeMode mode, const uint8_t fill[3]) {
  if (!valid(in) || size <= 0) return {};
  switch (mode) {
    case ResizeMode::kNaive:
      return resize_bicubic_antialias(in, size, size);
    case ResizeMode::kResizeCrop:
      return resize_crop(Canvas{&in, in.width, in.height, 0, 0, {0, 0, 0}}, size);
    case ResizeMode::kLetterbox: {
      // Prismatic's LetterboxPad: int((max - side) / 2) on BOTH sides, so an odd difference leaves
      // the canvas one pixel short of square; the encoder's Resize + CenterCrop then absorbs it.
      const int64_t m = std::max(in.width, in.height);
      const int64_t pad_x = (m - in.width) / 2;
      const int64_t pad_y = (m - in.height) / 2;
      const Canvas c{&in,   in.width + 2 * pad_x,       in.height + 2 * pad_y, pad_x,
                     pad_y, {fill[0], fill[1], fill[2]}};
      return resize_crop(c, size);
    }
  }
  return {};
}

void normalize_chw(const RgbImage& in, const float mean[3], const float std[3], float* out) {
  // torchvision's ToTensor (x / 255 in float32) then Normalize ((x - mean) / std in float32),
  // with the same float operations, tabulated per channel.
  const size_t plane = static_cast<size_t>(in.width) * in.height;
  for (int ch = 0; ch < 3; ++ch) {
    float lut[256];
    for (int v = 0; v < 256; ++v) {
      lut[v] = (static_cast<float>(v) / 255.0f - mean[ch]) / std[ch];
    }
    float* dst = out + ch * plane;
    const uint8_t* src = in.pixels.data() + ch;
    for (size_t i = 0; i < plane; ++i) dst[i] = lut[src[3 * i]];
  }
}

}  // namespace mlmamba
