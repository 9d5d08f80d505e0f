// Byte-level BPE as the Hugging Face `tokenizers` library runs it for GPT-2 / GPT-NeoX files:
//   1. added tokens with normalized=false are cut out of the raw text (leftmost-longest);
//   2. each remaining piece is normalised, then added tokens with normalized=true are cut out;
//   3. each remaining piece gets the ByteLevel pre-tokenizer (optional prefix space, GPT-2 split);
//   4. each word is mapped byte -> printable character and merged by BPE rank.
// Encoding equals the library's encode(text, add_special_tokens=False): the engine's prompt format
// adds no BOS, so a post-processor is not applied.
#include "tokenizer.h"

#include <unicode/normalizer2.h>
#include <unicode/uchar.h>
#include <unicode/utf8.h>

#include <algorithm>
#include <array>
#include <fstream>
#include <mutex>
#include <queue>
#include <shared_mutex>
#include <unordered_map>
#include <utility>

#include <nlohmann/json.hpp>

namespace mlmamba {

using json = nlohmann::json;

namespace {

// Ids index a dense table of token bytes; a file claiming larger ids is lying, not a real vocab.
constexpr int64_t kMaxTokenId = (1 << 24) - 1;
// The library caches words below this many bytes, up to this many entries; longer words are rare
// and would only bloat the cache.
constexpr size_t kCacheMaxWordBytes = 256;
constexpr size_t kCacheCapacity = 10000;
// No real tokenizer.json comes near this; refusing keeps a wrong path from eating memory.
constexpr uintmax_t kMaxFileBytes = 512ull << 20;

// ---------------------------------------------------------------------------------------------
// UTF-8

// Length of the valid UTF-8 sequence at s[i], or 0 if the bytes there are not one. Follows the
// Unicode well-formedness table: no overlongs, no surrogates, nothing above U+10FFFF.
size_t valid_sequence_length(std::string_view s, size_t i) {
  const auto byte = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char b0 = byte(i);
  const size_t left = s.size() - i;
  if (b0 < 0x80) return 1;
  if (b0 < 0xC2) return 0;
  const auto cont = [&](size_t k) { return k < left && (byte(i + k) & 0xC0) == 0x80; };
  if (b0 < 0xE0) return cont(1) ? 2 : 0;
  if (b0 < 0xF0) {
    if (left < 2) return 0;
    const unsigned char b1 = byte(i + 1);
    if (b0 == 0xE0 && b1 < 0xA0) return 0;
    if (b0 == 0xED && b1 > 0x9F) return 0;
    return cont(1) && cont(2) ? 3 : 0;
  }
  if (b0 < 0xF5) {
    if (left < 2) return 0;
    const unsigned char b1 = byte(i + 1);
    if (b0 == 0xF0 && b1 < 0x90) return 0;
    if (b0 == 0xF4 && b1 > 0x8F) return 0;
    return cont(1) && cont(2) && cont(3) ? 4 : 0;
  }
  return 0;
}

bool is_valid_utf8(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    const size_t n = valid_sequence_length(s, i);
    if (n == 0) return false;
    i += n;
  }
  return true;
}

// How many bytes, starting with the lead byte s[i], form the longest prefix of some well-formed
// sequence (at least 1). This is the "maximal subpart" that becomes one U+FFFD, which is what
// Rust's String::from_utf8_lossy (used by the library's ByteLevel decoder) does.
size_t maximal_subpart_length(std::string_view s, size_t i) {
  const unsigned char b0 = static_cast<unsigned char>(s[i]);
  size_t expected = 0;
  unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the second byte
  if (b0 >= 0xC2 && b0 < 0xE0) {
    expected = 2;
  } else if (b0 >= 0xE0 && b0 < 0xF0) {
    expected = 3;
    if (b0 == 0xE0) lo = 0xA0;
    if (b0 == 0xED) hi = 0x9F;
  } else if (b0 >= 0xF0 && b0 < 0xF5) {
    expected = 4;
    if (b0 == 0xF0) lo = 0x90;
    if (b0 == 0xF4) hi = 0x8F;
  } else {
    return 1;
  }
  size_t n = 1;
  while (n < expected && i + n < s.size()) {
    const unsigned char b = static_cast<unsigned char>(s[i + n]);
    const bool ok = n == 1 ? (b >= lo && b <= hi) : (b & 0xC0) == 0x80;
    if (!ok) break;
    ++n;
  }
  return n;
}

constexpr std::string_view kReplacementCharacter = "\xEF\xBF\xBD";

std::string utf8_lossy(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  for (size_t i = 0; i < bytes.size();) {
    const size_t n = valid_sequence_length(bytes, i);
    if (n > 0) {
      out.append(bytes.substr(i, n));
      i += n;
    } else {
      out.append(kReplacementCharacter);
      i += maximal_subpart_length(bytes, i);
    }
  }
  return out;
}

// Bytes from the end of `bytes` that are an unfinished but so far well-formed character, which a
// later token may still complete (0 if the text does not end inside a character).
size_t unfinished_tail_length(std::string_view bytes) {
  const size_t n = bytes.size();
  for (size_t back = 1; back <= 3 && back <= n; ++back) {
    const size_t start = n - back;
    const unsigned char b = static_cast<unsigned char>(bytes[start]);
    if ((b & 0xC0) == 0x80) continue;  // continuation byte: the lead is further back
    const size_t subpart = maximal_subpart_length(bytes, start);
    const size_t complete = valid_sequence_length(bytes, start);
    return complete == 0 && subpart == back && b >= 0xC2 && b < 0xF5 ? back : 0;
  }
  return 0;
}

// The code point at s[i] of text already known to be valid UTF-8.
char32_t code_point_at(std::string_view s, size_t i, size_t* length) {
  UChar32 c = 0;
  int32_t offset = static_cast<int32_t>(i);
  U8_NEXT_UNSAFE(s.data(), offset, c);
  *length = static_cast<size_t>(offset) - i;
  return static_cast<char32_t>(c);
}

// The code point that ends at s[end] (exclusive), for valid UTF-8 and end > 0.
char32_t code_point_before(std::string_view s, size_t end) {
  size_t start = end - 1;
  while (start > 0 && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80) --start;
  size_t length = 0;
  return code_point_at(s, start, &length);
}

void append_utf8(std::string& out, char32_t c) {
  char buf[4];
  int32_t n = 0;
  U8_APPEND_UNSAFE(buf, n, static_cast<UChar32>(c));
  out.append(buf, static_cast<size_t>(n));
}

// ---------------------------------------------------------------------------------------------
// Character classes of the patterns the library uses

// What \p{L}, \p{N} and \s mean in the library's GPT-2 split pattern (Oniguruma, Unicode): the L*
// and N* general categories and the White_Space property.
enum class CharClass : uint8_t { kLetter, kNumber, kSpace, kOther };

CharClass classify_with_icu(char32_t c) {
  const auto uc = static_cast<UChar32>(c);
  if (u_isUWhiteSpace(uc)) return CharClass::kSpace;
  const uint32_t mask = U_GET_GC_MASK(uc);
  if (mask & U_GC_L_MASK) return CharClass::kLetter;
  if (mask & U_GC_N_MASK) return CharClass::kNumber;
  return CharClass::kOther;
}

const std::array<CharClass, 128>& ascii_classes() {
  static const std::array<CharClass, 128> table = [] {
    std::array<CharClass, 128> t{};
    for (char32_t c = 0; c < 128; ++c) t[c] = classify_with_icu(c);
    return t;
  }();
  return table;
}

CharClass classify(char32_t c) {
  return c < 128 ? ascii_classes()[c] : classify_with_icu(c);
}

// \s of the Rust regex crate (White_Space), used by the library for lstrip/rstrip.
bool is_regex_space(char32_t c) {
  return u_isUWhiteSpace(static_cast<UChar32>(c));
}

// \w of the Rust regex crate (UTS #18 word characters), used by the library for single_word.
bool is_regex_word(char32_t c) {
  const auto uc = static_cast<UChar32>(c);
  if (u_hasBinaryProperty(uc, UCHAR_ALPHABETIC)) return true;
  if (U_GET_GC_MASK(uc) & (U_GC_M_MASK | U_GC_ND_MASK | U_GC_PC_MASK)) return true;
  return u_hasBinaryProperty(uc, UCHAR_JOIN_CONTROL);
}

// Byte ranges of the words of 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|
// \s+(?!\S)|\s+ as a leftmost-first regex engine finds them, one after another. The pattern always
// consumes at least one character, so words tile the text.
template <class Emit>
void split_gpt2_words(std::string_view s, Emit&& emit) {
  const size_t n = s.size();
  size_t i = 0;
  while (i < n) {
    size_t len0 = 0;
    const char32_t c0 = code_point_at(s, i, &len0);
    size_t end = 0;
    if (c0 == '\'' && i + 1 < n) {
      const char a = s[i + 1];
      const char b = i + 2 < n ? s[i + 2] : '\0';
      if (a == 's' || a == 't' || a == 'm' || a == 'd') {
        end = i + 2;
      } else if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) {
        end = i + 3;
      }
    }
    if (end == 0) {
      // " ?X+": the optional space belongs to a following letter, number or other run.
      size_t run_start = i;
      size_t run_len = len0;
      CharClass cls = classify(c0);
      if (c0 == ' ' && i + len0 < n) {
        size_t len1 = 0;
        const char32_t c1 = code_point_at(s, i + len0, &len1);
        const CharClass cls1 = classify(c1);
        if (cls1 != CharClass::kSpace) {
          run_start = i + len0;
          run_len = len1;
          cls = cls1;
        }
      }
      if (cls != CharClass::kSpace) {
        end = run_start + run_len;
        while (end < n) {
          size_t len = 0;
          const char32_t c = code_point_at(s, end, &len);
          if (classify(c) != cls) break;
          end += len;
        }
      } else {
        // \s+(?!\S) backtracks to leave the last space for the word after it; a single space
        // before a non-space falls through to \s+.
        size_t run_end = i;
        size_t last_start = i;
        while (run_end < n) {
          size_t len = 0;
          const char32_t c = code_point_at(s, run_end, &len);
          if (classify(c) != CharClass::kSpace) break;
          last_start = run_end;
          run_end += len;
        }
        if (run_end == n || last_start == i) {
          end = run_end;
        } else {
          end = last_start;
        }
      }
    }
    emit(i, end);
    i = end;
  }
}

// ---------------------------------------------------------------------------------------------
// Byte-level alphabet

// GPT-2's reversible byte -> character map: printable Latin-1 bytes stand for themselves, the
// others are shifted to U+0100 onwards in byte order, so every token is printable text.
struct ByteAlphabet {
  std::array<std::string, 256> byte_to_text;
  std::unordered_map<char32_t, uint8_t> char_to_byte;

  ByteAlphabet() {
    const auto printable = [](int b) {
      return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    };
    int shifted = 0;
    for (int b = 0; b < 256; ++b) {
      const char32_t c = printable(b) ? static_cast<char32_t>(b) : 256 + shifted++;
      append_utf8(byte_to_text[b], c);
      char_to_byte.emplace(c, static_cast<uint8_t>(b));
    }
  }
};

const ByteAlphabet& byte_alphabet() {
  static const ByteAlphabet alphabet;
  return alphabet;
}

// The ByteLevel decoder: each character back to its byte; a token with any character outside the
// alphabet (an added token such as a run of spaces) is taken as its own UTF-8 text.
std::string byte_level_decode(std::string_view token) {
  const ByteAlphabet& alphabet = byte_alphabet();
  std::string out;
  out.reserve(token.size());
  for (size_t i = 0; i < token.size();) {
    size_t len = 0;
    const char32_t c = code_point_at(token, i, &len);
    const auto it = alphabet.char_to_byte.find(c);
    if (it == alphabet.char_to_byte.end()) return std::string(token);
    out.push_back(static_cast<char>(it->second));
    i += len;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Added tokens

struct AddedToken {
  std::string content;
  std::string pattern;  // what is searched for: content, normalised when `normalized` is set
  int32_t id = -1;
  bool single_word = false;
  bool lstrip = false;
  bool rstrip = false;
  bool normalized = false;
  bool special = false;
};

struct Segment {
  std::string_view text;
  int32_t id;  // the added token this segment is, or -1 for text still to be tokenised
};

// Leftmost-longest search over a handful of patterns. Added-token lists are short (NeoX has a few
// dozen), so a bucket per first byte, longest pattern first, beats building an automaton.
class AddedTokenMatcher {
 public:
  void add(const AddedToken* token) {
    if (token->pattern.empty()) return;
    auto& bucket = buckets_[static_cast<unsigned char>(token->pattern[0])];
    bucket.push_back(token);
    std::stable_sort(bucket.begin(), bucket.end(), [](const AddedToken* a, const AddedToken* b) {
      return a->pattern.size() > b->pattern.size();
    });
    any_ = true;
  }

  // Appends the split of `s` to `out` exactly as the library's AddedVocabulary::find_matches does,
  // including how single_word rejects a match (the text it covered stays unmatched) and how
  // lstrip/rstrip widen a match over White_Space.
  void split(std::string_view s, std::vector<Segment>& out) const {
    if (!any_) {
      out.push_back({s, -1});
      return;
    }
    size_t start_offset = 0;
    size_t pos = 0;
    while (pos < s.size()) {
      const AddedToken* match = longest_at(s, pos);
      if (match == nullptr) {
        ++pos;
        continue;
      }
      size_t start = pos;
      size_t stop = pos + match->pattern.size();
      pos = stop;
      if (match->single_word) {
        const bool word_before = start > 0 && is_regex_word(code_point_before(s, start));
        size_t len = 0;
        const bool word_after = stop < s.size() && is_regex_word(code_point_at(s, stop, &len));
        if (word_before || word_after) continue;
      }
      if (match->lstrip) {
        size_t left = start;
        while (left > 0) {
          size_t back = left - 1;
          while (back > 0 && (static_cast<unsigned char>(s[back]) & 0xC0) == 0x80) --back;
          size_t len = 0;
          if (!is_regex_space(code_point_at(s, back, &len))) break;
          left = back;
        }
        // Spaces a previous match already took (its rstrip) stay with it.
        start = std::max(left, start_offset);
      }
      if (match->rstrip) {
        while (stop < s.size()) {
          size_t len = 0;
          const char32_t c = code_point_at(s, stop, &len);
          if (!is_regex_space(c)) break;
          stop += len;
        }
      }
      if (start_offset < start) out.push_back({s.substr(start_offset, start - start_offset), -1});
      out.push_back({s.substr(start, stop - start), match->id});
      start_offset = stop;
    }
    if (start_offset < s.size()) out.push_back({s.substr(start_offset), -1});
  }

 private:
  const AddedToken* longest_at(std::string_view s, size_t pos) const {
    for (const AddedToken* token : buckets_[static_cast<unsigned char>(s[pos])]) {
      const std::string& p = token->pattern;
      if (s.size() - pos >= p.size() && s.compare(pos, p.size(), p) == 0) return token;
    }
    return nullptr;
  }

  std::array<std::vector<const AddedToken*>, 256> buckets_;
  bool any_ = false;
};

// ---------------------------------------------------------------------------------------------
// Errors

Error corrupt(const std::string& source, const std::string& what) {
  return make_error(ErrorCode::kCorruptFile, source + ": " + what);
}

Error unsupported(const std::string& source, const std::string& what) {
  return make_error(ErrorCode::kUnsupported, source + ": " + what);
}

std::string type_of(const json& j) {
  if (j.is_object() && j.contains("type") && j["type"].is_string()) {
    return j["type"].get<std::string>();
  }
  return {};
}

}  // namespace

// ---------------------------------------------------------------------------------------------

struct Tokenizer::Impl {
  std::string source;  // file name (or "tokenizer.json") for error messages

  std::vector<const icu::Normalizer2*> normalizers;  // applied in order; empty: none
  bool add_prefix_space = false;
  bool use_regex = true;

  std::unordered_map<std::string, int32_t> vocab;
  std::unordered_map<uint64_t, std::pair<uint32_t, int32_t>> merges;  // (left, right) -> rank, id
  std::array<int32_t, 256> byte_ids{};  // id of each single-byte token, -1 if the vocab lacks it
  int32_t unk_id = -1;
  bool fuse_unk = false;
  bool ignore_merges = false;

  std::vector<AddedToken> added;  // stable storage; matchers point into it
  std::unordered_map<std::string, int32_t> added_ids;
  AddedTokenMatcher raw_matcher;
  AddedTokenMatcher normalized_matcher;

  std::vector<std::string> id_bytes;  // decoded bytes of every id; empty for unused ids

  mutable std::shared_mutex cache_mutex;
  mutable std::unordered_map<std::string, std::vector<int32_t>> cache;

  static uint64_t pair_key(int32_t a, int32_t b) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
  }

  Result<std::string> normalize(std::string_view text) const {
    std::string current(text);
    for (const icu::Normalizer2* n : normalizers) {
      UErrorCode status = U_ZERO_ERROR;
      const icu::StringPiece piece(current.data(), static_cast<int32_t>(current.size()));
      if (n->isNormalizedUTF8(piece, status) && U_SUCCESS(status)) continue;
      status = U_ZERO_ERROR;
      std::string next;
      icu::StringByteSink<std::string> sink(&next, static_cast<int32_t>(current.size()));
      n->normalizeUTF8(0, piece, sink, nullptr, status);
      if (U_FAILURE(status)) {
        return make_error(ErrorCode::kInvalidArgument,
                          std::string("text could not be normalised: ") + u_errorName(status));
      }
      current = std::move(next);
    }
    return current;
  }

  static Result<std::unique_ptr<Impl>> parse(std::string_view json_text, const std::string& source);
  void bpe(std::string_view word, std::vector<int32_t>& out) const;
  void bpe_uncached(std::string_view word, std::vector<int32_t>& out) const;
  void encode_piece(std::string_view piece, std::vector<int32_t>& out) const;
};

void Tokenizer::Impl::bpe_uncached(std::string_view word, std::vector<int32_t>& out) const {
  // One symbol per byte (= one character of the byte-level text), linked so merges are O(1).
  struct Symbol {
    int32_t id;
    int32_t prev;
    int32_t next;
    bool alive;
  };
  std::vector<Symbol> symbols;
  symbols.reserve(word.size());
  int32_t pending_unk = -1;
  const auto push = [&](int32_t id) {
    const auto index = static_cast<int32_t>(symbols.size());
    symbols.push_back({id, index - 1, index + 1, true});
  };
  for (const char ch : word) {
    const int32_t id = byte_ids[static_cast<unsigned char>(ch)];
    if (id >= 0) {
      if (pending_unk >= 0) push(pending_unk);
      pending_unk = -1;
      push(id);
    } else if (unk_id >= 0) {
      if (pending_unk >= 0 && !fuse_unk) push(pending_unk);
      pending_unk = unk_id;
    }
    // Without an unknown token the library silently drops a byte the vocabulary lacks.
  }
  if (pending_unk >= 0) push(pending_unk);
  if (symbols.empty()) return;
  symbols.back().next = -1;

  // Lowest rank first, leftmost first among equal ranks: the library's merge order.
  struct Candidate {
    uint32_t rank;
    int32_t pos;
    int32_t new_id;
    bool operator>(const Candidate& o) const {
      return rank != o.rank ? rank > o.rank : pos > o.pos;
    }
  };
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>> queue;
  const auto consider = [&](int32_t pos) {
    const int32_t next = symbols[pos].next;
    if (next < 0) return;
    const auto it = merges.find(pair_key(symbols[pos].id, symbols[next].id));
    if (it != merges.end()) queue.push({it->second.first, pos, it->second.second});
  };
  for (int32_t pos = 0; pos + 1 < static_cast<int32_t>(symbols.size()); ++pos) consider(pos);

  while (!queue.empty()) {
    const Candidate top = queue.top();
    queue.pop();
    Symbol& left = symbols[top.pos];
    if (!left.alive || left.next < 0) continue;
    // Entries go stale when a neighbour merged since they were queued.
    const auto it = merges.find(pair_key(left.id, symbols[left.next].id));
    if (it == merges.end() || it->second.second != top.new_id) continue;
    Symbol& right = symbols[left.next];
    left.id = top.new_id;
    right.alive = false;
    left.next = right.next;
    if (right.next >= 0) symbols[right.next].prev = top.pos;
    if (left.prev >= 0) consider(left.prev);
    consider(top.pos);
  }
  for (const Symbol& s : symbols) {
    if (s.alive) out.push_back(s.id);
  }
}

void Tokenizer::Impl::bpe(std::string_view word, std::vector<int32_t>& out) const {
  if (word.empty()) return;
  if (ignore_merges) {
    std::string mapped;
    for (const char ch : word)
      mapped += byte_alphabet().byte_to_text[static_cast<unsigned char>(ch)];
    const auto it = vocab.find(mapped);
    if (it != vocab.end()) {
      out.push_back(it->second);
      return;
    }
  }
  const bool cacheable = word.size() < kCacheMaxWordBytes;
  if (cacheable) {
    std::shared_lock lock(cache_mutex);
    const auto it = cache.find(std::string(word));
    if (it != cache.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  const size_t first = out.size();
  bpe_uncached(word, out);
  if (cacheable) {
    std::unique_lock lock(cache_mutex);
    if (cache.size() < kCacheCapacity) {
      cache.try_emplace(std::string(word), out.begin() + static_cast<std::ptrdiff_t>(first),
                        out.end());
    }
  }
}

void Tokenizer::Impl::encode_piece(std::string_view piece, std::vector<int32_t>& out) const {
  std::string prefixed;
  if (add_prefix_space && piece.front() != ' ') {
    prefixed.reserve(piece.size() + 1);
    prefixed.push_back(' ');
    prefixed.append(piece);
    piece = prefixed;
  }
  if (!use_regex) {
    bpe(piece, out);
    return;
  }
  split_gpt2_words(piece,
                   [&](size_t begin, size_t end) { bpe(piece.substr(begin, end - begin), out); });
}

// ---------------------------------------------------------------------------------------------
// Loading

namespace {

Result<std::vector<const icu::Normalizer2*>> parse_normalizer(const json& j,
                                                              const std::string& source) {
  std::vector<const icu::Normalizer2*> steps;
  if (j.is_null()) return steps;
  const std::string type = type_of(j);
  if (type == "Sequence") {
    if (!j.contains("normalizers") || !j["normalizers"].is_array()) {
      return corrupt(source, "normalizer Sequence without a 'normalizers' list");
    }
    for (const json& inner : j["normalizers"]) {
      MLM_ASSIGN_OR_RETURN(auto inner_steps, parse_normalizer(inner, source));
      steps.insert(steps.end(), inner_steps.begin(), inner_steps.end());
    }
    return steps;
  }
  UErrorCode status = U_ZERO_ERROR;
  const icu::Normalizer2* n = nullptr;
  if (type == "NFC") {
    n = icu::Normalizer2::getNFCInstance(status);
  } else if (type == "NFKC") {
    n = icu::Normalizer2::getNFKCInstance(status);
  } else if (type == "NFD") {
    n = icu::Normalizer2::getNFDInstance(status);
  } else if (type == "NFKD") {
    n = icu::Normalizer2::getNFKDInstance(status);
  } else {
    return unsupported(source, "normalizer '" + (type.empty() ? j.dump() : type) +
                                   "' is not supported (only NFC, NFKC, NFD, NFKD and Sequence)");
  }
  if (U_FAILURE(status) || n == nullptr) {
    return make_error(ErrorCode::kBackend,
                      source + ": ICU has no " + type + " data: " + u_errorName(status));
  }
  steps.push_back(n);
  return steps;
}

// Only the ByteLevel pre-tokenizer, alone or as the single member of a Sequence, reproduces the
// GPT-2 family; anything else would silently tokenise differently.
Result<const json*> find_byte_level(const json& j, const char* list_key, const char* what,
                                    const std::string& source) {
  if (j.is_null()) {
    return unsupported(source, std::string("no ") + what + "; a byte-level BPE needs ByteLevel");
  }
  const std::string type = type_of(j);
  if (type == "ByteLevel") return &j;
  if (type == "Sequence" && j.contains(list_key) && j[list_key].is_array() &&
      j[list_key].size() == 1 && type_of(j[list_key][0]) == "ByteLevel") {
    return &j[list_key][0];
  }
  return unsupported(source, std::string(what) + " '" + (type.empty() ? j.dump() : type) +
                                 "' is not supported (only ByteLevel)");
}

// A reference into the document (find_byte_level returns pointers into it), null when absent.
const json& field_or_null(const json& j, const char* key) {
  static const json kNull;
  const auto it = j.find(key);
  return it == j.end() ? kNull : *it;
}

bool bool_field(const json& j, const char* key, bool fallback) {
  if (!j.contains(key) || j[key].is_null()) return fallback;
  return j[key].get<bool>();
}

}  // namespace

Result<Tokenizer> Tokenizer::from_file(const std::filesystem::path& path) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) {
    return make_error(ErrorCode::kNotFound, "tokenizer file not found: " + path.string());
  }
  if (std::filesystem::is_directory(path, ec)) {
    return make_error(ErrorCode::kNotFound,
                      "tokenizer path is a folder, not a tokenizer.json: " + path.string());
  }
  const uintmax_t size = std::filesystem::file_size(path, ec);
  if (ec) return make_error(ErrorCode::kIo, path.string() + ": cannot stat: " + ec.message());
  if (size > kMaxFileBytes) {
    return corrupt(path.string(), "file of " + std::to_string(size) +
                                      " bytes is far larger than any tokenizer.json");
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) return make_error(ErrorCode::kIo, path.string() + ": cannot open for reading");
  std::string text(static_cast<size_t>(size), '\0');
  in.read(text.data(), static_cast<std::streamsize>(size));
  if (!in) return make_error(ErrorCode::kIo, path.string() + ": read failed");
  MLM_ASSIGN_OR_RETURN(auto impl, Impl::parse(text, path.string()));
  return Tokenizer(std::move(impl));
}

Result<Tokenizer> Tokenizer::from_json(std::string_view json_text) {
  MLM_ASSIGN_OR_RETURN(auto impl, Impl::parse(json_text, "tokenizer.json"));
  return Tokenizer(std::move(impl));
}

Result<std::unique_ptr<Tokenizer::Impl>> Tokenizer::Impl::parse(std::string_view json_text,
                                                                const std::string& source) {
  json root = json::parse(json_text.begin(), json_text.end(), nullptr, /*allow_exceptions=*/false);
  if (root.is_discarded()) return corrupt(source, "not valid JSON");
  if (!root.is_object() || !root.contains("model") || !root["model"].is_object()) {
    return corrupt(source, "not a tokenizer.json (no 'model' object)");
  }
  auto impl = std::make_unique<Impl>();
  impl->source = source;
  try {
    const json& model = root["model"];
    const std::string model_type = type_of(model);
    if (!model_type.empty() && model_type != "BPE") {
      return unsupported(source, "model type '" + model_type + "' is not supported (only BPE)");
    }
    if (!model.contains("vocab") || !model["vocab"].is_object()) {
      return corrupt(source, "BPE model without a 'vocab' object");
    }
    if (!model.contains("merges") || !model["merges"].is_array()) {
      return corrupt(source, "BPE model without a 'merges' list");
    }
    for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
      if (model.contains(key) && !model[key].is_null()) {
        return unsupported(source, std::string("BPE '") + key + "' is not supported");
      }
    }
    if (model.contains("dropout") && !model["dropout"].is_null() &&
        model["dropout"].get<double>() != 0.0) {
      return unsupported(source, "BPE dropout is random; only deterministic BPE is supported");
    }
    impl->fuse_unk = bool_field(model, "fuse_unk", false);
    impl->ignore_merges = bool_field(model, "ignore_merges", false);

    int64_t max_id = -1;
    const auto check_id = [&](const json& v, const std::string& token) -> Result<int32_t> {
      if (!v.is_number_integer()) return corrupt(source, "id of '" + token + "' is not an integer");
      const int64_t id = v.get<int64_t>();
      if (id < 0 || id > kMaxTokenId) {
        return corrupt(source, "id " + std::to_string(id) + " of '" + token + "' is out of range");
      }
      max_id = std::max(max_id, id);
      return static_cast<int32_t>(id);
    };

    impl->vocab.reserve(model["vocab"].size());
    for (const auto& [token, value] : model["vocab"].items()) {
      MLM_ASSIGN_OR_RETURN(const int32_t id, check_id(value, token));
      impl->vocab[token] = id;
    }
    if (model.contains("unk_token") && model["unk_token"].is_string()) {
      const auto it = impl->vocab.find(model["unk_token"].get<std::string>());
      if (it == impl->vocab.end()) return corrupt(source, "unk_token is not in the vocabulary");
      impl->unk_id = it->second;
    }

    const auto lookup = [&](const std::string& token, size_t rank) -> Result<int32_t> {
      const auto it = impl->vocab.find(token);
      if (it == impl->vocab.end()) {
        return corrupt(source, "merge " + std::to_string(rank) + " uses '" + token +
                                   "', which is not in the vocabulary");
      }
      return it->second;
    };
    const json& merges = model["merges"];
    impl->merges.reserve(merges.size());
    for (size_t rank = 0; rank < merges.size(); ++rank) {
      const json& m = merges[rank];
      std::string left, right;
      if (m.is_string()) {
        // The older "left right" form; byte-level tokens never contain a space.
        const std::string line = m.get<std::string>();
        const size_t space = line.find(' ');
        if (space == std::string::npos || line.find(' ', space + 1) != std::string::npos) {
          return corrupt(source, "merge " + std::to_string(rank) + " '" + line +
                                     "' is not two tokens separated by one space");
        }
        left = line.substr(0, space);
        right = line.substr(space + 1);
      } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
        left = m[0].get<std::string>();
        right = m[1].get<std::string>();
      } else {
        return corrupt(source, "merge " + std::to_string(rank) + " is neither \"a b\" nor [a, b]");
      }
      MLM_ASSIGN_OR_RETURN(const int32_t left_id, lookup(left, rank));
      MLM_ASSIGN_OR_RETURN(const int32_t right_id, lookup(right, rank));
      MLM_ASSIGN_OR_RETURN(const int32_t merged_id, lookup(left + right, rank));
      // A repeated pair keeps its last rank, as the library's map does.
      impl->merges[pair_key(left_id, right_id)] = {static_cast<uint32_t>(rank), merged_id};
    }

    const ByteAlphabet& alphabet = byte_alphabet();
    for (int b = 0; b < 256; ++b) {
      const auto it = impl->vocab.find(alphabet.byte_to_text[b]);
      impl->byte_ids[b] = it == impl->vocab.end() ? -1 : it->second;
    }

    MLM_ASSIGN_OR_RETURN(impl->normalizers,
                         parse_normalizer(field_or_null(root, "normalizer"), source));
    MLM_ASSIGN_OR_RETURN(const json* pre,
                         find_byte_level(field_or_null(root, "pre_tokenizer"), "pretokenizers",
                                         "pre_tokenizer", source));
    impl->add_prefix_space = bool_field(*pre, "add_prefix_space", true);
    impl->use_regex = bool_field(*pre, "use_regex", true);
    MLM_TRY(find_byte_level(field_or_null(root, "decoder"), "decoders", "decoder", source));

    // Added tokens get their ids as the library assigns them on load: the vocabulary's id when
    // the content is in it, otherwise the next id after the vocabulary, in file order.
    if (root.contains("added_tokens") && !root["added_tokens"].is_null()) {
      const json& list = root["added_tokens"];
      if (!list.is_array()) return corrupt(source, "'added_tokens' is not a list");
      int64_t next_id = static_cast<int64_t>(impl->vocab.size());
      std::unordered_map<int32_t, AddedToken> by_id;
      for (const json& t : list) {
        if (!t.is_object() || !t.contains("content") || !t["content"].is_string()) {
          return corrupt(source, "an added token without a 'content' string");
        }
        AddedToken token;
        token.content = t["content"].get<std::string>();
        if (token.content.empty()) continue;
        if (!is_valid_utf8(token.content)) return corrupt(source, "added token is not UTF-8");
        // The file's id is only checked for sanity: the library assigns its own (see above).
        if (t.contains("id") && (!t["id"].is_number_integer() || t["id"].get<int64_t>() < 0)) {
          return corrupt(source, "added token '" + token.content + "' has a bad id");
        }
        token.special = bool_field(t, "special", false);
        token.single_word = bool_field(t, "single_word", false);
        token.lstrip = bool_field(t, "lstrip", false);
        token.rstrip = bool_field(t, "rstrip", false);
        token.normalized = bool_field(t, "normalized", !token.special);
        if (const auto a = impl->added_ids.find(token.content); a != impl->added_ids.end()) {
          token.id = a->second;
        } else if (const auto v = impl->vocab.find(token.content); v != impl->vocab.end()) {
          token.id = v->second;
        } else {
          if (next_id > kMaxTokenId) return corrupt(source, "too many added tokens");
          token.id = static_cast<int32_t>(next_id++);
        }
        max_id = std::max<int64_t>(max_id, token.id);
        token.pattern = token.content;
        if (token.normalized && !impl->normalizers.empty()) {
          MLM_ASSIGN_OR_RETURN(token.pattern, impl->normalize(token.content));
        }
        impl->added_ids[token.content] = token.id;
        by_id[token.id] = std::move(token);
      }
      impl->added.reserve(by_id.size());
      for (auto& entry : by_id) impl->added.push_back(std::move(entry.second));
      std::sort(impl->added.begin(), impl->added.end(),
                [](const AddedToken& a, const AddedToken& b) { return a.id < b.id; });
      for (const AddedToken& token : impl->added) {
        (token.normalized ? impl->normalized_matcher : impl->raw_matcher).add(&token);
      }
    }

    impl->id_bytes.resize(static_cast<size_t>(max_id + 1));
    for (const auto& [token, id] : impl->vocab) impl->id_bytes[id] = byte_level_decode(token);
    // An added token's text wins over a vocabulary entry of the same id, and a normalised one is
    // written in its normalised form, as the library's decode does.
    for (const AddedToken& token : impl->added) {
      impl->id_bytes[token.id] = byte_level_decode(token.pattern);
    }
  } catch (const json::exception& e) {
    return corrupt(source, std::string("malformed tokenizer.json: ") + e.what());
  }
  if (impl->vocab.empty()) return corrupt(source, "empty vocabulary");
  return Result<std::unique_ptr<Impl>>(std::move(impl));
}

// ---------------------------------------------------------------------------------------------

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

Result<std::vector<int32_t>> Tokenizer::encode(std::string_view text) const {
  if (!is_valid_utf8(text)) {
    return make_error(ErrorCode::kInvalidArgument, "text to encode is not valid UTF-8");
  }
  const Impl& m = *impl_;
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 1);

  std::vector<Segment> raw_segments;
  m.raw_matcher.split(text, raw_segments);
  std::vector<Segment> segments;
  std::string normalized;
  for (const Segment& raw : raw_segments) {
    if (raw.id >= 0) {
      ids.push_back(raw.id);
      continue;
    }
    std::string_view piece = raw.text;
    if (!m.normalizers.empty()) {
      MLM_ASSIGN_OR_RETURN(normalized, m.normalize(piece));
      piece = normalized;
    }
    segments.clear();
    m.normalized_matcher.split(piece, segments);
    for (const Segment& seg : segments) {
      if (seg.id >= 0) {
        ids.push_back(seg.id);
      } else if (!seg.text.empty()) {
        m.encode_piece(seg.text, ids);
      }
    }
  }
  return ids;
}

std::string Tokenizer::token_bytes(int32_t id) const {
  if (id < 0 || static_cast<size_t>(id) >= impl_->id_bytes.size()) return {};
  return impl_->id_bytes[static_cast<size_t>(id)];
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids) const {
  std::string bytes;
  for (const int32_t id : ids) {
    if (id >= 0 && static_cast<size_t>(id) < impl_->id_bytes.size()) {
      bytes += impl_->id_bytes[static_cast<size_t>(id)];
    }
  }
  return utf8_lossy(bytes);
}

int32_t Tokenizer::token_to_id(std::string_view token) const {
  const std::string key(token);
  if (const auto it = impl_->added_ids.find(key); it != impl_->added_ids.end()) return it->second;
  if (const auto it = impl_->vocab.find(key); it != impl_->vocab.end()) return it->second;
  return -1;
}

int Tokenizer::vocab_size() const {
  return static_cast<int>(impl_->id_bytes.size());
}

std::string StreamDecoder::push(int32_t id) {
  pending_ += tokenizer_->token_bytes(id);
  const size_t ready = pending_.size() - unfinished_tail_length(pending_);
  std::string out = utf8_lossy(std::string_view(pending_).substr(0, ready));
  pending_.erase(0, ready);
  return out;
}

std::string StreamDecoder::flush() {
  std::string out = utf8_lossy(pending_);
  pending_.clear();
  return out;
}

}  // namespace mlmamba
