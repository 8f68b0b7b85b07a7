// Small self-contained checks of the tokenizer and sampler (the full comparison against HF
// tokenizers / transformers is in tests/test_tokenizer.py and tests/test_sampler.py). Expected
// values here follow by hand from the Qwen2 regex, the BPE rule and UTF-8; none come from our code.
#include <string>
#include <vector>

#include "testing.h"
#include "text/sampler.h"
#include "text/tokenizer.h"
#include "text/unicode.h"

using namespace minicpmv::text;

namespace {

// The GPT-2 byte-level string of one byte.
std::string byte_char(int b) {
  bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
  int cp = b;
  if (!printable) {
    int n = 0;
    for (int x = 0; x < b; ++x)
      if (!((x >= 0x21 && x <= 0x7E) || (x >= 0xA1 && x <= 0xAC) || (x >= 0xAE))) ++n;
    cp = 256 + n;
  }
  std::string s;
  if (cp < 0x80) s += char(cp);
  else { s += char(0xC0 | (cp >> 6)); s += char(0x80 | (cp & 0x3F)); }
  return s;
}

// 256 byte tokens (ids 0..255 = bytes), merges "a b" -> "ab" (256), "b c" -> "bc" (257),
// "ab c" -> "abc" (258), a control token <|end|> (259) and a user-defined token <u> (260).
Tokenizer toy() {
  std::vector<std::string> tokens;
  for (int b = 0; b < 256; ++b) tokens.push_back(byte_char(b));
  tokens.insert(tokens.end(), {"ab", "bc", "abc", "<|end|>", "<u>"});
  std::vector<int32_t> types(tokens.size(), 1);
  types[259] = 3;
  types[260] = 4;
  return Tokenizer(tokens, types, {"b c", "a b", "ab c"});
}

std::vector<std::string> split(const Tokenizer& t, const std::string& s) {
  std::vector<std::string> out;
  for (auto p : t.pre_tokenize(s)) out.emplace_back(p);
  return out;
}

}  // namespace

TEST(bpe_merge_rank_order) {
  Tokenizer t = toy();
  // "b c" has the best rank: "abc" -> a + bc; "ab c" never applies since "ab" never forms.
  CHECK((t.encode("abc") == std::vector<int32_t>{'a', 257}));
  CHECK((t.encode("ab") == std::vector<int32_t>{256}));
  CHECK((t.encode("abab") == std::vector<int32_t>{256, 256}));
  CHECK(t.find_token("abc") == 258);
  CHECK(t.find_token("nope") == -1);
}

TEST(added_tokens) {
  Tokenizer t = toy();
  CHECK((t.encode("a<|end|>b") == std::vector<int32_t>{'a', 259, 'b'}));
  // Without parse_special the control token is plain text; the user-defined one still matches.
  std::vector<int32_t> plain = t.encode("<|end|>", false);
  CHECK(plain.size() > 1);
  CHECK(t.decode(plain) == "<|end|>");
  CHECK((t.encode("<u>", false) == std::vector<int32_t>{260}));
  CHECK(t.decode({259}, true).empty());
  CHECK(t.decode({'a', 259}) == "a<|end|>");
}

TEST(qwen2_split) {
  Tokenizer t = toy();
  CHECK((split(t, "Hello world!") == std::vector<std::string>{"Hello", " world", "!"}));
  CHECK((split(t, "I'm HE'LL") == std::vector<std::string>{"I", "'m", " HE", "'LL"}));
  CHECK((split(t, "x12") == std::vector<std::string>{"x", "1", "2"}));
  // Whitespace: "  a" -> " " + " a"; trailing spaces stay together; newlines end a run.
  CHECK((split(t, "  a") == std::vector<std::string>{" ", " a"}));
  CHECK((split(t, "a  ") == std::vector<std::string>{"a", "  "}));
  CHECK((split(t, "a \n\n b") == std::vector<std::string>{"a", " \n\n", " b"}));
  CHECK((split(t, "a ...\n") == std::vector<std::string>{"a", " ...\n"}));
  // \p{L} outside ASCII: "é" (U+00E9) is a letter, "²" (U+00B2) a number.
  CHECK((split(t, "caf\xC3\xA9\xC2\xB2") == std::vector<std::string>{"caf\xC3\xA9", "\xC2\xB2"}));
}

TEST(invalid_utf8_round_trip) {
  Tokenizer t = toy();
  std::string bad = "a\xFF\xC3(\xE2\x82 \xED\xA0\x80z\xF0";
  std::vector<int32_t> ids = t.encode(bad);
  CHECK(t.decode(ids) == bad);
  size_t len;
  CHECK(unicode::decode_utf8("\xC0\x80", 0, &len) == unicode::kInvalid && len == 1);
  CHECK(unicode::decode_utf8("\xED\xA0\x80", 0, &len) == unicode::kInvalid);
  CHECK(unicode::decode_utf8("\xF0\x9F\x98\x80", 0, &len) == 0x1F600 && len == 4);
}

TEST(nfc) {
  // e + COMBINING ACUTE (U+0301) composes to U+00E9; Hangul L+V+T composes arithmetically to
  // U+AC01; marks are reordered by combining class (dot below 220 before acute 230) and then
  // compose: a + U+0301 + U+0323 -> U+1EA1 (a with dot below) + U+0301.
  CHECK(unicode::nfc("e\xCC\x81") == "\xC3\xA9");
  CHECK(unicode::nfc("\xE1\x84\x80\xE1\x85\xA1\xE1\x86\xA8") == "\xEA\xB0\x81");
  CHECK(unicode::nfc("a\xCC\x81\xCC\xA3") == "\xE1\xBA\xA1\xCC\x81");
  CHECK(unicode::nfc("plain ascii") == "plain ascii");
  CHECK(unicode::nfc("\xFF\xCC\x81") == "\xFF\xCC\x81");  // an invalid byte composes with nothing
  Tokenizer t = toy();
  t.set_nfc(true);
  CHECK(t.decode(t.encode("e\xCC\x81")) == "\xC3\xA9");
}

TEST(detokenizer_holds_partial_utf8) {
  Tokenizer t = toy();
  Detokenizer d(t);
  // U+20AC EURO SIGN = E2 82 AC, fed one byte token at a time.
  CHECK(d.push(0xE2).empty());
  CHECK(d.push(0x82).empty());
  CHECK(d.push(0xAC) == "\xE2\x82\xAC");
  CHECK(d.push('x') == "x");
  CHECK(d.push(0xF0).empty());
  CHECK(d.flush() == "\xF0");
  // A byte that can never start a character is passed through at once.
  CHECK(d.push(0xFF) == "\xFF");
}

TEST(bad_vocab_throws) {
  CHECK_THROWS(Tokenizer({"a", "b"}, {}, {}));  // no byte tokens
  std::vector<std::string> tokens;
  for (int b = 0; b < 256; ++b) tokens.push_back(byte_char(b));
  CHECK_THROWS(Tokenizer(tokens, {}, {"a zz"}));
  CHECK_THROWS(Tokenizer(tokens, {1, 2}, {}));
}

TEST(sampler_basics) {
  std::vector<float> logits = {1.0f, 3.0f, 2.0f, -1.0f};
  SamplerParams g;
  g.temperature = 0;
  Sampler greedy(4, g);
  CHECK(greedy.sample(logits.data(), nullptr, 0) == 1);
  // Repetition penalty 4 on token 1: 3/4 = 0.75 < 2 -> argmax becomes token 2.
  g.repetition_penalty = 4;
  Sampler pen(4, g);
  int32_t prev[] = {1, 1};
  CHECK(pen.sample(logits.data(), prev, 2) == 2);
  // top_k = 2 keeps tokens 1 and 2 with softmax weights e^3 : e^2.
  SamplerParams k;
  k.top_k = 2;
  Sampler topk(4, k);
  std::vector<float> p(4);
  topk.probs(logits.data(), nullptr, 0, p.data());
  double e = std::exp(1.0);
  CHECK(p[0] == 0 && p[3] == 0);
  CHECK(std::fabs(p[1] - e / (e + 1)) < 1e-6);
}

TEST_MAIN()
