// Byte-level BPE tokenizer of Qwen2 (MiniCPM-V 2.6's LLM), equivalent to Hugging Face
// `tokenizers` with: added tokens matched verbatim first, the Qwen2 split regex (implemented by
// hand over code points, see pre_tokenize), GPT-2 byte-to-unicode mapping, BPE by merge rank.
// Qwen2's HF tokenizer also normalizes text to NFC (transformers' tokenization_qwen2.py sets
// normalizers.NFC()); a GGUF does not record that and llama.cpp skips it. from_gguf turns NFC on
// for tokenizer.ggml.pre = "qwen2" (HF parity); the constructor from lists leaves it off.
#pragma once
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace minicpmv::gguf {
class File;
}

namespace minicpmv::text {

// Values of the GGUF key tokenizer.ggml.token_type.
enum class TokenType : int32_t {
  Undefined = 0, Normal = 1, Unknown = 2, Control = 3, UserDefined = 4, Unused = 5, Byte = 6,
};

class Tokenizer {
 public:
  // tokens: byte-level strings (GPT-2 mapping) for normal tokens, plain text for added ones;
  // token_types: one per token (empty = all Normal); merges: "left right", highest priority first.
  // Tokens of type Unknown, Control and UserDefined are "added tokens": matched verbatim in the
  // input before splitting, and decoded as their plain text. Throws FormatError on bad data.
  Tokenizer(std::vector<std::string> tokens, std::vector<int32_t> token_types,
            const std::vector<std::string>& merges);
  // From the tokenizer.ggml.* keys (model must be "gpt2", pre "qwen2" or absent); also reads the
  // optional special ids. NFC is on (see above).
  static Tokenizer from_gguf(const gguf::File& file);

  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;
  ~Tokenizer();

  // parse_special=false: Control / Unknown tokens in the text are encoded as ordinary text;
  // UserDefined tokens are still matched (as HF and llama.cpp do). Any bytes are accepted: an
  // invalid UTF-8 byte splits as a character of its own that is neither letter, digit nor space,
  // and is encoded through its byte token, so decode(encode(b)) == b for every input.
  std::vector<int32_t> encode(std::string_view text, bool parse_special = true) const;
  void encode(std::string_view text, bool parse_special, std::vector<int32_t>& out) const;
  // Bytes (not necessarily valid UTF-8 for an arbitrary id sequence). skip_special drops
  // Control and Unknown tokens.
  std::string decode(const std::vector<int32_t>& ids, bool skip_special = false) const;
  // The bytes of one token. Throws InvalidArgument for an id out of range.
  const std::string& token_to_piece(int32_t id) const;
  // The vocabulary string of a token (byte-level form for normal tokens).
  const std::string& token_text(int32_t id) const;
  // Id of a token by its vocabulary string, or -1.
  int32_t find_token(std::string_view token) const;
  TokenType token_type(int32_t id) const;
  int32_t n_vocab() const { return static_cast<int32_t>(tokens_.size()); }
  size_t n_merges() const { return n_merges_; }

  // Special ids from the file (-1 when absent); the model still resolves its own by string.
  int32_t bos_id = -1, eos_id = -1, unk_id = -1, pad_id = -1;

  // Apply Unicode NFC to the text between added tokens before splitting (HF: normalizer NFC,
  // added tokens with normalized=false).
  void set_nfc(bool on) { nfc_ = on; }
  bool nfc() const { return nfc_; }

  // The Qwen2 regex split of one run of text without added tokens (exposed for tests).
  std::vector<std::string_view> pre_tokenize(std::string_view text) const;

 private:
  void bpe_word(std::string_view word, std::vector<int32_t>& out) const;
  void encode_text(std::string_view text, std::vector<int32_t>& out) const;

  std::vector<std::string> tokens_;
  std::vector<TokenType> types_;
  std::vector<std::string> pieces_;  // decoded bytes of each token
  std::unordered_map<std::string_view, int32_t> token_ids_;
  struct MergeInfo {
    int32_t rank, id;
  };
  std::unordered_map<uint64_t, MergeInfo> merges_;  // (left id << 32 | right id) -> rank, result
  size_t n_merges_ = 0;
  bool nfc_ = false;
  int32_t byte_token_[256];
  // Added tokens, indexed by first byte, longest first: (id, with parse_special only).
  std::vector<std::pair<int32_t, bool>> added_by_byte_[256];
  // Cache of BPE results per pre-token (prompts repeat words); bounded, guarded for const use
  // from several threads.
  mutable std::unique_ptr<std::mutex> cache_mutex_;
  mutable std::unordered_map<std::string, std::vector<int32_t>> cache_;
};

// Streaming decode: feed generated ids one at a time, get text that never ends inside a UTF-8
// character (an incomplete trailing sequence is held back until it completes; bytes that can
// never form a character are passed through). flush() returns whatever is held at the end.
class Detokenizer {
 public:
  explicit Detokenizer(const Tokenizer& tok, bool skip_special = false)
      : tok_(&tok), skip_special_(skip_special) {}
  std::string push(int32_t id);
  void push(int32_t id, std::string& out);  // appends to out
  std::string flush();
  void reset() { pending_.clear(); }

 private:
  const Tokenizer* tok_;
  bool skip_special_;
  std::string pending_;
};

}  // namespace minicpmv::text
