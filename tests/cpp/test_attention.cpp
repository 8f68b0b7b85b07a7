// Grouped-query causal attention (kernels/attention.h): the scalar twin against a float64 softmax
// attention computed here, and every ISA path this CPU has against the scalar twin (and float64),
// on f16 and f32 caches in both layouts (position-major, head-major; padded strides), head_dim 64
// and 128 (16, 48: partial register blocks; 72, 8: the scalar fallback), group 1 / 7, 1, 2, 17 and
// 300 visible positions, query blocks with a causal offset (n_past > 0); and fp32_to_fp16_row bit
// for bit against quant/f16.h (ties, overflow, subnormals).
//
// Tolerance, per output row: the output is a convex combination of V rows, so an error d in the
// scores moves it by at most ~2d * max|v|. A float32 dot of hd terms is off by at most
// hd * u * sum_j |q_j k_j| (u = 2^-24), the exp (libm or the 4e-7 polynomial) and the float32
// sums over n_kv terms add (n_kv + 8) * u relative: tol = max|v| * (4 hd u B + 2 (n_kv + 8) u + 1e-6)
// with B = scale * max_t sum_j |q_j k_tj|. A wrong mask, head or scale moves it by ~|v| / n_kv.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "kernels/attention.h"
#include "quant/f16.h"
#include "runtime/threadpool.h"
#include "testing.h"

using namespace minicpmv;
using namespace minicpmv::kernels;

namespace {

constexpr double kU = 1.0 / 16777216.0;  // 2^-24

struct Case {
  int64_t hd, n_head, n_head_kv, n_past, n_q;
  float spread;  // std of the K entries: larger makes the softmax peakier
};

struct Data {
  Case c;
  int64_t q_stride, kv_stride, n_kv;
  std::vector<float> q, kf, vf;        // K/V values (f16-representable), f32 cache layout
  std::vector<uint16_t> kh, vh;        // the same as f16
  // The same values head-major ([kv head][position][hd], as Qwen2Session keeps its cache), with
  // padded position and head strides.
  int64_t hm_stride, hm_head_stride;
  std::vector<float> kf_hm, vf_hm;
  std::vector<uint16_t> kh_hm, vh_hm;
  std::vector<double> want;            // float64 attention
  std::vector<double> tol;             // per (query position, head)
};

Data make(const Case& c, uint32_t seed) {
  Data d;
  d.c = c;
  d.n_kv = c.n_past + c.n_q;
  d.q_stride = c.n_head * c.hd + 16;      // padded rows: strides are honoured
  d.kv_stride = c.n_head_kv * c.hd + 32;
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  d.q.assign(c.n_q * d.q_stride, NAN);  // padding is NaN: reading it would show
  for (int64_t i = 0; i < c.n_q; ++i)
    for (int64_t j = 0; j < c.n_head * c.hd; ++j) d.q[i * d.q_stride + j] = nd(rng);
  d.kh.assign(d.n_kv * d.kv_stride, 0x7e00);  // NaN padding
  d.vh.assign(d.n_kv * d.kv_stride, 0x7e00);
  for (int64_t t = 0; t < d.n_kv; ++t)
    for (int64_t j = 0; j < c.n_head_kv * c.hd; ++j) {
      d.kh[t * d.kv_stride + j] = fp32_to_fp16(nd(rng) * c.spread);
      d.vh[t * d.kv_stride + j] = fp32_to_fp16(nd(rng));
    }
  d.kf.resize(d.kh.size());
  d.vf.resize(d.vh.size());
  for (size_t j = 0; j < d.kh.size(); ++j) d.kf[j] = fp16_to_fp32(d.kh[j]), d.vf[j] = fp16_to_fp32(d.vh[j]);
  d.hm_stride = c.hd + 16;
  d.hm_head_stride = d.n_kv * d.hm_stride + 48;
  const size_t hm_size = c.n_head_kv * d.hm_head_stride;
  d.kh_hm.assign(hm_size, 0x7e00), d.vh_hm.assign(hm_size, 0x7e00);
  d.kf_hm.assign(hm_size, NAN), d.vf_hm.assign(hm_size, NAN);
  for (int64_t g = 0; g < c.n_head_kv; ++g)
    for (int64_t t = 0; t < d.n_kv; ++t)
      for (int64_t j = 0; j < c.hd; ++j) {
        const size_t src = t * d.kv_stride + g * c.hd + j, dst = g * d.hm_head_stride + t * d.hm_stride + j;
        d.kh_hm[dst] = d.kh[src], d.vh_hm[dst] = d.vh[src], d.kf_hm[dst] = d.kf[src], d.vf_hm[dst] = d.vf[src];
      }

  const double scale = 1.0 / std::sqrt(static_cast<double>(c.hd));
  const int64_t group = c.n_head / c.n_head_kv;
  d.want.assign(c.n_q * c.n_head * c.hd, 0.0);
  d.tol.assign(c.n_q * c.n_head, 0.0);
  for (int64_t i = 0; i < c.n_q; ++i)
    for (int64_t h = 0; h < c.n_head; ++h) {
      const int64_t g = h / group, n = c.n_past + i + 1;
      const float* q = &d.q[i * d.q_stride + h * c.hd];
      std::vector<double> s(n);
      double mx = -INFINITY, B = 0, vmax = 0;
      for (int64_t t = 0; t < n; ++t) {
        const float* k = &d.kf[t * d.kv_stride + g * c.hd];
        double dot = 0, ab = 0;
        for (int64_t j = 0; j < c.hd; ++j) dot += double(q[j]) * k[j], ab += std::fabs(double(q[j]) * k[j]);
        s[t] = dot * scale;
        mx = std::max(mx, s[t]);
        B = std::max(B, ab * scale);
        for (int64_t j = 0; j < c.hd; ++j)
          vmax = std::max(vmax, std::fabs(double(d.vf[t * d.kv_stride + g * c.hd + j])));
      }
      double sum = 0;
      for (auto& x : s) sum += x = std::exp(x - mx);
      double* out = &d.want[(i * c.n_head + h) * c.hd];
      for (int64_t t = 0; t < n; ++t)
        for (int64_t j = 0; j < c.hd; ++j) out[j] += s[t] / sum * d.vf[t * d.kv_stride + g * c.hd + j];
      d.tol[i * c.n_head + h] = vmax * (4 * c.hd * kU * B + 2 * (n + 8) * kU + 1e-6);
    }
  return d;
}

std::vector<float> run(const Data& d, DType kv, Isa isa, ThreadPool& pool, bool head_major = false) {
  const Case& c = d.c;
  const int64_t out_stride = c.n_head * c.hd + 8;
  std::vector<float> out(c.n_q * out_stride, 12345.0f);
  GqaArgs a;
  a.q = d.q.data();
  a.q_stride = d.q_stride;
  a.out = out.data();
  a.out_stride = out_stride;
  if (head_major) {
    a.k = kv == DType::F16 ? static_cast<const void*>(d.kh_hm.data()) : d.kf_hm.data();
    a.v = kv == DType::F16 ? static_cast<const void*>(d.vh_hm.data()) : d.vf_hm.data();
    a.kv_stride = d.hm_stride;
    a.kv_head_stride = d.hm_head_stride;
  } else {
    a.k = kv == DType::F16 ? static_cast<const void*>(d.kh.data()) : d.kf.data();
    a.v = kv == DType::F16 ? static_cast<const void*>(d.vh.data()) : d.vf.data();
    a.kv_stride = d.kv_stride;
  }
  a.kv_type = kv;
  a.n_q = c.n_q;
  a.n_past = c.n_past;
  a.n_head = c.n_head;
  a.n_head_kv = c.n_head_kv;
  a.head_dim = c.hd;
  a.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(c.hd)));
  gqa_attention(a, pool, isa);
  // Drop the padding (checking it was left alone) so rows are n_head * hd.
  std::vector<float> packed(c.n_q * c.n_head * c.hd);
  bool pad_ok = true;
  for (int64_t i = 0; i < c.n_q; ++i) {
    std::memcpy(&packed[i * c.n_head * c.hd], &out[i * out_stride], c.n_head * c.hd * sizeof(float));
    for (int64_t j = c.n_head * c.hd; j < out_stride; ++j) pad_ok &= out[i * out_stride + j] == 12345.0f;
  }
  CHECK_MSG(pad_ok, "output padding was written");
  return packed;
}

// Largest |got - want| / tol over the case (<= 1 passes).
template <class T>
double worst(const Data& d, const std::vector<float>& got, const std::vector<T>& want, double tol_factor) {
  double w = 0;
  for (int64_t r = 0; r < d.c.n_q * d.c.n_head; ++r)
    for (int64_t j = 0; j < d.c.hd; ++j) {
      const double e = std::fabs(double(got[r * d.c.hd + j]) - double(want[r * d.c.hd + j]));
      w = std::max(w, std::isfinite(e) ? e / (d.tol[r] * tol_factor) : INFINITY);
    }
  return w;
}

const std::vector<Case>& cases() {
  static const std::vector<Case> v = {
      // decode: one query seeing 1, 2, 17, 300 positions
      {64, 2, 2, 0, 1, 1.0f},     {128, 14, 2, 1, 1, 1.0f},  {128, 7, 1, 16, 1, 2.0f},
      {64, 14, 2, 299, 1, 1.0f},  {128, 28, 4, 299, 1, 3.0f},
      // prefill blocks: from an empty cache, and after a cached prefix (causal offset)
      {64, 2, 2, 0, 2, 1.0f},     {128, 7, 1, 0, 17, 2.0f},  {64, 14, 2, 5, 12, 1.0f},
      {128, 14, 2, 283, 17, 1.0f}, {64, 7, 7, 0, 300, 1.5f}, {128, 14, 2, 230, 70, 4.0f},
  };
  return v;
}

std::string name(const Case& c, DType kv) {
  return "hd " + std::to_string(c.hd) + " heads " + std::to_string(c.n_head) + "/" + std::to_string(c.n_head_kv) +
         " n_past " + std::to_string(c.n_past) + " n_q " + std::to_string(c.n_q) + (kv == DType::F16 ? " f16" : " f32");
}

}  // namespace

TEST(ref_matches_float64) {
  ThreadPool pool(2);
  uint32_t seed = 1;
  for (const Case& c : cases()) {
    const Data d = make(c, seed++);
    for (DType kv : {DType::F16, DType::F32})
      for (bool hm : {false, true}) {
        const double w = worst(d, run(d, kv, Isa::Ref, pool, hm), d.want, 1.0);
        CHECK_MSG(w <= 1.0, "%s%s: error %.3g x tolerance", name(c, kv).c_str(), hm ? " head-major" : "", w);
      }
  }
}

TEST(isa_paths_match_ref) {
  ThreadPool pool(2);
  uint32_t seed = 100;
  for (const Case& c : cases()) {
    const Data d = make(c, seed++);
    for (DType kv : {DType::F16, DType::F32}) {
      const std::vector<float> ref = run(d, kv, Isa::Ref, pool);
      for (Isa isa : available_isas()) {
        if (isa == Isa::Ref) continue;
        const bool hm = (seed + static_cast<int>(isa)) % 2;  // both layouts on every path across the cases
        const std::vector<float> got = run(d, kv, isa, pool, hm);
        // Both are within tol of the exact result, so within 2 tol of each other.
        const double w = worst(d, got, ref, 2.0);
        CHECK_MSG(w <= 1.0, "%s %s: error %.3g x tolerance", isa_name(isa), name(c, kv).c_str(), w);
        const double w64 = worst(d, got, d.want, 1.0);
        CHECK_MSG(w64 <= 1.0, "%s %s: error vs float64 %.3g x tolerance", isa_name(isa), name(c, kv).c_str(), w64);
      }
    }
  }
}

// Scores far apart (up to ~+-100): exps underflow to 0 for most positions; no NaN/inf, and the
// result still matches float64.
TEST(peaky_softmax) {
  ThreadPool pool(1);
  const Case c{128, 7, 1, 150, 3, 12.0f};
  const Data d = make(c, 7);
  for (Isa isa : available_isas())
    for (DType kv : {DType::F16, DType::F32}) {
      const double w = worst(d, run(d, kv, isa, pool), d.want, 1.0);
      CHECK_MSG(w <= 1.0, "%s %s: error %.3g x tolerance", isa_name(isa), name(c, kv).c_str(), w);
    }
}

TEST(invalid_arguments) {
  ThreadPool pool(1);
  std::vector<float> q(256, 0.0f), out(256), kv(256, 0.0f);
  GqaArgs a;
  a.q = q.data(), a.out = out.data(), a.k = kv.data(), a.v = kv.data();
  a.kv_type = DType::F32, a.n_q = 1, a.n_head = 2, a.n_head_kv = 1, a.head_dim = 64;
  a.q_stride = a.out_stride = 128, a.kv_stride = 64;
  for (Isa isa : available_isas()) gqa_attention(a, pool, isa);  // valid
  GqaArgs b = a;
  b.head_dim = 0;
  CHECK_THROWS(gqa_attention(b, pool));
  b = a, b.n_head = 3;
  CHECK_THROWS(gqa_attention(b, pool));
  b = a, b.kv_type = DType::Q8_0;
  CHECK_THROWS(gqa_attention(b, pool));
  b = a, b.k = nullptr;
  CHECK_THROWS(gqa_attention(b, pool));
  b = a, b.kv_stride = 32;
  CHECK_THROWS(gqa_attention(b, pool));
  b = a, b.kv_head_stride = 32;
  CHECK_THROWS(gqa_attention(b, pool));
}

// fp32_to_fp16_row on every path = quant/f16.h's fp32_to_fp16 bit for bit: every f16 value, the
// midpoints between neighbours (ties to even) and one f32 ulp either side, the overflow edge
// (65504, 65519.996, 65520), subnormals and the 2^-25 edge, +-inf, zeros, random bit patterns;
// NaN must stay NaN (payload bits are not specified). Odd lengths exercise the tails.
TEST(fp32_to_fp16_row_exact) {
  std::vector<float> x;
  auto add = [&](uint32_t bits) {
    x.push_back(fp32_from_bits(bits));
    x.push_back(fp32_from_bits(bits ^ 0x80000000u));
  };
  for (uint32_t h = 0; h < 0x7c00; ++h) {
    const uint32_t b = fp32_to_bits(fp16_to_fp32(static_cast<uint16_t>(h)));  // every finite half
    add(b);
    if (h == 0x7bff) break;  // 65504: its upper neighbour is inf (the edge is in the list below)
    const float lo = fp16_to_fp32(static_cast<uint16_t>(h)), hi = fp16_to_fp32(static_cast<uint16_t>(h + 1));
    const uint32_t mid = fp32_to_bits((lo + hi) / 2);  // exact: both are halves
    add(mid), add(mid - 1), add(mid + 1);
  }
  for (float f : {65504.0f, 65519.996f, 65520.0f, 65536.0f, 1e30f, INFINITY, 0.0f, 2.9802322e-08f, 2.9802326e-08f,
                  5.9604645e-08f, 8.940697e-08f, 6.097555e-05f, 6.1035156e-05f, 1e-45f})
    add(fp32_to_bits(f));
  std::mt19937 rng(3);
  for (int i = 0; i < 200000; ++i) {
    const uint32_t b = rng();
    if ((b & 0x7fffffff) <= 0x7f800000u) add(b);
  }
  const size_t n_finite = x.size();
  for (uint32_t b : {0x7fc00000u, 0x7f800001u, 0x7fffffffu, 0x7fa00000u}) add(b);

  std::vector<uint16_t> want(x.size());
  for (size_t i = 0; i < x.size(); ++i) want[i] = fp32_to_fp16(x[i]);
  for (Isa isa : available_isas())
    for (int64_t n : {static_cast<int64_t>(x.size()), int64_t(1), int64_t(7), int64_t(13), int64_t(31)}) {
      std::vector<uint16_t> got(n + 1, 0xabcd);
      fp32_to_fp16_row(x.data() + (x.size() - n), got.data(), n, isa);
      int64_t bad = 0, first = -1;
      for (int64_t i = 0; i < n; ++i) {
        const size_t k = x.size() - n + i;
        const bool ok = k < n_finite ? got[i] == want[k] : ((got[i] & 0x7c00) == 0x7c00 && (got[i] & 0x3ff) != 0);
        if (!ok && first < 0) first = i;
        bad += !ok;
      }
      CHECK_MSG(bad == 0, "%s n %lld: %lld mismatches, first x bits %08x got %04x want %04x", isa_name(isa),
                (long long)n, (long long)bad, first < 0 ? 0u : fp32_to_bits(x[x.size() - n + first]),
                first < 0 ? 0u : unsigned(got[first]), first < 0 ? 0u : unsigned(want[x.size() - n + first]));
      CHECK(got[n] == 0xabcd);
    }
}

TEST_MAIN()
