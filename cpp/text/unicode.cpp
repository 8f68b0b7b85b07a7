#include "text/unicode.h"

#include <algorithm>
#include <utility>
#include <vector>

namespace minicpmv::text::unicode {

CharClass char_class(uint32_t cp) {
  if (cp < 0x80) {
    if ((cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z')) return kLetter;
    if (cp >= '0' && cp <= '9') return kNumber;
    if (cp == ' ' || (cp >= 0x09 && cp <= 0x0D)) return kSpace;
    return kOther;
  }
  size_t lo = 0, hi = kNumCharRanges;  // first range with last >= cp
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    if (kCharRanges[mid].last < cp) lo = mid + 1; else hi = mid;
  }
  if (lo < kNumCharRanges && kCharRanges[lo].first <= cp) return kCharRanges[lo].cls;
  return kOther;
}

uint32_t decode_utf8(std::string_view s, size_t i, size_t* len) {
  const auto* p = reinterpret_cast<const uint8_t*>(s.data());
  const size_t n = s.size();
  uint8_t b0 = p[i];
  *len = 1;
  int need = utf8_seq_len(b0);
  if (need == 1) return b0;
  if (need == 0 || i + need > n) return kInvalid;
  uint32_t cp = b0 & (0x7F >> need);
  for (int k = 1; k < need; ++k) {
    uint8_t b = p[i + k];
    if ((b & 0xC0) != 0x80) return kInvalid;
    cp = (cp << 6) | (b & 0x3F);
  }
  // Reject overlong 3/4-byte forms, surrogates and values above U+10FFFF.
  if ((need == 3 && cp < 0x800) || (need == 4 && (cp < 0x10000 || cp > 0x10FFFF)) ||
      (cp >= 0xD800 && cp <= 0xDFFF))
    return kInvalid;
  *len = need;
  return cp;
}

}  // namespace minicpmv::text::unicode

// ---- NFC ----

namespace minicpmv::text::unicode {

namespace {

// Hangul syllables decompose and compose arithmetically (Unicode 3.12).
constexpr uint32_t kSBase = 0xAC00, kLBase = 0x1100, kVBase = 0x1161, kTBase = 0x11A7;
constexpr uint32_t kLCount = 19, kVCount = 21, kTCount = 28, kNCount = kVCount * kTCount,
                   kSCount = kLCount * kNCount;
// An invalid input byte b travels through the algorithm as kByteBase + b.
constexpr uint32_t kByteBase = 0x110000;

void decompose(uint32_t cp, std::u32string& out) {
  if (cp >= kSBase && cp < kSBase + kSCount) {
    uint32_t s = cp - kSBase;
    out += kLBase + s / kNCount;
    out += kVBase + (s % kNCount) / kTCount;
    if (s % kTCount) out += kTBase + s % kTCount;
    return;
  }
  if (cp >= 0xC0) {
    const Decomposition* end = kDecompositions + kNumDecompositions;
    const Decomposition* d = std::lower_bound(kDecompositions, end, cp,
        [](const Decomposition& e, uint32_t c) { return e.cp < c; });
    if (d != end && d->cp == cp) {
      for (int k = 0; k < d->length; ++k) out += char32_t(kDecompPool[d->offset + k]);
      return;
    }
  }
  out += cp;
}

// The primary composite of (a, b), or 0.
uint32_t compose(uint32_t a, uint32_t b) {
  if (a >= kLBase && a < kLBase + kLCount && b >= kVBase && b < kVBase + kVCount)
    return kSBase + ((a - kLBase) * kVCount + (b - kVBase)) * kTCount;
  if (a >= kSBase && a < kSBase + kSCount && (a - kSBase) % kTCount == 0 && b > kTBase &&
      b < kTBase + kTCount)
    return a + (b - kTBase);
  const Composition* end = kCompositions + kNumCompositions;
  const Composition* c = std::lower_bound(kCompositions, end, std::make_pair(a, b),
      [](const Composition& e, const std::pair<uint32_t, uint32_t>& k) {
        return e.first != k.first ? e.first < k.first : e.second < k.second;
      });
  return c != end && c->first == a && c->second == b ? c->composite : 0;
}

void put_utf8(std::string& s, uint32_t cp) {
  if (cp >= kByteBase) s += char(cp - kByteBase);
  else if (cp < 0x80) s += char(cp);
  else if (cp < 0x800) { s += char(0xC0 | (cp >> 6)); s += char(0x80 | (cp & 0x3F)); }
  else if (cp < 0x10000) {
    s += char(0xE0 | (cp >> 12)); s += char(0x80 | ((cp >> 6) & 0x3F)); s += char(0x80 | (cp & 0x3F));
  } else {
    s += char(0xF0 | (cp >> 18)); s += char(0x80 | ((cp >> 12) & 0x3F));
    s += char(0x80 | ((cp >> 6) & 0x3F)); s += char(0x80 | (cp & 0x3F));
  }
}

}  // namespace

uint8_t combining_class(uint32_t cp) {
  if (cp < 0x300) return 0;
  const CccRange* end = kCccRanges + kNumCccRanges;
  const CccRange* r = std::lower_bound(kCccRanges, end, cp,
      [](const CccRange& e, uint32_t c) { return e.last < c; });
  return r != end && r->first <= cp ? r->ccc : 0;
}

std::string nfc(std::string_view s) {
  bool simple = true;  // every code point < U+0300 (lead bytes of those are < 0xCC)
  for (char ch : s)
    if (uint8_t(ch) >= 0xCC) { simple = false; break; }
  if (simple) return std::string(s);

  // 1. Full canonical decomposition.
  std::u32string d;
  d.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    size_t len;
    uint32_t cp = decode_utf8(s, i, &len);
    if (cp == kInvalid) d += kByteBase + uint8_t(s[i]);
    else decompose(cp, d);
    i += len;
  }
  // 2. Canonical order: stable sort of each run of non-starters by combining class.
  std::vector<uint8_t> cc(d.size());
  for (size_t i = 0; i < d.size(); ++i) cc[i] = d[i] >= kByteBase ? 0 : combining_class(d[i]);
  for (size_t i = 0; i < d.size();) {
    if (cc[i] == 0) { ++i; continue; }
    size_t j = i;
    while (j < d.size() && cc[j] != 0) ++j;
    for (size_t a = i + 1; a < j; ++a)  // insertion sort: runs are short, and it is stable
      for (size_t b = a; b > i && cc[b - 1] > cc[b]; --b) {
        std::swap(cc[b - 1], cc[b]);
        std::swap(d[b - 1], d[b]);
      }
    i = j;
  }
  // 3. Canonical composition (UAX #15): a character joins the last starter unless blocked.
  size_t out = 0, starter = 0;
  bool have_starter = false;
  int last_cc = -1;
  for (size_t i = 0; i < d.size(); ++i) {
    uint32_t c = d[i];
    int ccc = cc[i];
    if (have_starter && (last_cc < ccc || last_cc == 0) && d[starter] < kByteBase && c < kByteBase) {
      if (uint32_t comp = compose(d[starter], c)) {
        d[starter] = comp;
        continue;
      }
    }
    if (ccc == 0) {
      starter = out;
      have_starter = true;
      last_cc = 0;
    } else {
      last_cc = ccc;
    }
    d[out] = c;
    cc[out] = uint8_t(ccc);
    ++out;
  }
  std::string r;
  r.reserve(s.size() + 8);
  for (size_t i = 0; i < out; ++i) put_utf8(r, d[i]);
  return r;
}

}  // namespace minicpmv::text::unicode
