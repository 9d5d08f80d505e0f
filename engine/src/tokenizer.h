// Byte-level BPE tokenizer read from a Hugging Face tokenizer.json (the GPT-NeoX-20B / GPT-2
// family). Output equals the Hugging Face `tokenizers` library for that family of files.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "mlmamba/result.h"

namespace mlmamba {

class Tokenizer {
 public:
  static Result<Tokenizer> from_file(const std::filesystem::path& path);
  static Result<Tokenizer> from_json(std::string_view json_text);

  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;
  ~Tokenizer();

  // Normaliser, added/special tokens, GPT-2 pre-tokenisation, BPE merges by rank.
  Result<std::vector<int32_t>> encode(std::string_view text) const;
  // Byte-level decode of the ids; special tokens are written as their text. Invalid UTF-8 that the
  // ids spell is replaced by U+FFFD, as the reference library does.
  std::string decode(const std::vector<int32_t>& ids) const;
  // The raw bytes a token stands for (after byte-level decoding); empty for an unknown id.
  std::string token_bytes(int32_t id) const;
  // Id of an exact token string (vocabulary or added token), or -1.
  int32_t token_to_id(std::string_view token) const;
  int vocab_size() const;  // largest id + 1

 private:
  struct Impl;
  explicit Tokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Turns a stream of token ids into text that never ends inside a UTF-8 character: bytes of an
// unfinished character are held back until a later token completes them (or flush()).
class StreamDecoder {
 public:
  explicit StreamDecoder(const Tokenizer& tokenizer) : tokenizer_(&tokenizer) {}
  std::string push(int32_t id);  // the complete characters now available
  std::string flush();           // whatever is held back, invalid bytes as U+FFFD

 private:
  const Tokenizer* tokenizer_;
  std::string pending_;
};

}  // namespace mlmamba
