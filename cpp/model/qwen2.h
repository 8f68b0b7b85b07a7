// Qwen2 decoder, the language half of MiniCPM-V 2.6 (spec §2.4, GGUF layout §9.2).
//
//   Qwen2Config   hyper-parameters read from the GGUF metadata (arch "qwen2"), validated
//   Qwen2Weights  kernels::Weight views into the mapped file (no copy)
//   Qwen2Model    owns the file; shared by any number of sessions
//   Qwen2Session  the run state: KV cache, RoPE table and scratch, all sized once at creation,
//                 and the forward (batched prefill, single-token decode) in qwen2.cpp
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "kernels/matmul.h"

namespace minicpmv {
class ThreadPool;
namespace gguf {
class File;
struct TensorInfo;
}

struct Qwen2Config {
  int64_t n_vocab = 0;
  int64_t n_ctx_train = 0;  // qwen2.context_length
  int64_t n_embd = 0;       // hidden_size
  int64_t n_ff = 0;         // intermediate_size
  int64_t n_layer = 0;
  int64_t n_head = 0;
  int64_t n_head_kv = 0;
  int64_t head_dim = 0;     // n_embd / n_head
  double rope_theta = 10000.0;
  float rms_eps = 1e-6f;

  int64_t kv_dim() const { return n_head_kv * head_dim; }
  // Throws FormatError naming the file and key when the metadata is missing or inconsistent.
  static Qwen2Config from_gguf(const gguf::File& file);
};

struct Qwen2Layer {
  const float* attn_norm = nullptr;
  kernels::Weight attn_q, attn_k, attn_v;  // Qwen2: q, k, v have a bias, the output has none
  const float* attn_q_bias = nullptr;
  const float* attn_k_bias = nullptr;
  const float* attn_v_bias = nullptr;
  kernels::Weight attn_output;
  const float* ffn_norm = nullptr;
  kernels::Weight ffn_gate, ffn_up, ffn_down;  // SwiGLU: down(silu(gate x) * up x)
};

struct Qwen2Weights {
  const gguf::TensorInfo* token_embd = nullptr;  // looked up row by row (dequantize_row)
  std::vector<Qwen2Layer> layers;
  const float* output_norm = nullptr;
  kernels::Weight output;  // the LM head; token_embd when the file has no output.weight (tied)
  // Norm weights and biases stored as f16 in a file are converted once and kept here (they are
  // tiny); f32 ones point into the mapping.
  std::vector<std::unique_ptr<float[]>> converted;
};

class Qwen2Model {
 public:
  // Throws FileError (cannot open) or FormatError (not a qwen2 GGUF, missing/misshapen tensor).
  static std::shared_ptr<Qwen2Model> load(const std::string& path);
  explicit Qwen2Model(std::shared_ptr<gguf::File> file);

  const Qwen2Config& config() const { return config_; }
  const Qwen2Weights& weights() const { return weights_; }
  const gguf::File& file() const { return *file_; }

  // out[n_embd] = row `token` of token_embd (InvalidArgument when outside the vocabulary).
  void token_embedding(int32_t token, float* out) const;

 private:
  std::shared_ptr<gguf::File> file_;
  Qwen2Config config_;
  Qwen2Weights weights_;
};

// Element type of the KV cache. F16 is the default (half the memory, as llama.cpp); F32 keeps the
// forward bit-for-bit in float32 for tests against transformers.
enum class KvType { F16, F32 };

struct Qwen2SessionParams {
  int64_t n_ctx = 4096;    // positions the KV cache holds
  int64_t n_batch = 512;   // prefill runs in chunks of at most this many positions
  KvType kv_type = KvType::F16;
};

// The input of one eval: n positions appended after the cache. Each position is a token id, or,
// at the positions listed in embd_pos (strictly increasing, in [0, n)), the matching row of
// `embd` instead (the image path: 64 resampler rows per slice replace the <unk> placeholders,
// spec §6.3). tokens[i] at those positions is ignored (may be any value, e.g. <unk>).
struct Qwen2Input {
  const int32_t* tokens = nullptr;
  int64_t n = 0;
  const float* embd = nullptr;        // n_embd_rows x n_embd
  const int32_t* embd_pos = nullptr;  // n_embd_rows positions
  int64_t n_embd_rows = 0;
};

class Qwen2Session {
 public:
  Qwen2Session(std::shared_ptr<const Qwen2Model> model, std::shared_ptr<ThreadPool> pool,
               const Qwen2SessionParams& params = {});
  ~Qwen2Session();
  Qwen2Session(const Qwen2Session&) = delete;
  Qwen2Session& operator=(const Qwen2Session&) = delete;

  const Qwen2Model& model() const { return *model_; }
  const Qwen2Config& config() const { return model_->config(); }
  int64_t n_ctx() const { return n_ctx_; }
  int64_t n_past() const { return n_past_; }  // positions in the cache; the next one gets RoPE position n_past

  // Runs the forward over the input, appending it to the cache. Returns the logits of the last
  // position (n_vocab floats, valid until the next eval). With all_logits, also writes the logits
  // of every position there (n x n_vocab). Validates everything first: on ContextOverflow or
  // InvalidArgument nothing has been written and the session is unchanged.
  const float* eval(const Qwen2Input& in, float* all_logits = nullptr);
  const float* eval(const int32_t* tokens, int64_t n, float* all_logits = nullptr);

  // One decode step of several sessions at once: token i is appended to sessions[i] (at RoPE
  // position sessions[i]->n_past()) and the logits after it are written to logits + i * n_vocab
  // (and kept as that session's last logits). The k rows go through every matrix together, so the
  // weights are read once per step instead of once per session (beam search: one pass for all
  // beams; more than sessions[0]->n_batch() sessions go in chunks of that many). The sessions must
  // be distinct and share the model, thread pool and KV type (InvalidArgument); each needs room for
  // one more position (ContextOverflow). Everything is validated before anything is written.
  static void eval_step(Qwen2Session* const* sessions, const int32_t* tokens, int64_t k, float* logits);

  // Forgets every position >= n (keeps the first n): rewind for multi-turn edits.
  void truncate(int64_t n);
  void reset() { truncate(0); }

 private:
  struct Scratch;
  void check(const Qwen2Input& in) const;
  void embed_chunk(const Qwen2Input& in, int64_t begin, int64_t n);
  // rows: null = the n rows are this session's next positions; else row i is the next position of
  // rows[i] (eval_step; this session's scratch holds the activations).
  void forward_chunk(int64_t n, float* logits, bool all_rows, Qwen2Session* const* rows = nullptr);
  void attention(int64_t layer, int64_t n, const float* q, float* out);
  void store_kv(int64_t layer, int64_t n, const float* k, const float* v);

  std::shared_ptr<const Qwen2Model> model_;
  std::shared_ptr<ThreadPool> pool_;
  int64_t n_ctx_ = 0;
  int64_t n_batch_ = 0;
  KvType kv_type_ = KvType::F16;
  int64_t n_past_ = 0;
  std::unique_ptr<Scratch> s_;

 public:
  int64_t n_batch() const { return n_batch_; }
  KvType kv_type() const { return kv_type_; }

  // Makes this cache hold what `other` holds (n_past becomes other.n_past()), copying only the
  // cached positions start .. other.n_past() - 1: beam search keeps one session per beam and the
  // prompt they share is copied once, not at every step. Positions before `start` must already be
  // the same in both (the caller's promise; start <= n_past() is checked). Both sessions must run
  // the same model with the same KV type, and `other` must fit in this n_ctx (InvalidArgument).
  void copy_from(const Qwen2Session& other, int64_t start = 0);
};

}  // namespace minicpmv
