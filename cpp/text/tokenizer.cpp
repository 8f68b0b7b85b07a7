#include "text/tokenizer.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <queue>

#include "gguf/gguf.h"
#include "minicpmv/error.h"
#include "text/unicode.h"

namespace minicpmv::text {

namespace {

// GPT-2's byte-to-unicode table: printable Latin-1 bytes map to themselves, the other 68 bytes to
// U+0100.. in byte order, so every byte is a visible character in the vocabulary strings.
struct ByteMap {
  uint32_t to_cp[256];
  int16_t from_cp[324];  // code point -> byte, -1 if none (max code point is U+0143)
  ByteMap() {
    std::fill(std::begin(from_cp), std::end(from_cp), int16_t(-1));
    int n = 0;
    for (int b = 0; b < 256; ++b) {
      bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
      to_cp[b] = printable ? b : 256 + n++;
      from_cp[to_cp[b]] = int16_t(b);
    }
  }
};
const ByteMap& byte_map() {
  static const ByteMap m;
  return m;
}

void append_utf8(std::string& s, uint32_t cp) {
  if (cp < 0x80) {
    s += char(cp);
  } else if (cp < 0x800) {
    s += char(0xC0 | (cp >> 6));
    s += char(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    s += char(0xE0 | (cp >> 12));
    s += char(0x80 | ((cp >> 6) & 0x3F));
    s += char(0x80 | (cp & 0x3F));
  } else {
    s += char(0xF0 | (cp >> 18));
    s += char(0x80 | ((cp >> 12) & 0x3F));
    s += char(0x80 | ((cp >> 6) & 0x3F));
    s += char(0x80 | (cp & 0x3F));
  }
}

// Bytes of a byte-level vocabulary string. A character outside the mapping is kept as its UTF-8,
// as HF's ByteLevel decoder does.
std::string byte_level_decode(std::string_view tok) {
  const ByteMap& m = byte_map();
  std::string out;
  size_t i = 0;
  while (i < tok.size()) {
    size_t len;
    uint32_t cp = unicode::decode_utf8(tok, i, &len);
    if (cp < 324 && m.from_cp[cp] >= 0) out += char(m.from_cp[cp]);
    else out.append(tok.data() + i, len);
    i += len;
  }
  return out;
}

bool is_added(TokenType t) {
  return t == TokenType::Unknown || t == TokenType::Control || t == TokenType::UserDefined;
}

// Simple case folding, restricted to what (?i:'s|'t|'re|'ve|'m|'ll|'d) can meet: Oniguruma folds
// ASCII letters and U+017F LATIN SMALL LETTER LONG S (-> s); no other character folds to one of
// s t r e v m l d (checked over all code points against HF tokenizers).
uint32_t fold(uint32_t c) {
  if (c >= 'A' && c <= 'Z') return c + 32;
  if (c == 0x17F) return 's';
  return c;
}

constexpr size_t kCacheMax = 1 << 16;

}  // namespace

Tokenizer::Tokenizer(std::vector<std::string> tokens, std::vector<int32_t> token_types,
                     const std::vector<std::string>& merges)
    : tokens_(std::move(tokens)), cache_mutex_(std::make_unique<std::mutex>()) {
  const size_t n = tokens_.size();
  if (n == 0) throw FormatError("tokenizer: empty vocabulary");
  if (n > size_t(INT32_MAX)) throw FormatError("tokenizer: vocabulary too large");
  if (!token_types.empty() && token_types.size() != n)
    throw FormatError("tokenizer: " + std::to_string(token_types.size()) + " token types for " +
                      std::to_string(n) + " tokens");
  types_.resize(n, TokenType::Normal);
  for (size_t i = 0; i < token_types.size(); ++i) {
    if (token_types[i] < 0 || token_types[i] > 6)
      throw FormatError("tokenizer: token " + std::to_string(i) + " has unknown type " +
                        std::to_string(token_types[i]));
    types_[i] = TokenType(token_types[i]);
  }

  token_ids_.reserve(n);
  pieces_.resize(n);
  for (size_t i = 0; i < n; ++i) {
    token_ids_.emplace(tokens_[i], int32_t(i));  // a duplicate string keeps its first id
    pieces_[i] = is_added(types_[i]) || types_[i] == TokenType::Unused ||
                         types_[i] == TokenType::Undefined
                     ? tokens_[i]
                     : byte_level_decode(tokens_[i]);
  }

  const ByteMap& m = byte_map();
  for (int b = 0; b < 256; ++b) {
    std::string s;
    append_utf8(s, m.to_cp[b]);
    int32_t id = find_token(s);
    if (id < 0) {
      char hex[8];
      std::snprintf(hex, sizeof hex, "0x%02X", b);
      throw FormatError("tokenizer: no token for byte " + std::string(hex) + " ('" + s +
                        "'): not a byte-level BPE vocabulary");
    }
    byte_token_[b] = id;
  }

  merges_.reserve(merges.size());
  std::string joined;
  for (size_t r = 0; r < merges.size(); ++r) {
    const std::string& mg = merges[r];
    size_t sp = mg.find(' ');
    if (sp == std::string::npos || sp == 0 || sp + 1 >= mg.size() ||
        mg.find(' ', sp + 1) != std::string::npos)
      throw FormatError("tokenizer: merge " + std::to_string(r) + " '" + mg +
                        "' is not two tokens separated by one space");
    std::string_view a(mg.data(), sp), b(mg.data() + sp + 1, mg.size() - sp - 1);
    joined.assign(a);
    joined.append(b);
    int32_t ia = find_token(a), ib = find_token(b), ij = find_token(joined);
    if (ia < 0 || ib < 0 || ij < 0)
      throw FormatError("tokenizer: merge " + std::to_string(r) + " '" + mg + "' uses token '" +
                        std::string(ia < 0 ? a : ib < 0 ? b : std::string_view(joined)) +
                        "' which is not in the vocabulary");
    uint64_t key = (uint64_t(uint32_t(ia)) << 32) | uint32_t(ib);
    merges_.emplace(key, MergeInfo{int32_t(r), ij});  // a repeated pair keeps its best rank
  }
  n_merges_ = merges.size();

  for (size_t i = 0; i < n; ++i) {
    if (!is_added(types_[i]) || tokens_[i].empty()) continue;
    bool needs_parse_special = types_[i] != TokenType::UserDefined;
    added_by_byte_[uint8_t(tokens_[i][0])].emplace_back(int32_t(i), needs_parse_special);
  }
  for (auto& v : added_by_byte_)
    std::stable_sort(v.begin(), v.end(), [&](const auto& x, const auto& y) {
      return tokens_[x.first].size() > tokens_[y.first].size();
    });
}

Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

Tokenizer Tokenizer::from_gguf(const gguf::File& f) {
  std::string model = f.get_string("tokenizer.ggml.model");
  if (model != "gpt2")
    throw FormatError(f.path() + ": tokenizer.ggml.model is '" + model +
                      "', expected 'gpt2' (byte-level BPE)");
  std::string pre = f.get_string("tokenizer.ggml.pre", "qwen2");
  if (pre != "qwen2")
    throw FormatError(f.path() + ": tokenizer.ggml.pre is '" + pre +
                      "', only the 'qwen2' pre-tokenizer is implemented");
  std::vector<std::string> tokens;
  for (auto s : f.get_string_array("tokenizer.ggml.tokens")) tokens.emplace_back(s);
  std::vector<int32_t> types;
  if (f.has("tokenizer.ggml.token_type"))
    for (int64_t t : f.get_int_array("tokenizer.ggml.token_type")) types.push_back(int32_t(t));
  std::vector<std::string> merges;
  for (auto s : f.get_string_array("tokenizer.ggml.merges")) merges.emplace_back(s);
  try {
    Tokenizer tok(std::move(tokens), std::move(types), merges);
    auto id = [&](const char* key) {
      int64_t v = f.get_int(key, -1);
      if (v < -1 || v >= tok.n_vocab())
        throw FormatError(f.path() + ": " + key + " = " + std::to_string(v) +
                          " is outside the vocabulary of " + std::to_string(tok.n_vocab()));
      return int32_t(v);
    };
    tok.bos_id = id("tokenizer.ggml.bos_token_id");
    tok.eos_id = id("tokenizer.ggml.eos_token_id");
    tok.unk_id = id("tokenizer.ggml.unknown_token_id");
    tok.pad_id = id("tokenizer.ggml.padding_token_id");
    tok.set_nfc(true);  // Qwen2's HF tokenizer normalizes to NFC
    return tok;
  } catch (const FormatError& e) {
    std::string msg = e.what();
    if (msg.rfind(f.path(), 0) == 0) throw;
    throw FormatError(f.path() + ": " + msg);
  }
}

int32_t Tokenizer::find_token(std::string_view token) const {
  auto it = token_ids_.find(token);
  return it == token_ids_.end() ? -1 : it->second;
}

const std::string& Tokenizer::token_to_piece(int32_t id) const {
  if (id < 0 || id >= n_vocab())
    throw InvalidArgument("token id " + std::to_string(id) + " is outside the vocabulary of " +
                          std::to_string(n_vocab()));
  return pieces_[id];
}

const std::string& Tokenizer::token_text(int32_t id) const {
  token_to_piece(id);  // range check
  return tokens_[id];
}

TokenType Tokenizer::token_type(int32_t id) const {
  token_to_piece(id);
  return types_[id];
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids, bool skip_special) const {
  std::string out;
  for (int32_t id : ids) {
    const std::string& p = token_to_piece(id);
    if (skip_special && (types_[id] == TokenType::Control || types_[id] == TokenType::Unknown))
      continue;
    out += p;
  }
  return out;
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool parse_special) const {
  std::vector<int32_t> out;
  encode(text, parse_special, out);
  return out;
}

void Tokenizer::encode(std::string_view text, bool parse_special, std::vector<int32_t>& out) const {
  // Added tokens first, leftmost then longest (HF's AddedVocabulary does the same); the text
  // between them goes through the regex split and BPE.
  size_t seg = 0, pos = 0;
  while (pos < text.size()) {
    int32_t hit = -1;
    for (const auto& [id, needs_special] : added_by_byte_[uint8_t(text[pos])]) {
      if (needs_special && !parse_special) continue;
      const std::string& t = tokens_[id];
      if (t.size() <= text.size() - pos && std::memcmp(text.data() + pos, t.data(), t.size()) == 0) {
        hit = id;
        break;
      }
    }
    if (hit < 0) {
      ++pos;
      continue;
    }
    encode_text(text.substr(seg, pos - seg), out);
    out.push_back(hit);
    pos += tokens_[hit].size();
    seg = pos;
  }
  encode_text(text.substr(seg), out);
}

void Tokenizer::encode_text(std::string_view text, std::vector<int32_t>& out) const {
  if (text.empty()) return;
  std::string normalized;
  if (nfc_) {
    normalized = unicode::nfc(text);
    text = normalized;
  }
  for (std::string_view word : pre_tokenize(text)) {
    if (word.size() == 1) {
      out.push_back(byte_token_[uint8_t(word[0])]);
      continue;
    }
    {
      std::lock_guard<std::mutex> lock(*cache_mutex_);
      auto it = cache_.find(std::string(word));
      if (it != cache_.end()) {
        out.insert(out.end(), it->second.begin(), it->second.end());
        continue;
      }
    }
    size_t start = out.size();
    bpe_word(word, out);
    std::lock_guard<std::mutex> lock(*cache_mutex_);
    if (cache_.size() >= kCacheMax) cache_.clear();
    cache_.emplace(std::string(word), std::vector<int32_t>(out.begin() + start, out.end()));
  }
}

std::vector<std::string_view> Tokenizer::pre_tokenize(std::string_view text) const {
  using unicode::CharClass;
  // Code points with their class and byte offset; an invalid byte is one kOther "character".
  std::vector<uint32_t> cp;
  std::vector<CharClass> cls;
  std::vector<size_t> off;
  cp.reserve(text.size());
  for (size_t i = 0; i < text.size();) {
    size_t len;
    uint32_t c = unicode::decode_utf8(text, i, &len);
    cp.push_back(c);
    cls.push_back(c == unicode::kInvalid ? unicode::kOther : unicode::char_class(c));
    off.push_back(i);
    i += len;
  }
  const size_t n = cp.size();
  off.push_back(text.size());
  auto is_nl = [&](size_t k) { return cp[k] == '\r' || cp[k] == '\n'; };

  // The Qwen2 pattern, one alternative after the other as the regex engine tries them:
  //   (?i:'s|'t|'re|'ve|'m|'ll|'d) | [^\r\n\p{L}\p{N}]?\p{L}+ | \p{N} | ?[^\s\p{L}\p{N}]+[\r\n]*
  //   | \s*[\r\n]+ | \s+(?!\S) | \s+
  // Every character starts a match of some alternative, so the pieces tile the text.
  auto match = [&](size_t i) -> size_t {
    if (cp[i] == '\'' && i + 1 < n) {
      uint32_t a = fold(cp[i + 1]);
      if (a == 's' || a == 't' || a == 'm' || a == 'd') return i + 2;
      if (i + 2 < n) {
        uint32_t b = fold(cp[i + 2]);
        if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return i + 3;
      }
    }
    size_t j = i;
    if (cls[i] != unicode::kLetter && cls[i] != unicode::kNumber && !is_nl(i) && i + 1 < n &&
        cls[i + 1] == unicode::kLetter)
      j = i + 1;  // the optional leading non-letter
    if (cls[j] == unicode::kLetter) {
      while (j < n && cls[j] == unicode::kLetter) ++j;
      return j;
    }
    if (cls[i] == unicode::kNumber) return i + 1;
    j = (cp[i] == ' ' && i + 1 < n && cls[i + 1] == unicode::kOther) ? i + 1 : i;
    if (cls[j] == unicode::kOther) {
      while (j < n && cls[j] == unicode::kOther) ++j;
      while (j < n && is_nl(j)) ++j;
      return j;
    }
    // Whitespace run [i, r).
    size_t r = i, last_nl = n;
    for (; r < n && cls[r] == unicode::kSpace; ++r)
      if (is_nl(r)) last_nl = r;
    if (last_nl < n) return last_nl + 1;  // \s*[\r\n]+ : up to the last newline of the run
    if (r == n) return n;                 // \s+(?!\S) at the end of the text
    if (r - i >= 2) return r - 1;         // \s+(?!\S) : leave one space for the next word
    return r;                             // \s+
  };

  std::vector<std::string_view> pieces;
  for (size_t i = 0; i < n;) {
    size_t e = match(i);
    pieces.push_back(text.substr(off[i], off[e] - off[i]));
    i = e;
  }
  return pieces;
}

void Tokenizer::bpe_word(std::string_view word, std::vector<int32_t>& out) const {
  // Symbols in a doubly linked list; candidate merges in a min-heap by (rank, position). Stale
  // candidates (a side already merged into something else) are skipped when popped.
  struct Sym {
    int32_t id, prev, next;
  };
  struct Cand {
    int32_t rank, pos, left, right, merged;
    bool operator>(const Cand& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  const int32_t n = int32_t(word.size());
  std::vector<Sym> sym(n);
  for (int32_t i = 0; i < n; ++i) sym[i] = {byte_token_[uint8_t(word[i])], i - 1, i + 1 < n ? i + 1 : -1};
  std::priority_queue<Cand, std::vector<Cand>, std::greater<Cand>> heap;
  auto push = [&](int32_t l) {
    if (l < 0) return;
    int32_t r = sym[l].next;
    if (r < 0) return;
    auto it = merges_.find((uint64_t(uint32_t(sym[l].id)) << 32) | uint32_t(sym[r].id));
    if (it != merges_.end()) heap.push({it->second.rank, l, sym[l].id, sym[r].id, it->second.id});
  };
  for (int32_t i = 0; i + 1 < n; ++i) push(i);
  while (!heap.empty()) {
    Cand c = heap.top();
    heap.pop();
    Sym& l = sym[c.pos];
    if (l.id != c.left || l.next < 0 || sym[l.next].id != c.right) continue;  // stale
    int32_t r = l.next;
    l.id = c.merged;
    l.next = sym[r].next;
    if (l.next >= 0) sym[l.next].prev = c.pos;
    sym[r].id = -1;  // removed
    push(l.prev);
    push(c.pos);
  }
  for (int32_t i = 0; i >= 0; i = sym[i].next) out.push_back(sym[i].id);
}

// ---- Detokenizer ----

namespace {
// True if s[from..] is the start of a valid UTF-8 sequence that is still missing bytes.
bool incomplete_utf8(const std::string& s, size_t from) {
  auto b0 = uint8_t(s[from]);
  size_t need = size_t(unicode::utf8_seq_len(b0)), have = s.size() - from;
  if (need <= 1 || have >= need) return false;
  for (size_t k = 1; k < have; ++k) {
    auto b = uint8_t(s[from + k]);
    if ((b & 0xC0) != 0x80) return false;
    if (k == 1) {  // second-byte limits that exclude overlong forms, surrogates and > U+10FFFF
      if ((b0 == 0xE0 && b < 0xA0) || (b0 == 0xED && b > 0x9F) || (b0 == 0xF0 && b < 0x90) ||
          (b0 == 0xF4 && b > 0x8F))
        return false;
    }
  }
  return true;
}
}  // namespace

void Detokenizer::push(int32_t id, std::string& out) {
  const std::string& piece = tok_->token_to_piece(id);
  TokenType t = tok_->token_type(id);
  if (skip_special_ && (t == TokenType::Control || t == TokenType::Unknown)) return;
  pending_ += piece;
  // Hold back a trailing incomplete character: its lead byte is among the last 3 bytes.
  size_t keep = 0;
  for (size_t k = 1; k <= 3 && k <= pending_.size(); ++k) {
    auto b = uint8_t(pending_[pending_.size() - k]);
    if ((b & 0xC0) == 0x80) continue;
    if (incomplete_utf8(pending_, pending_.size() - k)) keep = k;
    break;
  }
  out.append(pending_, 0, pending_.size() - keep);
  pending_.erase(0, pending_.size() - keep);
}

std::string Detokenizer::push(int32_t id) {
  std::string out;
  push(id, out);
  return out;
}

std::string Detokenizer::flush() {
  std::string out;
  out.swap(pending_);
  return out;
}

}  // namespace minicpmv::text
