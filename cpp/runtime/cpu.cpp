#include "runtime/cpu.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#include <cstring>
#elif defined(__aarch64__) && defined(__linux__)
#include <sys/auxv.h>
#endif

namespace minicpmv {
namespace cpu {
namespace {

#if defined(__x86_64__) || defined(__i386__)
void cpuid(unsigned leaf, unsigned sub, unsigned r[4]) { __cpuid_count(leaf, sub, r[0], r[1], r[2], r[3]); }

// XCR0 via xgetbv, written as bytes so that this file needs no -mxsave.
unsigned long long xgetbv0() {
  unsigned lo, hi;
  __asm__ volatile(".byte 0x0f, 0x01, 0xd0" : "=a"(lo), "=d"(hi) : "c"(0));
  return (static_cast<unsigned long long>(hi) << 32) | lo;
}

Features detect() {
  Features f;
  unsigned r[4];
  cpuid(0, 0, r);
  const unsigned max_leaf = r[0];
  char vendor[13];
  std::memcpy(vendor, &r[1], 4);
  std::memcpy(vendor + 4, &r[3], 4);
  std::memcpy(vendor + 8, &r[2], 4);
  vendor[12] = 0;
  f.vendor = vendor;
  if (max_leaf < 1) return f;
  cpuid(1, 0, r);
  const unsigned ecx1 = r[2];
  f.sse42 = ecx1 & (1u << 20);
  const bool osxsave = ecx1 & (1u << 27);
  const unsigned long long xcr0 = osxsave ? xgetbv0() : 0;
  // XCR0 bits: 1 SSE, 2 AVX (ymm upper), 5-7 opmask / zmm0-15 upper / zmm16-31, 17-18 AMX tiles.
  const bool os_ymm = (xcr0 & 0x6) == 0x6;
  const bool os_zmm = os_ymm && (xcr0 & 0xe0) == 0xe0;
  const bool os_amx = (xcr0 & 0x60000) == 0x60000;
  f.avx = os_ymm && (ecx1 & (1u << 28));
  f.fma = f.avx && (ecx1 & (1u << 12));
  f.f16c = f.avx && (ecx1 & (1u << 29));
  if (max_leaf < 7) return f;
  cpuid(7, 0, r);
  const unsigned ebx7 = r[1], ecx7 = r[2], edx7 = r[3], max_sub7 = r[0];
  f.avx2 = f.avx && (ebx7 & (1u << 5));
  f.bmi2 = ebx7 & (1u << 8);
  f.avx512f = os_zmm && (ebx7 & (1u << 16));
  f.avx512dq = f.avx512f && (ebx7 & (1u << 17));
  f.avx512bw = f.avx512f && (ebx7 & (1u << 30));
  f.avx512vl = f.avx512f && (ebx7 & (1u << 31));
  f.avx512_vnni = f.avx512f && (ecx7 & (1u << 11));
  f.amx_bf16 = os_amx && (edx7 & (1u << 22));
  f.amx_tile = os_amx && (edx7 & (1u << 24));
  f.amx_int8 = os_amx && (edx7 & (1u << 25));
  if (max_sub7 >= 1) {
    cpuid(7, 1, r);
    f.avx_vnni = f.avx2 && (r[0] & (1u << 4));
    f.avx512_bf16 = f.avx512f && (r[0] & (1u << 5));
  }
  return f;
}
#elif defined(__aarch64__)
Features detect() {
  Features f;
  f.neon = true;  // Advanced SIMD is mandatory in AArch64
#if defined(__linux__)
  const unsigned long hw = getauxval(AT_HWCAP), hw2 = getauxval(AT_HWCAP2);
  f.fphp = hw & (1ul << 9);      // HWCAP_FPHP
  f.asimddp = hw & (1ul << 20);  // HWCAP_ASIMDDP
  f.i8mm = hw2 & (1ul << 13);    // HWCAP2_I8MM
#elif defined(__APPLE__)
  f.fphp = f.asimddp = true;  // every Apple-silicon core has them; i8mm from M2 on (not probed)
#endif
  return f;
}
#else
Features detect() { return Features{}; }
#endif

}  // namespace

const Features& features() {
  static const Features f = detect();
  return f;
}

std::vector<std::pair<std::string, bool>> feature_list() {
  const Features& f = features();
  return {{"sse4_2", f.sse42},         {"avx", f.avx},
          {"avx2", f.avx2},            {"fma", f.fma},
          {"f16c", f.f16c},            {"bmi2", f.bmi2},
          {"avx512f", f.avx512f},      {"avx512bw", f.avx512bw},
          {"avx512vl", f.avx512vl},    {"avx512dq", f.avx512dq},
          {"avx512_vnni", f.avx512_vnni}, {"avx512_bf16", f.avx512_bf16},
          {"avx_vnni", f.avx_vnni},    {"amx_tile", f.amx_tile},
          {"amx_int8", f.amx_int8},    {"amx_bf16", f.amx_bf16},
          {"neon", f.neon},            {"asimddp", f.asimddp},
          {"i8mm", f.i8mm},            {"fphp", f.fphp}};
}

}  // namespace cpu
}  // namespace minicpmv
