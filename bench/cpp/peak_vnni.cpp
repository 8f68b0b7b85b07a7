// The int8 / f32 ceiling of one core, so kernel GOP/s can be read as a fraction of peak (issue 8).
// Not a test; prints a table.
//
//   peak_vnni [--quick] [--layer [TYPE ...]] [--threads N]
//
// --layer: also times our prefill matmul (kernels::matmul, avx512 path, 512 tokens) on the 7
// weight matrices of one Qwen2-7B layer (q k v o gate up down; random blocks with small scales,
// timing only) for Q4_K Q6_K Q4_0 Q8_0 (or the TYPEs given), and prints each as GOP/s and as a
// fraction of the zmm vpdpbusd peak measured here (x N threads). 1 thread: the thread's CPU
// time (robust to other load); N > 1: wall time (needs a quiet machine), best of 2.
//
// Each row runs a straight-line block of independent instructions (12 accumulators, more than
// latency x throughput on current x86 cores) in a loop, in inline asm so the compiler can neither
// fold nor reorder it. Ops are counted as GEMM ops (2 per multiply-add): a zmm vpdpbusd = 64
// u8 x s8 products summed into 16 int32 = 128 ops, ymm = 64; a zmm f32 FMA = 32 ops.
// The core clock is estimated from a chain of dependent scalar adds (1 cycle each), so rates are
// also given per cycle. "mix" rows add one other instruction per 4 (or 2) vpdpbusd and show
// whether it shares the vpdpbusd pipes (the rate drops) or issues beside them (it does not): the
// overhead a tile can afford per vpdpbusd.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <random>
#include <string>
#include <vector>

#include "kernels/matmul.h"
#include "quant/types.h"
#include "runtime/cpu.h"
#include "runtime/threadpool.h"

namespace {

double thread_cpu_seconds() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

// 8 dependent adds per iteration: cycles = 8 * iters
__attribute__((noinline)) void add_chain(long iters) {
  long v = 0;
  for (long i = 0; i < iters; ++i)
    asm volatile("add $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\t"
                 "add $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\t"
                 : "+r"(v));
}

#define ACC12(OP) OP(0) OP(1) OP(2) OP(3) OP(4) OP(5) OP(6) OP(7) OP(8) OP(9) OP(10) OP(11)
#define CLOB12(R) #R "0", #R "1", #R "2", #R "3", #R "4", #R "5", #R "6", #R "7", #R "8", #R "9", #R "10", #R "11"

#define DPZ(i) "vpdpbusd %%zmm30, %%zmm31, %%zmm" #i "\n\t"
#define DPY(i) "vpdpbusd %%ymm30, %%ymm31, %%ymm" #i "\n\t"
#define DPB(i) "vpdpbusd (%[p])%{1to16%}, %%zmm31, %%zmm" #i "\n\t"
#define FMZ(i) "vfmadd231ps %%zmm30, %%zmm31, %%zmm" #i "\n\t"
#define FMY(i) "vfmadd231ps %%ymm30, %%ymm31, %%ymm" #i "\n\t"
#define DP1(i) "vpdpbusd %%zmm30, %%zmm31, %%zmm0\n\t"

// one iteration = 12 instructions of the kind
#define LOOP(BODY, ...)                                                                          \
  for (long i = 0; i < iters; ++i) asm volatile(BODY : : __VA_ARGS__ : CLOB12(xmm), "memory")

__attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni"))) __attribute__((noinline)) void
run_zmm_dpbusd(long iters) { LOOP(ACC12(DPZ), "r"(0)); }
__attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni"))) __attribute__((noinline)) void
run_ymm_dpbusd(long iters) { LOOP(ACC12(DPY), "r"(0)); }
__attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni"))) __attribute__((noinline)) void
run_zmm_dpbusd_bcast(long iters) {
  alignas(64) static int buf[16] = {0x01020304};
  const int* p = buf;
  LOOP(ACC12(DPB), [p] "r"(p));
}
__attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni"))) __attribute__((noinline)) void
run_zmm_dpbusd_chain(long iters) { LOOP(ACC12(DP1), "r"(0)); }
__attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni"))) __attribute__((noinline)) void
run_zmm_fma(long iters) { LOOP(ACC12(FMZ), "r"(0)); }
__attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni"))) __attribute__((noinline)) void
run_ymm_fma(long iters) { LOOP(ACC12(FMY), "r"(0)); }

// mixes: 12 vpdpbusd + 3 (or 6) other ops writing zmm12..17 from zmm30/31 (independent)
#define D4(a, b, c, d) DPZ(a) DPZ(b) DPZ(c) DPZ(d)
#define MIX3(X) D4(0, 1, 2, 3) X(12) D4(4, 5, 6, 7) X(13) D4(8, 9, 10, 11) X(14)
#define MIX6(X) DPZ(0) DPZ(1) X(12) DPZ(2) DPZ(3) X(13) DPZ(4) DPZ(5) X(14) DPZ(6) DPZ(7) X(15) DPZ(8) DPZ(9) X(16) DPZ(10) DPZ(11) X(17)
#define MIX12(X) DPZ(0) X(12) DPZ(1) X(13) DPZ(2) X(14) DPZ(3) X(15) DPZ(4) X(16) DPZ(5) X(17) DPZ(6) X(12) DPZ(7) X(13) DPZ(8) X(14) DPZ(9) X(15) DPZ(10) X(16) DPZ(11) X(17)
#define MIX24(X, Y) DPZ(0) X(12) Y(13) DPZ(1) X(14) Y(15) DPZ(2) X(16) Y(17) DPZ(3) X(12) Y(13) DPZ(4) X(14) Y(15) DPZ(5) X(16) Y(17) \
  DPZ(6) X(12) Y(13) DPZ(7) X(14) Y(15) DPZ(8) X(16) Y(17) DPZ(9) X(12) Y(13) DPZ(10) X(14) Y(15) DPZ(11) X(16) Y(17)
#define X_ADD(i) "vpaddd %%zmm30, %%zmm31, %%zmm" #i "\n\t"
#define X_AND(i) "vpandd %%zmm30, %%zmm31, %%zmm" #i "\n\t"
#define X_SHR(i) "vpsrlw $4, %%zmm31, %%zmm" #i "\n\t"
#define X_UNP(i) "vpunpckldq %%zmm30, %%zmm31, %%zmm" #i "\n\t"
#define X_INS(i) "vinserti32x4 $1, (%[p]), %%zmm31, %%zmm" #i "\n\t"
#define X_MUL(i) "vpmulld %%zmm30, %%zmm31, %%zmm" #i "\n\t"
#define X_WSD(i) "vpdpwssd %%zmm30, %%zmm31, %%zmm" #i "\n\t"
#define X_CVT(i) "vcvtdq2ps %%zmm31, %%zmm" #i "\n\t"
#define X_FMA(i) "vfmadd231ps %%zmm30, %%zmm31, %%zmm" #i "\n\t"
#define X_BCL(i) "vpbroadcastd (%[p]), %%zmm" #i "\n\t"
#define LOOPM(BODY)                                                                              \
  for (long i = 0; i < iters; ++i)                                                               \
  asm volatile(BODY : : [p] "r"(buf) : CLOB12(xmm), "xmm12", "xmm13", "xmm14", "xmm15", "xmm16", "xmm17", "memory")

alignas(64) int buf[16] = {1, 2, 3, 4};
#define MIXFN(NAME, BODY)                                                                        \
  __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni"))) __attribute__((noinline)) void \
  NAME(long iters) { LOOPM(BODY); }
MIXFN(mix4_add, MIX3(X_ADD))
MIXFN(mix4_and, MIX3(X_AND))
MIXFN(mix4_shr, MIX3(X_SHR))
MIXFN(mix4_unp, MIX3(X_UNP))
MIXFN(mix4_ins, MIX3(X_INS))
MIXFN(mix4_mul, MIX3(X_MUL))
MIXFN(mix4_wsd, MIX3(X_WSD))
MIXFN(mix4_cvt, MIX3(X_CVT))
MIXFN(mix4_fma, MIX3(X_FMA))
MIXFN(mix4_bcl, MIX3(X_BCL))
MIXFN(mix2_add, MIX6(X_ADD))
MIXFN(mix2_unp, MIX6(X_UNP))
MIXFN(mix2_fma, MIX6(X_FMA))
MIXFN(mix1_add, MIX12(X_ADD))
MIXFN(mix1_unp, MIX12(X_UNP))
MIXFN(mix1_ins, MIX12(X_INS))
MIXFN(mix1_cvt, MIX12(X_CVT))
MIXFN(mix1_bcl, MIX12(X_BCL))
MIXFN(mixh_add, MIX24(X_ADD, X_AND))
MIXFN(mixh_unp, MIX24(X_UNP, X_UNP))
MIXFN(mixh_addunp, MIX24(X_ADD, X_UNP))

struct Row {
  const char* name;
  void (*fn)(long);
  int instrs;          // vpdpbusd / FMA instructions per iteration
  double ops_per;      // GEMM ops per such instruction
  int other;           // other instructions per iteration
};

double wall_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Random blocks whose f16 scales are all 0.01 (random bytes there could be inf / NaN).
std::vector<uint8_t> random_weights(minicpmv::DType t, int64_t rows, int64_t cols, std::mt19937& rng) {
  using minicpmv::DType;
  const size_t ts = minicpmv::type_traits(t).type_size;
  std::vector<uint8_t> w(minicpmv::row_size(t, cols) * rows);
  for (size_t i = 0; i < w.size(); i += 4) {
    const uint32_t v = rng();
    std::memcpy(w.data() + i, &v, std::min<size_t>(4, w.size() - i));
  }
  const uint16_t h = 0x211F;  // 0.01
  for (size_t b = 0; b < w.size() / ts; ++b) {
    uint8_t* blk = w.data() + b * ts;
    if (t == DType::Q6_K) {
      std::memcpy(blk + 208, &h, 2);
    } else {
      std::memcpy(blk, &h, 2);
      if (t == DType::Q4_K || t == DType::Q5_K || t == DType::Q4_1 || t == DType::Q5_1) std::memcpy(blk + 2, &h, 2);
    }
  }
  return w;
}

void time_layer(const std::vector<std::string>& types, int threads, double peak) {
  using namespace minicpmv;
  const int64_t H = 3584, F = 18944, N = 512;
  const struct { const char* name; int64_t rows, cols; } mats[] = {
      {"attn_q", H, H}, {"attn_k", 512, H}, {"attn_v", 512, H}, {"attn_output", H, H},
      {"ffn_gate", F, H}, {"ffn_up", F, H}, {"ffn_down", H, F}};
  ThreadPool pool(threads);
  std::mt19937 rng(1);
  std::vector<float> x(N * F), y(N * F);
  for (auto& v : x) v = std::uniform_real_distribution<float>(-1, 1)(rng);
  double ops_all = 0;
  for (const auto& m : mats) ops_all += 2.0 * N * m.rows * m.cols;
  std::printf("\none Qwen2-7B layer, %lld tokens, %d thread%s (%s time); peak = %.0f GOP/s x %d\n", (long long)N,
              threads, threads > 1 ? "s" : "", threads > 1 ? "wall" : "CPU", peak, threads);
  for (const std::string& tn : types) {
    DType t;
    if (tn == "Q4_K") t = DType::Q4_K;
    else if (tn == "Q6_K") t = DType::Q6_K;
    else if (tn == "Q4_0") t = DType::Q4_0;
    else if (tn == "Q8_0") t = DType::Q8_0;
    else if (tn == "Q5_K") t = DType::Q5_K;
    else {
      std::printf("unknown type %s\n", tn.c_str());
      continue;
    }
    double total = 0;
    char line[7][160];
    int i = 0;
    for (const auto& m : mats) {
      std::vector<uint8_t> w = random_weights(t, m.rows, m.cols, rng);
      kernels::Weight W = kernels::Weight::view(t, m.rows, m.cols, w.data());
      kernels::matmul(W, x.data(), 16, y.data(), pool, kernels::Isa::Avx512);  // warm up
      double best = 1e30;
      for (int rep = 0; rep < 2; ++rep) {
        const double t0 = threads > 1 ? wall_seconds() : thread_cpu_seconds();
        kernels::matmul(W, x.data(), N, y.data(), pool, kernels::Isa::Avx512);
        best = std::min(best, (threads > 1 ? wall_seconds() : thread_cpu_seconds()) - t0);
      }
      total += best;
      const double g = 2.0 * N * m.rows * m.cols / best / 1e9;
      std::snprintf(line[i++], sizeof line[0], "    %-12s %5lld x %5lld %8.1f ms %7.1f GOP/s %5.0f%%", m.name,
                    (long long)m.rows, (long long)m.cols, best * 1e3, g, 100 * g / (peak * threads));
    }
    const double g = ops_all / total / 1e9;
    std::printf("%-5s layer %7.1f ms %7.1f GOP/s %5.0f%% of peak\n", tn.c_str(), total * 1e3, g, 100 * g / (peak * threads));
    for (int k = 0; k < i; ++k) std::printf("%s\n", line[k]);
  }
}

}  // namespace

int main(int argc, char** argv) {
  bool quick = false, layer = false;
  int threads = 1;
  std::vector<std::string> types;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--quick") == 0) quick = true;
    else if (std::strcmp(argv[i], "--layer") == 0) layer = true;
    else if (std::strcmp(argv[i], "--threads") == 0 && i + 1 < argc) threads = std::atoi(argv[++i]);
    else if (layer) types.push_back(argv[i]);
  }
  if (layer && types.empty()) types = {"Q4_K", "Q6_K", "Q4_0", "Q8_0"};
  const minicpmv::cpu::Features& f = minicpmv::cpu::features();
  if (!(f.avx512f && f.avx512bw && f.avx512vl && f.avx512_vnni)) {
    std::printf("this CPU has no AVX-512 VNNI: nothing to measure\n");
    return 0;
  }
  const long iters = quick ? 2'000'000 : 20'000'000;
  auto best_of = [&](void (*fn)(long), long n) {
    double best = 1e30;
    for (int rep = 0; rep < 3; ++rep) {
      const double t0 = thread_cpu_seconds();
      fn(n);
      best = std::min(best, thread_cpu_seconds() - t0);
    }
    return best;
  };
  const double t_add = best_of(add_chain, iters);
  const double ghz = 8.0 * iters / t_add / 1e9;
  std::printf("core clock (dependent scalar adds): %.2f GHz; thread CPU time, best of 3\n", ghz);
  std::printf("%-34s %10s %12s %10s\n", "instruction", "G instr/s", "instr/cycle", "GOP/s");
  const Row rows[] = {
      {"vpdpbusd zmm (12 independent)", run_zmm_dpbusd, 12, 128, 0},
      {"vpdpbusd ymm (12 independent)", run_ymm_dpbusd, 12, 64, 0},
      {"vpdpbusd zmm, m32{1to16} bcast", run_zmm_dpbusd_bcast, 12, 128, 0},
      {"vpdpbusd zmm (1 chain: latency)", run_zmm_dpbusd_chain, 12, 128, 0},
      {"vfmadd231ps zmm", run_zmm_fma, 12, 32, 0},
      {"vfmadd231ps ymm", run_ymm_fma, 12, 16, 0},
      {"mix 4 dpbusd : 1 vpaddd", mix4_add, 12, 128, 3},
      {"mix 4 dpbusd : 1 vpandd", mix4_and, 12, 128, 3},
      {"mix 4 dpbusd : 1 vpsrlw", mix4_shr, 12, 128, 3},
      {"mix 4 dpbusd : 1 vpunpckldq", mix4_unp, 12, 128, 3},
      {"mix 4 dpbusd : 1 vinserti32x4 m", mix4_ins, 12, 128, 3},
      {"mix 4 dpbusd : 1 vpmulld", mix4_mul, 12, 128, 3},
      {"mix 4 dpbusd : 1 vpdpwssd", mix4_wsd, 12, 128, 3},
      {"mix 4 dpbusd : 1 vcvtdq2ps", mix4_cvt, 12, 128, 3},
      {"mix 4 dpbusd : 1 vfmadd231ps", mix4_fma, 12, 128, 3},
      {"mix 4 dpbusd : 1 vpbroadcastd m", mix4_bcl, 12, 128, 3},
      {"mix 2 dpbusd : 1 vpaddd", mix2_add, 12, 128, 6},
      {"mix 2 dpbusd : 1 vpunpckldq", mix2_unp, 12, 128, 6},
      {"mix 2 dpbusd : 1 vfmadd231ps", mix2_fma, 12, 128, 6},
      {"mix 1 dpbusd : 1 vpaddd", mix1_add, 12, 128, 12},
      {"mix 1 dpbusd : 1 vpunpckldq", mix1_unp, 12, 128, 12},
      {"mix 1 dpbusd : 1 vinserti32x4 m", mix1_ins, 12, 128, 12},
      {"mix 1 dpbusd : 1 vcvtdq2ps", mix1_cvt, 12, 128, 12},
      {"mix 1 dpbusd : 1 vpbroadcastd m", mix1_bcl, 12, 128, 12},
      {"mix 1 dpbusd : 2 vpaddd/vpandd", mixh_add, 12, 128, 24},
      {"mix 1 dpbusd : 2 vpunpckldq", mixh_unp, 12, 128, 24},
      {"mix 1 dpbusd : vpaddd + vpunpckldq", mixh_addunp, 12, 128, 24},
  };
  double peak = 0;
  for (const Row& r : rows) {
    if (layer && quick && r.fn != run_zmm_dpbusd) continue;
    const double t = best_of(r.fn, iters);
    const double ips = r.instrs * iters / t;
    if (r.fn == run_zmm_dpbusd) peak = ips * r.ops_per / 1e9;
    std::printf("%-34s %10.2f %12.2f %10.1f\n", r.name, ips / 1e9, ips / (ghz * 1e9), ips * r.ops_per / 1e9);
  }
  if (layer) time_layer(types, threads, peak);
  return 0;
}
