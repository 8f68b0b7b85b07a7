// What the running CPU (and OS) can execute: read once, at first use, from CPUID + XGETBV on x86
// and from the ELF auxiliary vector (HWCAP) on aarch64. The kernels' dispatch (kernels/matmul.cpp)
// picks its ISA path from these flags; a flag is true only if the instructions are usable, i.e.
// the CPU has them AND the OS saves the register state they need (XCR0 for ymm / zmm / AMX tiles).
#pragma once
#include <string>
#include <utility>
#include <vector>

namespace minicpmv {
namespace cpu {

struct Features {
  // x86
  bool sse42 = false, avx = false, avx2 = false, fma = false, f16c = false, bmi2 = false;
  bool avx512f = false, avx512bw = false, avx512vl = false, avx512dq = false;
  bool avx512_vnni = false, avx512_bf16 = false, avx_vnni = false;
  bool amx_tile = false, amx_int8 = false, amx_bf16 = false;
  // aarch64
  bool neon = false, asimddp = false, i8mm = false, fphp = false;
  std::string vendor;  // CPUID vendor string on x86 ("AuthenticAMD", ...), empty elsewhere
};

const Features& features();

// (name, present) for every flag above, in a fixed order: for isa_info() and bench output.
std::vector<std::pair<std::string, bool>> feature_list();

}  // namespace cpu
}  // namespace minicpmv
