// Next-token sampler with Hugging Face generate() semantics (do_sample=True):
// repetition penalty -> temperature -> top-k -> top-p -> min-p -> softmax -> multinomial draw.
// Greedy (temperature <= 0) is the argmax after the repetition penalty. Stop tokens are the
// caller's business. All scratch is sized once from the vocabulary: no allocation per token.
#pragma once
#include <cstddef>
#include <cstdint>
#include <random>
#include <vector>

namespace minicpmv::text {

struct SamplerParams {
  float temperature = 1.0f;         // <= 0: greedy
  int32_t top_k = 0;                // 0: off. Ties with the k-th logit are kept, as in HF.
  float top_p = 1.0f;               // >= 1: off
  float min_p = 0.0f;               // <= 0: off
  float repetition_penalty = 1.0f;  // 1: off. Positive logits / p, negative * p, each token once.
  uint64_t seed = 0;
};

class Sampler {
 public:
  // Throws InvalidArgument for n_vocab <= 0 or out-of-range parameters.
  Sampler(int32_t n_vocab, const SamplerParams& params);

  // logits: n_vocab floats; prev: the tokens the repetition penalty applies to (HF: every token
  // of input_ids; MiniCPM-V's chat() passes only generated ones). Ids out of range throw.
  int32_t sample(const float* logits, const int32_t* prev, size_t n_prev);
  // The distribution sample() draws from (n_vocab floats, zeros for filtered tokens).
  void probs(const float* logits, const int32_t* prev, size_t n_prev, float* out);

  void seed(uint64_t s) { rng_.seed(s); }
  const SamplerParams& params() const { return params_; }
  int32_t n_vocab() const { return n_vocab_; }

 private:
  // Fills cand_[0..n) with candidate ids (best first) and prob_ with their probabilities.
  size_t distribution(const float* logits, const int32_t* prev, size_t n_prev);

  int32_t n_vocab_;
  SamplerParams params_;
  std::vector<float> x_;         // processed logits
  std::vector<int32_t> cand_;    // candidate ids
  std::vector<double> prob_;     // probability of cand_[i]
  std::vector<float> heap_;      // top-k selection
  std::vector<uint32_t> seen_;   // stamp per id: repetition penalty once per distinct token
  uint32_t stamp_ = 0;
  std::mt19937_64 rng_;
};

inline bool is_stop(int32_t id, const std::vector<int32_t>& stop_ids) {
  for (int32_t s : stop_ids)
    if (s == id) return true;
  return false;
}

}  // namespace minicpmv::text
