#include "text/sampler.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <string>

#include "minicpmv/error.h"

namespace minicpmv::text {

Sampler::Sampler(int32_t n_vocab, const SamplerParams& p)
    : n_vocab_(n_vocab), params_(p), rng_(p.seed) {
  if (n_vocab <= 0) throw InvalidArgument("sampler: n_vocab must be positive, got " + std::to_string(n_vocab));
  if (!(p.repetition_penalty > 0))
    throw InvalidArgument("sampler: repetition_penalty must be > 0, got " + std::to_string(p.repetition_penalty));
  if (p.top_k < 0) throw InvalidArgument("sampler: top_k must be >= 0, got " + std::to_string(p.top_k));
  if (!(p.top_p > 0)) throw InvalidArgument("sampler: top_p must be > 0, got " + std::to_string(p.top_p));
  if (!(p.min_p >= 0 && p.min_p <= 1))
    throw InvalidArgument("sampler: min_p must be in [0, 1], got " + std::to_string(p.min_p));
  if (std::isnan(p.temperature)) throw InvalidArgument("sampler: temperature is NaN");
  x_.resize(n_vocab);
  cand_.resize(n_vocab);
  prob_.resize(n_vocab);
  seen_.assign(n_vocab, 0);
  if (p.top_k > 0) heap_.resize(size_t(std::min(p.top_k, n_vocab)));
}

size_t Sampler::distribution(const float* logits, const int32_t* prev, size_t n_prev) {
  const float ninf = -std::numeric_limits<float>::infinity();
  std::copy(logits, logits + n_vocab_, x_.begin());

  // Repetition penalty (HF RepetitionPenaltyLogitsProcessor: gather, scale, scatter; a token
  // that occurs several times is scaled once).
  if (params_.repetition_penalty != 1.0f && n_prev > 0) {
    if (++stamp_ == 0) {
      std::fill(seen_.begin(), seen_.end(), 0);
      stamp_ = 1;
    }
    const float pen = params_.repetition_penalty;
    for (size_t i = 0; i < n_prev; ++i) {
      int32_t t = prev[i];
      if (t < 0 || t >= n_vocab_)
        throw InvalidArgument("sampler: previous token " + std::to_string(t) +
                              " is outside the vocabulary of " + std::to_string(n_vocab_));
      if (seen_[t] == stamp_) continue;
      seen_[t] = stamp_;
      x_[t] = x_[t] < 0 ? x_[t] * pen : x_[t] / pen;
    }
  }

  if (params_.temperature <= 0) {  // greedy: first maximum, as torch.argmax
    int32_t best = 0;
    for (int32_t i = 0; i < n_vocab_; ++i) {
      // every entry: a NaN compares false, so one anywhere but at 0 would otherwise pass unseen
      if (std::isnan(x_[i])) throw InvalidArgument("sampler: logits contain NaN (token " + std::to_string(i) + ")");
      if (x_[i] > x_[best]) best = i;
    }
    cand_[0] = best;
    prob_[0] = 1.0;
    return 1;
  }

  // Temperature, and the candidate list of finite logits.
  const float temp = params_.temperature;
  size_t n = 0;
  float m = ninf;
  for (int32_t i = 0; i < n_vocab_; ++i) {
    float v = x_[i];
    if (std::isnan(v)) throw InvalidArgument("sampler: logits contain NaN (token " + std::to_string(i) + ")");
    if (temp != 1.0f) v /= temp;
    x_[i] = v;
    if (v != ninf) {
      cand_[n++] = i;
      m = std::max(m, v);
    }
  }
  if (n == 0) throw InvalidArgument("sampler: every logit is -inf");
  if (std::isinf(m)) throw InvalidArgument("sampler: logits contain +inf");
  const float* x = x_.data();
  auto better = [x](int32_t a, int32_t b) { return x[a] != x[b] ? x[a] > x[b] : a < b; };

  // Top-k: keep every token whose logit is >= the k-th largest (ties at the boundary stay, as
  // HF's `scores < topk(...)[..., -1]`). The k-th largest comes from a size-k min-heap: one
  // cheap comparison per token.
  const bool use_top_k = params_.top_k > 0 && size_t(params_.top_k) < n;
  if (use_top_k) {
    const size_t k = size_t(params_.top_k);
    float* h = heap_.data();
    for (size_t i = 0; i < k; ++i) h[i] = x[cand_[i]];
    std::make_heap(h, h + k, std::greater<float>());
    for (size_t i = k; i < n; ++i) {
      float v = x[cand_[i]];
      if (v > h[0]) {
        std::pop_heap(h, h + k, std::greater<float>());
        h[k - 1] = v;
        std::push_heap(h, h + k, std::greater<float>());
      }
    }
    const float kth = h[0];
    size_t w = 0;
    for (size_t i = 0; i < n; ++i)
      if (x[cand_[i]] >= kth) cand_[w++] = cand_[i];
    n = w;
  }

  // Top-p: HF sorts ascending, takes the cumulative softmax and drops tokens whose cumulative
  // probability is <= 1 - top_p (the most likely token always stays). Min-p then drops tokens
  // below min_p times the top probability. Sorting the whole vocabulary is avoided: tokens that
  // are certainly dropped are removed first. For top-p, logits are binned by d = x - max; if the
  // bins from the bottom up to some bin hold at most (1 - top_p) of the mass, every token in them
  // has an ascending cumulative sum within that mass, so it is dropped. For min-p, e^d < min_p.
  // Both are thresholds on the logit, so the removed tokens all rank below the survivors and
  // their mass is simply where the ascending cumulative sum starts.
  const bool use_top_p = params_.top_p < 1.0f;
  const bool use_min_p = params_.min_p > 0;
  constexpr double kBinWidth = 0.25;
  constexpr int kBins = 256;
  auto bin_of = [](double d) { return int(std::min(-d * (1 / kBinWidth), double(kBins - 1))); };
  double sum = 0, removed_mass = 0;
  int first_dropped_bin = kBins;  // bins >= this one are dropped by top-p
  if (use_top_p) {
    double bin_mass[kBins] = {};
    for (size_t i = 0; i < n; ++i) {
      double d = double(x[cand_[i]]) - m;
      double e = std::exp(d);
      prob_[i] = e;
      sum += e;
      bin_mass[bin_of(d)] += e;
    }
    const double budget = (1.0 - double(params_.top_p)) * sum * (1 - 1e-9);
    double acc = 0;
    while (first_dropped_bin > 1 && acc + bin_mass[first_dropped_bin - 1] <= budget)
      acc += bin_mass[--first_dropped_bin];
  }
  const double log_min_p = use_min_p ? std::log(double(params_.min_p) * (1 - 1e-6)) : -INFINITY;
  if (first_dropped_bin < kBins || use_min_p) {
    size_t w = 0;
    for (size_t i = 0; i < n; ++i) {
      double d = double(x[cand_[i]]) - m;
      if (d != 0 && (bin_of(d) >= first_dropped_bin || d < log_min_p)) {
        if (use_top_p) removed_mass += prob_[i];
      } else {
        cand_[w++] = cand_[i];
      }
    }
    n = w;
  }
  // Best first, ties by id: the order the draw scans, identical on every platform. Plain
  // sampling over the whole vocabulary keeps id order and skips the sort.
  if (use_top_k || use_top_p || use_min_p) std::sort(cand_.begin(), cand_.begin() + n, better);
  for (size_t i = 0; i < n; ++i) prob_[i] = std::exp(double(x[cand_[i]]) - m);

  if (use_top_p) {
    const double limit = 1.0 - double(params_.top_p);
    double cum = removed_mass / sum;
    size_t keep = n;
    for (size_t i = n; i-- > 1;) {  // i = 0 is always kept
      cum += prob_[i] / sum;
      if (cum <= limit) keep = i; else break;
    }
    n = keep;
  }

  if (use_min_p) {
    const double thr = double(params_.min_p) * prob_[0];  // prob_ is relative to the top token
    size_t keep = 1;
    while (keep < n && !(prob_[keep] < thr)) ++keep;
    n = keep;
  }

  double total = 0;
  for (size_t i = 0; i < n; ++i) total += prob_[i];
  for (size_t i = 0; i < n; ++i) prob_[i] /= total;
  return n;
}

int32_t Sampler::sample(const float* logits, const int32_t* prev, size_t n_prev) {
  size_t n = distribution(logits, prev, n_prev);
  if (n == 1) return cand_[0];
  double u = double(rng_() >> 11) * 0x1.0p-53;  // uniform in [0, 1), same on every platform
  double cum = 0;
  for (size_t i = 0; i < n; ++i) {
    cum += prob_[i];
    if (u < cum) return cand_[i];
  }
  return cand_[n - 1];
}

void Sampler::probs(const float* logits, const int32_t* prev, size_t n_prev, float* out) {
  size_t n = distribution(logits, prev, n_prev);
  std::fill(out, out + n_vocab_, 0.0f);
  for (size_t i = 0; i < n; ++i) out[cand_[i]] = float(prob_[i]);
}

}  // namespace minicpmv::text
