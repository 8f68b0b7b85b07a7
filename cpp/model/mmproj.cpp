#include "model/mmproj.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <unordered_map>
#include <unordered_set>

#include "kernels/packed_q8.h"
#include "minicpmv/error.h"
#include "ops/fast_math.h"
#include "quant/quant.h"
#include "runtime/threadpool.h"

namespace minicpmv::model {
namespace {

using gguf::File;
using gguf::TensorInfo;

[[noreturn]] void fail(const File& f, const std::string& what) {
  throw FormatError(f.path() + ": " + what);
}

// A vector of n values in any dtype, as f32.
// A tensor read as f32 values must be of a type this engine dequantizes (f32, f16, bf16 and the
// block formats of quant/types.h), with whole blocks.
void check_dequantizable(const File& f, const TensorInfo& t, int64_t n) {
  const TypeTraits& tr = type_traits(t.type);
  if (!tr.supported || n % tr.block_size != 0)
    fail(f, "tensor '" + t.name + "' has type " + tr.name + ", which this engine cannot read as values");
}

std::vector<float> load_vector(const File& f, const std::string& name, int64_t n) {
  const TensorInfo& t = f.tensor(name, {n});
  check_dequantizable(f, t, n);
  std::vector<float> out(static_cast<size_t>(n));
  dequantize_row(t.type, t.data, out.data(), n);
  return out;
}

kernels::Weight view(const File& f, const TensorInfo& t, int64_t rows, int64_t cols) {
  try {
    return kernels::Weight::view(t.type, rows, cols, t.data);
  } catch (const InvalidArgument& e) {  // a dtype the kernels cannot multiply
    fail(f, "tensor '" + t.name + "': " + e.what());
  }
}

// A [rows x cols] matrix (PyTorch out x in; GGUF ne = [cols, rows]) viewed in place.
kernels::Weight load_matrix(const File& f, const std::string& name, int64_t rows, int64_t cols) {
  const TensorInfo& t = f.tensor(name, {cols, rows});
  return view(f, t, rows, cols);
}

std::string blk(int64_t i, const char* rest) { return "v.blk." + std::to_string(i) + "." + rest; }

void load_float3(const File& f, const std::string& key, std::array<float, 3>& out) {
  if (!f.has(key)) return;
  const std::vector<double> v = f.get_float_array(key);
  if (v.size() != 3) fail(f, "key '" + key + "' has " + std::to_string(v.size()) + " values, expected 3");
  for (int i = 0; i < 3; ++i) out[i] = static_cast<float>(v[i]);
}

}  // namespace

std::shared_ptr<Mmproj> Mmproj::load(const std::string& path) {
  auto m = std::shared_ptr<Mmproj>(new Mmproj());
  m->file_ = File::open(path);
  const File& f = *m->file_;

  const std::string arch = f.get_string("general.architecture");
  if (arch != "clip") fail(f, "general.architecture is '" + arch + "', expected 'clip' (an mmproj file)");
  if (!f.get_bool("clip.has_vision_encoder", true)) fail(f, "clip.has_vision_encoder is false");
  const std::string proj_type = f.get_string("clip.projector_type", "resampler");
  if (proj_type != "resampler")
    fail(f, "clip.projector_type is '" + proj_type + "', expected 'resampler' (MiniCPM-V)");
  m->minicpmv_version_ = f.get_int("clip.minicpmv_version", 0);

  // ---- vision tower config (spec 2.2) ----
  VisionConfig& vc = m->vision;
  vc.hidden = f.get_int("clip.vision.embedding_length");
  vc.intermediate = f.get_int("clip.vision.feed_forward_length");
  vc.n_layers = f.get_int("clip.vision.block_count");
  vc.n_heads = f.get_int("clip.vision.attention.head_count");
  vc.patch_size = f.get_int("clip.vision.patch_size", 14);
  vc.image_size = f.get_int("clip.vision.image_size", 448);
  vc.eps = static_cast<float>(f.get_float("clip.vision.attention.layer_norm_epsilon", 1e-6));
  load_float3(f, "clip.vision.image_mean", vc.image_mean);
  load_float3(f, "clip.vision.image_std", vc.image_std);
  if (vc.hidden <= 0 || vc.intermediate <= 0 || vc.n_layers <= 0 || vc.n_heads <= 0 || vc.patch_size <= 0)
    fail(f, "vision sizes must be positive (embedding_length, feed_forward_length, block_count, "
            "head_count, patch_size)");
  // Each block has 16 tensors: a count beyond what the file holds is corrupt (and must not size
  // an allocation).
  if (vc.n_layers > static_cast<int64_t>(f.tensors().size()) / 16 + 1)
    fail(f, "clip.vision.block_count " + std::to_string(vc.n_layers) + " is more than the file's " +
                std::to_string(f.tensors().size()) + " tensors can hold");
  if (vc.hidden % vc.n_heads != 0)
    fail(f, "clip.vision.embedding_length " + std::to_string(vc.hidden) +
                " is not a multiple of head_count " + std::to_string(vc.n_heads));
  vc.head_dim = vc.hidden / vc.n_heads;
  // llama.cpp's 2.6-era converter hard-codes clip.vision.block_count = 26 while writing all 27
  // blocks (its runtime then ran 26); HF runs every block of the checkpoint (spec 2.2), and the
  // later converter writes 27. So the blocks present in the file decide, not the key.
  m->declared_layers_ = vc.n_layers;
  while (f.find_tensor("v.blk." + std::to_string(vc.n_layers) + ".attn_q.weight") != nullptr) ++vc.n_layers;
  for (int i = 0; i < 3; ++i)
    if (!(vc.image_std[i] != 0.0f)) fail(f, "clip.vision.image_std has a zero entry");

  // ---- vision tower tensors (spec 9.3) ----
  VisionWeights& v = m->v;
  const int64_t H = vc.hidden, I = vc.intermediate, P = vc.patch_size;
  {
    const TensorInfo& t = f.tensor("v.patch_embd.weight", {P, P, 3, H});
    v.patch_embd = view(f, t, H, 3 * P * P);
  }
  v.patch_embd_b = load_vector(f, "v.patch_embd.bias", H);
  {
    const TensorInfo& t = f.tensor("v.position_embd.weight");
    const int64_t rows = t.rows();
    const int64_t side = static_cast<int64_t>(std::llround(std::sqrt(static_cast<double>(rows))));
    if (t.n_dims != 2 || t.ne[0] != H || side * side != rows || side == 0)
      fail(f, "tensor 'v.position_embd.weight' has shape " + t.shape_str() + ", expected [" +
                  std::to_string(H) + ", side*side] (a square table of positions)");
    vc.patches_per_side = side;
    v.position_embd = &t;
  }
  v.layers.resize(static_cast<size_t>(vc.n_layers));
  for (int64_t i = 0; i < vc.n_layers; ++i) {
    VisionLayerWeights& L = v.layers[static_cast<size_t>(i)];
    L.ln1_w = load_vector(f, blk(i, "ln1.weight"), H);
    L.ln1_b = load_vector(f, blk(i, "ln1.bias"), H);
    L.ln2_w = load_vector(f, blk(i, "ln2.weight"), H);
    L.ln2_b = load_vector(f, blk(i, "ln2.bias"), H);
    L.attn_q = load_matrix(f, blk(i, "attn_q.weight"), H, H);
    L.attn_k = load_matrix(f, blk(i, "attn_k.weight"), H, H);
    L.attn_v = load_matrix(f, blk(i, "attn_v.weight"), H, H);
    L.attn_out = load_matrix(f, blk(i, "attn_out.weight"), H, H);
    L.attn_q_b = load_vector(f, blk(i, "attn_q.bias"), H);
    L.attn_k_b = load_vector(f, blk(i, "attn_k.bias"), H);
    L.attn_v_b = load_vector(f, blk(i, "attn_v.bias"), H);
    L.attn_out_b = load_vector(f, blk(i, "attn_out.bias"), H);

    // The published files name fc1 (hidden -> intermediate) "ffn_down": decide by shape, as
    // llama.cpp does. When hidden == intermediate the shapes cannot tell; the converter's
    // (swapped) convention wins then.
    const TensorInfo& down = f.tensor(blk(i, "ffn_down.weight"));
    const TensorInfo& up = f.tensor(blk(i, "ffn_up.weight"));
    auto is = [](const TensorInfo& t, int64_t in, int64_t out) {
      return t.n_dims == 2 && t.ne[0] == in && t.ne[1] == out;
    };
    bool swapped;
    if (is(down, H, I) && is(up, I, H)) {
      swapped = true;
    } else if (is(up, H, I) && is(down, I, H)) {
      swapped = false;
    } else {
      fail(f, "tensors '" + blk(i, "ffn_up.weight") + "' " + up.shape_str() + " and '" +
                  blk(i, "ffn_down.weight") + "' " + down.shape_str() + " are not [" +
                  std::to_string(H) + ", " + std::to_string(I) + "] and [" + std::to_string(I) +
                  ", " + std::to_string(H) + "] in either order");
    }
    if (i == 0) m->ffn_swapped_ = swapped;
    const std::string fc1 = swapped ? "ffn_down" : "ffn_up";
    const std::string fc2 = swapped ? "ffn_up" : "ffn_down";
    L.ffn_fc1 = load_matrix(f, blk(i, (fc1 + ".weight").c_str()), I, H);
    L.ffn_fc2 = load_matrix(f, blk(i, (fc2 + ".weight").c_str()), H, I);
    L.ffn_fc1_b = load_vector(f, blk(i, (fc1 + ".bias").c_str()), I);
    L.ffn_fc2_b = load_vector(f, blk(i, (fc2 + ".bias").c_str()), H);
  }
  v.post_ln_w = load_vector(f, "v.post_ln.weight", H);
  v.post_ln_b = load_vector(f, "v.post_ln.bias", H);

  // ---- resampler (spec 2.3, 4) ----
  ResamplerConfig& rc = m->resampler;
  ResamplerWeights& r = m->r;
  {
    const TensorInfo& t = f.tensor("resampler.query");
    if (t.n_dims != 2 || t.ne[0] <= 0 || t.ne[1] <= 0)
      fail(f, "tensor 'resampler.query' has shape " + t.shape_str() + ", expected [embed_dim, query_num]");
    rc.embed_dim = t.ne[0];
    rc.query_num = t.ne[1];
    const int64_t q_key = f.get_int("clip.minicpmv_query_num", rc.query_num);
    if (q_key != rc.query_num)
      fail(f, "clip.minicpmv_query_num is " + std::to_string(q_key) + " but tensor 'resampler.query' has " +
                  std::to_string(rc.query_num) + " rows");
    if (rc.embed_dim % rc.head_dim != 0)
      fail(f, "resampler embed_dim " + std::to_string(rc.embed_dim) + " is not a multiple of 128");
    rc.n_heads = rc.embed_dim / rc.head_dim;
    rc.kv_dim = H;
    check_dequantizable(f, t, rc.embed_dim * rc.query_num);
    r.query.resize(static_cast<size_t>(rc.embed_dim * rc.query_num));
    dequantize_row(t.type, t.data, r.query.data(), rc.embed_dim * rc.query_num);
  }
  const int64_t D = rc.embed_dim;
  r.kv = load_matrix(f, "resampler.kv.weight", D, H);
  r.ln_q_w = load_vector(f, "resampler.ln_q.weight", D);
  r.ln_q_b = load_vector(f, "resampler.ln_q.bias", D);
  r.ln_kv_w = load_vector(f, "resampler.ln_kv.weight", D);
  r.ln_kv_b = load_vector(f, "resampler.ln_kv.bias", D);
  r.ln_post_w = load_vector(f, "resampler.ln_post.weight", D);
  r.ln_post_b = load_vector(f, "resampler.ln_post.bias", D);
  r.attn_q = load_matrix(f, "resampler.attn.q.weight", D, D);
  r.attn_k = load_matrix(f, "resampler.attn.k.weight", D, D);
  r.attn_v = load_matrix(f, "resampler.attn.v.weight", D, D);
  r.attn_out = load_matrix(f, "resampler.attn.out.weight", D, D);
  r.attn_q_b = load_vector(f, "resampler.attn.q.bias", D);
  r.attn_k_b = load_vector(f, "resampler.attn.k.bias", D);
  r.attn_v_b = load_vector(f, "resampler.attn.v.bias", D);
  r.attn_out_b = load_vector(f, "resampler.attn.out.bias", D);
  r.proj = load_matrix(f, "resampler.proj.weight", D, D);
  return m;
}

WeightFormat weight_format_from_name(const std::string& name) {
  if (name == "auto") return WeightFormat::Auto;
  if (name == "native") return WeightFormat::Native;
  if (name == "q8_0") return WeightFormat::Q8_0;
  throw InvalidArgument("weights='" + name + "': expected 'auto', 'native' or 'q8_0'");
}

const char* weight_format_name(WeightFormat f) {
  switch (f) {
    case WeightFormat::Auto: return "auto";
    case WeightFormat::Native: return "native";
    case WeightFormat::Q8_0: return "q8_0";
  }
  return "?";
}

std::vector<Mmproj::Matrix> Mmproj::matrices() {
  std::vector<Matrix> out;
  for (VisionLayerWeights& L : v.layers) {
    for (kernels::Weight* w : {&L.attn_q, &L.attn_k, &L.attn_v, &L.attn_out, &L.ffn_fc1}) out.push_back({w, false});
    out.push_back({&L.ffn_fc2, true});  // 4304 wide: the tower pads its input rows (siglip.cpp)
  }
  for (kernels::Weight* w : {&r.kv, &r.attn_q, &r.attn_k, &r.attn_v, &r.attn_out, &r.proj}) out.push_back({w, false});
  return out;
}

namespace {

bool float_type(DType t) { return t == DType::F32 || t == DType::F16 || t == DType::BF16; }

}  // namespace

WeightFormat Mmproj::resolve(WeightFormat requested) const {
  if (requested != WeightFormat::Auto) return requested;
  const kernels::Isa isa = kernels::active_isa();
  const bool fast_int8 = isa == kernels::Isa::Avx512 || isa == kernels::Isa::Dotprod || isa == kernels::Isa::I8mm;
  bool any_float = false;
  for (const VisionLayerWeights& L : v.layers)
    for (const kernels::Weight* w : {&L.attn_q, &L.attn_out, &L.ffn_fc1, &L.ffn_fc2}) any_float = any_float || float_type(w->type());
  any_float = any_float || float_type(r.attn_k.type());
  return fast_int8 && any_float ? WeightFormat::Q8_0 : WeightFormat::Native;
}

// Accuracy, relative RMS against the f32 path of the same weights (Q8_0 weights AND the int8
// activations the Q8_0 kernels use; gguf-py's own q8_0 files behave the same: same quantizer,
// bit-exact):
//   random weights at the real widths, 2 blocks, 32x32 slice (bench/bench_vision.py --accuracy):
//     tower output 1.2e-2, final [64, 3584] output 1.5e-2 (an f16 file on the f16 kernels:
//     3.7e-4 / 5.1e-4);
//   the tiny test model (tests/test_vision_perf.py): final output 4.5e-2 (its gain-2 resampler
//     amplifies input changes ~4x).
// The tower's error grows with depth; the real 27-block figure needs the real checkpoint.
int64_t Mmproj::convert_matrices_q8_0(ThreadPool& pool) {
  const File& f = *file_;
  std::unordered_map<const void*, const TensorInfo*> by_data;
  for (const TensorInfo& t : f.tensors()) by_data[t.data] = &t;
  const int64_t bs = type_traits(DType::Q8_0).block_size;
  std::vector<float> tmp;  // one matrix in f32 (at most 3584 x 3584: 51 MB)
  int64_t converted = 0;
  std::unordered_map<const void*, const void*> done;  // one source viewed twice: convert once
  for (const Matrix& m : matrices()) {
    kernels::Weight* w = m.weight;
    if (!float_type(w->type())) continue;
    const int64_t rows = w->rows(), cols = w->cols();
    const int64_t padded = (cols + bs - 1) / bs * bs;  // zero columns up to a whole block
    if (padded != cols && !m.may_pad) continue;
    const void* src = w->data();
    auto it = done.find(src);
    if (it == done.end()) {
      tmp.assign(static_cast<size_t>(rows * padded), 0.0f);
      const DType type = w->type();
      const size_t src_row = w->row_bytes();
      pool.parallel_for(rows, 16, [&](int64_t i0, int64_t i1) {
        for (int64_t i = i0; i < i1; ++i)
          dequantize_row(type, static_cast<const uint8_t*>(src) + src_row * static_cast<size_t>(i),
                         tmp.data() + i * padded, cols);
      });
      const size_t q_row = row_size(DType::Q8_0, padded);
      owned_.emplace_back(new uint8_t[q_row * static_cast<size_t>(rows)]);
      uint8_t* dst = owned_.back().get();
      // ops::quantize_q8_0_fast writes the bytes quantize_rows (and gguf-py) would, vectorized:
      // the libm-bound reference quantizer made the conversion ~4x slower.
      std::atomic<bool> non_finite{false};
      pool.parallel_for(rows, 16, [&](int64_t i0, int64_t i1) {
        for (int64_t i = i0; i < i1; ++i) {
          const float* row = tmp.data() + i * padded;
          uint32_t bad = 0;  // exponent all ones: inf or NaN (integer ops, so it vectorizes)
          for (int64_t j = 0; j < cols; ++j) {
            uint32_t u;
            std::memcpy(&u, row + j, sizeof(u));
            bad |= static_cast<uint32_t>((u & 0x7F800000u) == 0x7F800000u);
          }
          if (bad) non_finite.store(true, std::memory_order_relaxed);
          ops::quantize_q8_0_fast(row, dst + q_row * i, padded);
        }
      });
      auto t = by_data.find(src);
      if (non_finite.load())
        fail(f, "tensor '" + (t != by_data.end() ? t->second->name : std::string("?")) +
                    "' holds inf or NaN and cannot be converted to q8_0 (use weights='native')");
      it = done.emplace(src, owned_.back().get()).first;
      if (t != by_data.end()) f.advise_dontneed(*t->second);
    }
    *w = kernels::Weight::view(DType::Q8_0, rows, padded, it->second);
    ++converted;
  }
  if (converted > 0) format_ = WeightFormat::Q8_0;
  return converted;
}

int64_t Mmproj::pack_tower_q8_0(ThreadPool& pool) {
  if (kernels::active_isa() != kernels::Isa::Avx512) return 0;
  std::unordered_map<const void*, const TensorInfo*> by_data;
  for (const TensorInfo& t : file_->tensors()) by_data[t.data] = &t;
  std::vector<kernels::Weight*> ws;
  for (VisionLayerWeights& L : v.layers)
    for (kernels::Weight* w : {&L.attn_q, &L.attn_k, &L.attn_v, &L.attn_out, &L.ffn_fc1, &L.ffn_fc2}) ws.push_back(w);
  // the resampler's n-token projections: kv, and K / V (Resampler::use_fold declines to fold
  // weights that are not in rows, so their rows are never read)
  for (kernels::Weight* w : {&r.kv, &r.attn_k, &r.attn_v}) ws.push_back(w);
  int64_t packed = 0;
  for (kernels::Weight* w : ws) {
    if (w->empty() || w->type() != DType::Q8_0 || w->layout() != kernels::Layout::Rows) continue;
    const void* src = w->data();
    *w = kernels::packed::pack_q8_0(*w, pool);
    ++packed;
    auto t = by_data.find(src);
    if (t != by_data.end()) file_->advise_dontneed(*t->second);
  }
  std::unordered_set<const void*> used;  // converted copies no matrix reads any more are freed
  for (const Matrix& m : matrices()) used.insert(m.weight->data());
  owned_.erase(std::remove_if(owned_.begin(), owned_.end(),
                              [&](const std::unique_ptr<uint8_t[]>& p) { return used.count(p.get()) == 0; }),
               owned_.end());
  return packed;
}

}  // namespace minicpmv::model
