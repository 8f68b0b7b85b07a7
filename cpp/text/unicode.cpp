#include "text/unicode.h"

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
