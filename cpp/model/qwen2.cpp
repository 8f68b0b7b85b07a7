#include "model/qwen2.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "gguf/gguf.h"
#include "kernels/attention.h"
#include "minicpmv/error.h"
#include "ops/fast_math.h"
#include "ops/ops.h"
#include "quant/f16.h"
#include "quant/quant.h"
#include "runtime/threadpool.h"

namespace minicpmv {

// ---------------------------------------------------------------------------------------------
// Config and weights

Qwen2Config Qwen2Config::from_gguf(const gguf::File& f) {
  const std::string arch = f.get_string("general.architecture");
  if (arch != "qwen2")
    throw FormatError(f.path() + ": expected general.architecture qwen2, found " + arch);

  Qwen2Config c;
  c.n_ctx_train = f.get_int("qwen2.context_length");
  c.n_embd = f.get_int("qwen2.embedding_length");
  c.n_ff = f.get_int("qwen2.feed_forward_length");
  c.n_layer = f.get_int("qwen2.block_count");
  c.n_head = f.get_int("qwen2.attention.head_count");
  c.n_head_kv = f.get_int("qwen2.attention.head_count_kv", c.n_head);
  c.rope_theta = f.get_float("qwen2.rope.freq_base", 10000.0);  // llama.cpp's default when absent
  c.rms_eps = static_cast<float>(f.get_float("qwen2.attention.layer_norm_rms_epsilon"));

  auto bad = [&](const std::string& what) { return FormatError(f.path() + ": " + what); };
  if (c.n_embd <= 0 || c.n_ff <= 0 || c.n_layer <= 0 || c.n_head <= 0 || c.n_head_kv <= 0)
    throw bad("qwen2 hyper-parameters must be positive (embedding_length " + std::to_string(c.n_embd) +
              ", feed_forward_length " + std::to_string(c.n_ff) + ", block_count " + std::to_string(c.n_layer) +
              ", head_count " + std::to_string(c.n_head) + ", head_count_kv " + std::to_string(c.n_head_kv) + ")");
  // Each block has 12 tensors: a corrupt block_count must fail here, not size the layer array.
  if (c.n_layer > static_cast<int64_t>(f.tensors().size()))
    throw bad("qwen2.block_count " + std::to_string(c.n_layer) + " is more than the " +
              std::to_string(f.tensors().size()) + " tensors in the file");
  if (c.n_embd % c.n_head != 0)
    throw bad("qwen2.embedding_length " + std::to_string(c.n_embd) + " is not a multiple of head_count " +
              std::to_string(c.n_head));
  c.head_dim = c.n_embd / c.n_head;
  if (c.head_dim % 2 != 0) throw bad("head dimension " + std::to_string(c.head_dim) + " must be even for RoPE");
  if (c.n_head % c.n_head_kv != 0)
    throw bad("qwen2.attention.head_count " + std::to_string(c.n_head) + " is not a multiple of head_count_kv " +
              std::to_string(c.n_head_kv));
  for (const char* key : {"qwen2.attention.key_length", "qwen2.attention.value_length"}) {
    if (f.has(key) && f.get_int(key) != c.head_dim)
      throw bad(std::string(key) + " " + std::to_string(f.get_int(key)) + " differs from embedding_length / head_count " +
                std::to_string(c.head_dim) + " (not supported)");
  }
  const std::string scaling = f.get_string("qwen2.rope.scaling.type", "none");
  if (scaling != "none") throw bad("qwen2.rope.scaling.type " + scaling + " is not supported");
  if (!(c.rope_theta > 0) || !(c.rms_eps > 0)) throw bad("qwen2.rope.freq_base and layer_norm_rms_epsilon must be > 0");

  const gguf::TensorInfo& embd = f.tensor("token_embd.weight");
  if (embd.n_dims != 2 || embd.ne[0] != c.n_embd)
    throw bad("tensor 'token_embd.weight' has shape " + embd.shape_str() + ", expected [" +
              std::to_string(c.n_embd) + ", n_vocab]");
  c.n_vocab = embd.ne[1];
  return c;
}

namespace {

// A 2-D weight [rows x cols] (GGUF ne = [cols, rows]) as a view into the mapping.
kernels::Weight matrix(const gguf::File& f, const std::string& name, int64_t rows, int64_t cols) {
  const gguf::TensorInfo& t = f.tensor(name, {cols, rows});
  if (!type_traits(t.type).supported)
    throw FormatError(f.path() + ": tensor '" + name + "' has type " + type_name(t.type) +
                      ", which this engine cannot multiply");
  return kernels::Weight::view(t.type, rows, cols, t.data);
}

// A 1-D f32 vector (norm weight, bias). f32 points into the mapping; f16/bf16 are converted once.
const float* vector(const gguf::File& f, const std::string& name, int64_t n, Qwen2Weights& w) {
  const gguf::TensorInfo& t = f.tensor(name, {n});
  if (t.type == DType::F32) return reinterpret_cast<const float*>(t.data);
  if (t.type != DType::F16 && t.type != DType::BF16)
    throw FormatError(f.path() + ": tensor '" + name + "' has type " + type_name(t.type) +
                      ", expected f32 (or f16/bf16)");
  std::unique_ptr<float[]> v(new float[n]);
  const uint16_t* src = reinterpret_cast<const uint16_t*>(t.data);
  for (int64_t i = 0; i < n; ++i) v[i] = t.type == DType::F16 ? fp16_to_fp32(src[i]) : bf16_to_fp32(src[i]);
  w.converted.push_back(std::move(v));
  return w.converted.back().get();
}

}  // namespace

std::shared_ptr<Qwen2Model> Qwen2Model::load(const std::string& path) {
  return std::make_shared<Qwen2Model>(gguf::File::open(path));
}

Qwen2Model::Qwen2Model(std::shared_ptr<gguf::File> file) : file_(std::move(file)) {
  const gguf::File& f = *file_;
  const Qwen2Config& c = config_ = Qwen2Config::from_gguf(f);
  Qwen2Weights& w = weights_;

  w.token_embd = &f.tensor("token_embd.weight", {c.n_embd, c.n_vocab});
  if (!type_traits(w.token_embd->type).supported)
    throw FormatError(f.path() + ": tensor 'token_embd.weight' has unsupported type " + type_name(w.token_embd->type));
  w.layers.resize(c.n_layer);
  for (int64_t l = 0; l < c.n_layer; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    Qwen2Layer& L = w.layers[l];
    L.attn_norm = vector(f, p + "attn_norm.weight", c.n_embd, w);
    L.attn_q = matrix(f, p + "attn_q.weight", c.n_embd, c.n_embd);
    L.attn_k = matrix(f, p + "attn_k.weight", c.kv_dim(), c.n_embd);
    L.attn_v = matrix(f, p + "attn_v.weight", c.kv_dim(), c.n_embd);
    L.attn_q_bias = vector(f, p + "attn_q.bias", c.n_embd, w);
    L.attn_k_bias = vector(f, p + "attn_k.bias", c.kv_dim(), w);
    L.attn_v_bias = vector(f, p + "attn_v.bias", c.kv_dim(), w);
    L.attn_output = matrix(f, p + "attn_output.weight", c.n_embd, c.n_embd);
    L.ffn_norm = vector(f, p + "ffn_norm.weight", c.n_embd, w);
    L.ffn_gate = matrix(f, p + "ffn_gate.weight", c.n_ff, c.n_embd);
    L.ffn_up = matrix(f, p + "ffn_up.weight", c.n_ff, c.n_embd);
    L.ffn_down = matrix(f, p + "ffn_down.weight", c.n_embd, c.n_ff);
  }
  w.output_norm = vector(f, "output_norm.weight", c.n_embd, w);
  // MiniCPM-V 2.6 has an untied LM head; a file without one reuses the embedding (tied weights).
  w.output = matrix(f, f.find_tensor("output.weight") ? "output.weight" : "token_embd.weight", c.n_vocab, c.n_embd);
}

void Qwen2Model::token_embedding(int32_t token, float* out) const {
  if (token < 0 || token >= config_.n_vocab)
    throw InvalidArgument("token id " + std::to_string(token) + " is outside the vocabulary (n_vocab " +
                          std::to_string(config_.n_vocab) + ")");
  const gguf::TensorInfo& t = *weights_.token_embd;
  const size_t row_bytes = row_size(t.type, config_.n_embd);
  dequantize_row(t.type, t.data + static_cast<size_t>(token) * row_bytes, out, config_.n_embd);
}

// ---------------------------------------------------------------------------------------------
// Session: run state

struct Qwen2Session::Scratch {
  // Activations of one chunk of up to n_batch positions, row-major.
  std::vector<float> x;     // [n_batch x n_embd] residual stream
  std::vector<float> xb;    // [n_batch x n_embd] normed input of a block, then its output
  std::vector<float> q;     // [n_batch x n_embd]
  std::vector<float> k, v;  // [n_batch x kv_dim]
  std::vector<float> att;   // [n_batch x n_embd] attention output, heads concatenated
  std::vector<float> hb, hb2;  // [n_batch x n_ff]
  std::vector<float> rope;     // [n_ctx x head_dim] (cos, sin) pairs per position
  std::vector<float> logits;   // [n_vocab] last position
  // KV cache [n_layer][n_head_kv][n_ctx][head_dim], f16 or f32. Head-major: the attention of one
  // KV head reads one contiguous run (decode from DRAM: ~35% faster than the heads of a position
  // side by side, bench/cpp/bench_attention.cpp). Allocated without zeroing: pages are touched
  // only as positions are written.
  std::unique_ptr<uint16_t[]> k_f16, v_f16;
  std::unique_ptr<float[]> k_f32, v_f32;
};

Qwen2Session::Qwen2Session(std::shared_ptr<const Qwen2Model> model, std::shared_ptr<ThreadPool> pool,
                           const Qwen2SessionParams& params)
    : model_(std::move(model)), pool_(std::move(pool)), kv_type_(params.kv_type), s_(new Scratch) {
  if (!model_ || !pool_) throw InvalidArgument("Qwen2Session: model and thread pool are required");
  if (params.n_ctx <= 0) throw InvalidArgument("n_ctx must be > 0, got " + std::to_string(params.n_ctx));
  if (params.n_batch <= 0) throw InvalidArgument("n_batch must be > 0, got " + std::to_string(params.n_batch));
  const Qwen2Config& c = config();
  n_ctx_ = params.n_ctx;
  n_batch_ = std::min(params.n_batch, n_ctx_);

  Scratch& s = *s_;
  s.x.resize(n_batch_ * c.n_embd);
  s.xb.resize(n_batch_ * c.n_embd);
  s.q.resize(n_batch_ * c.n_embd);
  s.k.resize(n_batch_ * c.kv_dim());
  s.v.resize(n_batch_ * c.kv_dim());
  s.att.resize(n_batch_ * c.n_embd);
  s.hb.resize(n_batch_ * c.n_ff);
  s.hb2.resize(n_batch_ * c.n_ff);
  s.logits.resize(c.n_vocab);
  s.rope.resize(n_ctx_ * c.head_dim);
  for (int64_t p = 0; p < n_ctx_; ++p) ops::rope_cache(&s.rope[p * c.head_dim], p, c.head_dim, c.rope_theta);

  const size_t cache = static_cast<size_t>(c.n_layer) * n_ctx_ * c.kv_dim();
  if (kv_type_ == KvType::F16) {
    s.k_f16.reset(new uint16_t[cache]);
    s.v_f16.reset(new uint16_t[cache]);
  } else {
    s.k_f32.reset(new float[cache]);
    s.v_f32.reset(new float[cache]);
  }
}

Qwen2Session::~Qwen2Session() = default;

void Qwen2Session::truncate(int64_t n) {
  if (n < 0 || n > n_past_)
    throw InvalidArgument("truncate(" + std::to_string(n) + "): the cache holds " + std::to_string(n_past_) +
                          " positions");
  n_past_ = n;
}

// ---------------------------------------------------------------------------------------------
// Forward

void Qwen2Session::check(const Qwen2Input& in) const {
  if (in.n <= 0) throw InvalidArgument("eval: empty input");
  if (n_past_ + in.n > n_ctx_)
    throw ContextOverflow("prompt of " + std::to_string(in.n) + " tokens does not fit: " + std::to_string(n_past_) +
                          " in cache + " + std::to_string(in.n) + " > n_ctx " + std::to_string(n_ctx_));
  if (in.n_embd_rows < 0 || in.n_embd_rows > in.n || (in.n_embd_rows > 0 && (!in.embd || !in.embd_pos)))
    throw InvalidArgument("eval: " + std::to_string(in.n_embd_rows) + " embedding rows for " + std::to_string(in.n) +
                          " positions (rows and positions must be given)");
  for (int64_t j = 0; j < in.n_embd_rows; ++j) {
    const int32_t p = in.embd_pos[j];
    if (p < 0 || p >= in.n || (j > 0 && p <= in.embd_pos[j - 1]))
      throw InvalidArgument("eval: embedding position " + std::to_string(p) + " (row " + std::to_string(j) +
                            ") must be in [0, " + std::to_string(in.n) + ") and increasing");
  }
  if (in.n_embd_rows == in.n) return;
  if (!in.tokens) throw InvalidArgument("eval: tokens are required");
  const int64_t n_vocab = config().n_vocab;
  int64_t j = 0;
  for (int64_t i = 0; i < in.n; ++i) {
    if (j < in.n_embd_rows && in.embd_pos[j] == i) {
      ++j;
      continue;
    }
    if (in.tokens[i] < 0 || in.tokens[i] >= n_vocab)
      throw InvalidArgument("eval: token id " + std::to_string(in.tokens[i]) + " at position " + std::to_string(i) +
                            " is outside the vocabulary (n_vocab " + std::to_string(n_vocab) + ")");
  }
}

const float* Qwen2Session::eval(const int32_t* tokens, int64_t n, float* all_logits) {
  Qwen2Input in;
  in.tokens = tokens;
  in.n = n;
  return eval(in, all_logits);
}

const float* Qwen2Session::eval(const Qwen2Input& in, float* all_logits) {
  check(in);
  const int64_t n_vocab = config().n_vocab;
  for (int64_t begin = 0; begin < in.n; begin += n_batch_) {
    const int64_t n = std::min(n_batch_, in.n - begin);
    const bool last_chunk = begin + n == in.n;
    embed_chunk(in, begin, n);
    if (all_logits) {
      forward_chunk(n, all_logits + begin * n_vocab, true);
    } else {
      // Only the last position's logits are needed: the LM head (n_vocab x n_embd) is skipped
      // for every other position.
      forward_chunk(n, last_chunk ? s_->logits.data() : nullptr, false);
    }
  }
  if (all_logits) std::memcpy(s_->logits.data(), all_logits + (in.n - 1) * n_vocab, n_vocab * sizeof(float));
  return s_->logits.data();
}

void Qwen2Session::eval_step(Qwen2Session* const* ss, const int32_t* tokens, int64_t k, float* logits) {
  if (!ss || !tokens || !logits || k <= 0) throw InvalidArgument("eval_step: no sessions, tokens or logits given");
  Qwen2Session* lead = ss[0];
  if (!lead) throw InvalidArgument("eval_step: session 0 is null");
  const int64_t n_vocab = lead->config().n_vocab, d = lead->config().n_embd;
  for (int64_t i = 0; i < k; ++i) {
    const Qwen2Session* si = ss[i];
    const std::string at = "eval_step: session " + std::to_string(i);
    if (!si) throw InvalidArgument(at + " is null");
    if (si->model_ != lead->model_ || si->pool_ != lead->pool_ || si->kv_type_ != lead->kv_type_)
      throw InvalidArgument(at + " does not share session 0's model, thread pool and KV type");
    for (int64_t j = 0; j < i; ++j)
      if (ss[j] == si) throw InvalidArgument(at + " is session " + std::to_string(j) + " again");
    if (si->n_past_ + 1 > si->n_ctx_)
      throw ContextOverflow(at + " is full: " + std::to_string(si->n_past_) + " positions, n_ctx " +
                            std::to_string(si->n_ctx_));
    if (tokens[i] < 0 || tokens[i] >= n_vocab)
      throw InvalidArgument(at + ": token id " + std::to_string(tokens[i]) + " is outside the vocabulary (n_vocab " +
                            std::to_string(n_vocab) + ")");
  }
  // in chunks of the lead's n_batch rows (its scratch holds the activations of one chunk)
  for (int64_t c0 = 0; c0 < k; c0 += lead->n_batch_) {
    const int64_t m = std::min(lead->n_batch_, k - c0);
    for (int64_t i = 0; i < m; ++i) lead->model_->token_embedding(tokens[c0 + i], &lead->s_->x[i * d]);
    lead->forward_chunk(m, logits + c0 * n_vocab, true, ss + c0);
  }
  for (int64_t i = 0; i < k; ++i)
    std::memcpy(ss[i]->s_->logits.data(), logits + i * n_vocab, static_cast<size_t>(n_vocab) * sizeof(float));
}

// x[i] = embedding of input position begin + i (a token row or a given embedding row).
void Qwen2Session::embed_chunk(const Qwen2Input& in, int64_t begin, int64_t n) {
  const int64_t d = config().n_embd;
  const int32_t* pos_end = in.embd_pos + in.n_embd_rows;
  const int32_t* next = in.n_embd_rows ? std::lower_bound(in.embd_pos, pos_end, begin) : nullptr;
  for (int64_t i = 0; i < n; ++i) {
    float* row = &s_->x[i * d];
    if (next && next != pos_end && *next == begin + i) {
      std::memcpy(row, in.embd + (next - in.embd_pos) * d, d * sizeof(float));
      ++next;
    } else {
      model_->token_embedding(in.tokens[begin + i], row);
    }
  }
}

namespace {

// gate = silu(gate) * up over n rows of n_ff. Row-parallel in prefill: with n_ff 18944 and 512
// rows that is ~10M exp() per layer, worth spreading; a single decode row runs inline.
void swiglu(ThreadPool& pool, float* gate, const float* up, int64_t n, int64_t n_ff) {
  auto rows = [&](int64_t begin, int64_t end) {
    ops::swiglu_fast(gate + begin * n_ff, up + begin * n_ff, (end - begin) * n_ff);
  };
  if (n == 1) rows(0, 1);
  else pool.parallel_for(n, 1, rows);
}

}  // namespace

// The decoder over the n positions in s.x (RoPE positions n_past .. n_past + n - 1); then the
// final norm and LM head for the last row (all_rows: every row) into `logits` unless null.
void Qwen2Session::forward_chunk(int64_t n, float* logits, bool all_rows, Qwen2Session* const* rows) {
  const Qwen2Config& c = config();
  const Qwen2Weights& w = model_->weights();
  Scratch& s = *s_;
  ThreadPool& pool = *pool_;
  const int64_t d = c.n_embd, kvd = c.kv_dim(), hd = c.head_dim;

  for (int64_t l = 0; l < c.n_layer; ++l) {
    const Qwen2Layer& L = w.layers[l];

    // attention block: x += attn_output(attention(rope(q), rope(k), v)), q/k/v = W norm(x) + b
    for (int64_t i = 0; i < n; ++i) ops::rms_norm(&s.x[i * d], L.attn_norm, &s.xb[i * d], d, c.rms_eps);
    // q, k and v read the same normed input: one fused product (one activation quantization,
    // one pool job), bit-identical to three matmul calls.
    const kernels::MatmulOut qkv[3] = {{&L.attn_q, s.q.data()}, {&L.attn_k, s.k.data()}, {&L.attn_v, s.v.data()}};
    kernels::matmul_multi(qkv, 3, s.xb.data(), n, pool);
    ops::add_bias(s.q.data(), L.attn_q_bias, n, d);
    ops::add_bias(s.k.data(), L.attn_k_bias, n, kvd);
    ops::add_bias(s.v.data(), L.attn_v_bias, n, kvd);
    for (int64_t i = 0; i < n; ++i) {
      const float* cos_sin = rows ? &rows[i]->s_->rope[rows[i]->n_past_ * hd] : &s.rope[(n_past_ + i) * hd];
      ops::rope_neox(&s.q[i * d], c.n_head, hd, cos_sin);
      ops::rope_neox(&s.k[i * kvd], c.n_head_kv, hd, cos_sin);
    }
    if (!rows) {
      store_kv(l, n, s.k.data(), s.v.data());
      attention(l, n, s.q.data(), s.att.data());
    } else {  // each row against its own session's cache
      for (int64_t i = 0; i < n; ++i) {
        rows[i]->store_kv(l, 1, &s.k[i * kvd], &s.v[i * kvd]);
        rows[i]->attention(l, 1, &s.q[i * d], &s.att[i * d]);
      }
    }
    kernels::matmul(L.attn_output, s.att.data(), n, s.xb.data(), pool);
    ops::add(s.x.data(), s.xb.data(), n * d);

    // feed-forward block: x += ffn_down(silu(ffn_gate(norm(x))) * ffn_up(norm(x)))
    for (int64_t i = 0; i < n; ++i) ops::rms_norm(&s.x[i * d], L.ffn_norm, &s.xb[i * d], d, c.rms_eps);
    const kernels::MatmulOut gate_up[2] = {{&L.ffn_gate, s.hb.data()}, {&L.ffn_up, s.hb2.data()}};
    kernels::matmul_multi(gate_up, 2, s.xb.data(), n, pool);
    swiglu(pool, s.hb.data(), s.hb2.data(), n, c.n_ff);
    kernels::matmul(L.ffn_down, s.hb.data(), n, s.xb.data(), pool);
    ops::add(s.x.data(), s.xb.data(), n * d);
  }
  if (!rows) {
    n_past_ += n;
  } else {
    for (int64_t i = 0; i < n; ++i) ++rows[i]->n_past_;
  }

  if (!logits) return;
  const int64_t first = all_rows ? 0 : n - 1;
  for (int64_t i = first; i < n; ++i) ops::rms_norm(&s.x[i * d], w.output_norm, &s.xb[i * d], d, c.rms_eps);
  kernels::matmul(w.output, &s.xb[first * d], n - first, logits, pool);
}

// Writes n k and v rows (kv_dim floats apart) into the cache at positions n_past .. n_past + n - 1.
void Qwen2Session::store_kv(int64_t layer, int64_t n, const float* k_rows, const float* v_rows) {
  const Qwen2Config& c = config();
  const int64_t kvd = c.kv_dim(), hd = c.head_dim;
  Scratch& s = *s_;
  for (int64_t g = 0; g < c.n_head_kv; ++g) {
    const size_t at = ((static_cast<size_t>(layer) * c.n_head_kv + g) * n_ctx_ + n_past_) * hd;
    for (int64_t i = 0; i < n; ++i) {
      const float* k = &k_rows[i * kvd + g * hd];
      const float* v = &v_rows[i * kvd + g * hd];
      if (kv_type_ == KvType::F32) {
        std::memcpy(&s.k_f32[at + i * hd], k, hd * sizeof(float));
        std::memcpy(&s.v_f32[at + i * hd], v, hd * sizeof(float));
      } else {
        kernels::fp32_to_fp16_row(k, &s.k_f16[at + i * hd], hd);
        kernels::fp32_to_fp16_row(v, &s.v_f16[at + i * hd], hd);
      }
    }
  }
}

// Causal grouped-query attention of the chunk's queries (s.q, already rotated) against the cache,
// which already holds this chunk's keys and values: query i (position n_past + i) sees positions
// 0 .. n_past + i; query head h reads KV head h / (n_head / n_head_kv). kernels/attention.h
// threads it over (KV head, block of query positions) and converts each cached row once per block.
void Qwen2Session::attention(int64_t layer, int64_t n, const float* q, float* out) {
  const Qwen2Config& c = config();
  Scratch& s = *s_;
  const size_t layer_at = static_cast<size_t>(layer) * n_ctx_ * c.kv_dim();
  kernels::GqaArgs a;
  a.q = q;
  a.q_stride = c.n_embd;
  a.out = out;
  a.out_stride = c.n_embd;
  if (kv_type_ == KvType::F16) {
    a.k = &s.k_f16[layer_at], a.v = &s.v_f16[layer_at], a.kv_type = DType::F16;
  } else {
    a.k = &s.k_f32[layer_at], a.v = &s.v_f32[layer_at], a.kv_type = DType::F32;
  }
  a.kv_stride = c.head_dim;
  a.kv_head_stride = n_ctx_ * c.head_dim;
  a.n_q = n;
  a.n_past = n_past_;
  a.n_head = c.n_head;
  a.n_head_kv = c.n_head_kv;
  a.head_dim = c.head_dim;
  a.scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
  kernels::gqa_attention(a, *pool_);
}

// ---------------------------------------------------------------------------------------------
// Copying a cache (beam search)

void Qwen2Session::copy_from(const Qwen2Session& other, int64_t start) {
  if (&other == this) throw InvalidArgument("copy_from: a session cannot copy itself");
  if (other.model_ != model_) throw InvalidArgument("copy_from: the sessions run different models");
  if (other.kv_type_ != kv_type_) throw InvalidArgument("copy_from: the sessions have different KV cache types");
  if (other.n_past_ > n_ctx_)
    throw InvalidArgument("copy_from: the source holds " + std::to_string(other.n_past_) +
                          " positions, more than this n_ctx " + std::to_string(n_ctx_));
  if (start < 0 || start > n_past_ || start > other.n_past_)
    throw InvalidArgument("copy_from: start " + std::to_string(start) + " must be in [0, min(" +
                          std::to_string(n_past_) + ", " + std::to_string(other.n_past_) + ")]");
  const Qwen2Config& c = config();
  const size_t n = static_cast<size_t>(other.n_past_ - start) * c.head_dim;
  for (int64_t lh = 0; lh < c.n_layer * c.n_head_kv; ++lh) {  // every (layer, KV head) run
    // Each session lays its cache out with its own n_ctx: offsets differ when the n_ctx do.
    const size_t src = (static_cast<size_t>(lh) * other.n_ctx_ + start) * c.head_dim;
    const size_t dst = (static_cast<size_t>(lh) * n_ctx_ + start) * c.head_dim;
    if (kv_type_ == KvType::F32) {
      std::memcpy(&s_->k_f32[dst], &other.s_->k_f32[src], n * sizeof(float));
      std::memcpy(&s_->v_f32[dst], &other.s_->v_f32[src], n * sizeof(float));
    } else {
      std::memcpy(&s_->k_f16[dst], &other.s_->k_f16[src], n * sizeof(uint16_t));
      std::memcpy(&s_->v_f16[dst], &other.s_->v_f16[src], n * sizeof(uint16_t));
    }
  }
  n_past_ = other.n_past_;
}

}  // namespace minicpmv
