// _core.LLM: the Qwen2 language model and one session (KV cache) over it.
#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cstring>
#include <mutex>

#include "bindings/bindings.h"
#include "minicpmv/error.h"
#include "model/qwen2.h"
#include "runtime/threadpool.h"

namespace minicpmv::py {
namespace {

using I32Array = pyb::array_t<int32_t, pyb::array::c_style | pyb::array::forcecast>;
using F32Array = pyb::array_t<float, pyb::array::c_style | pyb::array::forcecast>;

struct LLM {
  std::shared_ptr<Qwen2Model> model;
  std::shared_ptr<ThreadPool> pool;
  std::unique_ptr<Qwen2Session> session;
  std::mutex mu;  // one eval at a time: the GIL is released while it runs

  LLM(const std::string& path, int64_t n_ctx, int n_threads, int64_t n_batch, const std::string& kv_type) {
    Qwen2SessionParams p;
    p.n_ctx = n_ctx;
    p.n_batch = n_batch;
    if (kv_type == "f16") p.kv_type = KvType::F16;
    else if (kv_type == "f32") p.kv_type = KvType::F32;
    else throw InvalidArgument("kv_type must be 'f16' or 'f32', got '" + kv_type + "'");
    model = Qwen2Model::load(path);
    pool = std::make_shared<ThreadPool>(n_threads);
    session = std::make_unique<Qwen2Session>(model, pool, p);
  }

  pyb::array_t<float> eval(const int32_t* tokens, int64_t n, const float* embd, const int32_t* embd_pos,
                           int64_t n_rows, bool all_logits) {
    const int64_t n_vocab = model->config().n_vocab;
    Qwen2Input in;
    in.tokens = tokens;
    in.n = n;
    in.embd = embd;
    in.embd_pos = embd_pos;
    in.n_embd_rows = n_rows;
    pyb::array_t<float> out = all_logits ? pyb::array_t<float>({n, n_vocab}) : pyb::array_t<float>(n_vocab);
    float* dst = out.mutable_data();
    {
      pyb::gil_scoped_release release;
      std::lock_guard<std::mutex> lock(mu);
      const float* last = session->eval(in, all_logits ? dst : nullptr);
      if (!all_logits) std::memcpy(dst, last, n_vocab * sizeof(float));
    }
    return out;
  }

  // A second LLM over the same loaded weights (no second mapping) and thread pool, with its own
  // session holding a copy of this cache (beam search: one session per beam).
  LLM(std::shared_ptr<Qwen2Model> m, std::shared_ptr<ThreadPool> p, const Qwen2SessionParams& params)
      : model(std::move(m)), pool(std::move(p)), session(std::make_unique<Qwen2Session>(model, pool, params)) {}

  std::unique_ptr<LLM> fork() {
    std::lock_guard<std::mutex> lock(mu);
    Qwen2SessionParams p;
    p.n_ctx = session->n_ctx();
    p.n_batch = session->n_batch();
    p.kv_type = session->kv_type();
    auto out = std::make_unique<LLM>(model, pool, p);
    out->session->copy_from(*session);
    return out;
  }

  void copy_from(LLM& other, int64_t start) {
    if (&other == this) throw InvalidArgument("LLM.copy_from: an LLM cannot copy itself");
    std::scoped_lock lock(mu, other.mu);
    session->copy_from(*other.session, start);
  }
};

I32Array tokens_1d(const I32Array& t) {
  if (t.ndim() != 1) throw InvalidArgument("tokens must be a 1-D sequence of ints, got " + std::to_string(t.ndim()) + " dims");
  return t;
}

}  // namespace

void bind_model(pyb::module_& m) {
  pyb::class_<LLM>(m, "LLM", "Qwen2 language model (GGUF, arch qwen2) with one KV-cache session.")
      .def(pyb::init<const std::string&, int64_t, int, int64_t, const std::string&>(), pyb::arg("path"),
           pyb::arg("n_ctx") = 4096, pyb::arg("n_threads") = 0, pyb::arg("n_batch") = 512,
           pyb::arg("kv_type") = "f16")
      .def_property_readonly("n_vocab", [](const LLM& s) { return s.model->config().n_vocab; })
      .def_property_readonly("n_embd", [](const LLM& s) { return s.model->config().n_embd; })
      .def_property_readonly("n_ctx", [](const LLM& s) { return s.session->n_ctx(); })
      .def_property_readonly("n_past", [](const LLM& s) { return s.session->n_past(); })
      .def_property_readonly("n_threads", [](const LLM& s) { return s.pool->size(); })
      .def_property_readonly("config", [](const LLM& s) {
        const Qwen2Config& c = s.model->config();
        pyb::dict d;
        d["n_vocab"] = c.n_vocab;
        d["n_ctx_train"] = c.n_ctx_train;
        d["n_embd"] = c.n_embd;
        d["n_ff"] = c.n_ff;
        d["n_layer"] = c.n_layer;
        d["n_head"] = c.n_head;
        d["n_head_kv"] = c.n_head_kv;
        d["head_dim"] = c.head_dim;
        d["rope_theta"] = c.rope_theta;
        d["rms_eps"] = c.rms_eps;
        return d;
      })
      .def(
          "eval",
          [](LLM& s, const I32Array& tokens, bool all_logits) {
            I32Array t = tokens_1d(tokens);
            return s.eval(t.data(), t.shape(0), nullptr, nullptr, 0, all_logits);
          },
          pyb::arg("tokens"), pyb::arg("all_logits") = false,
          "Appends the tokens to the cache; returns float32 logits of the last position [n_vocab], "
          "or of every position [n, n_vocab] with all_logits.")
      .def(
          "eval_mixed",
          [](LLM& s, const I32Array& tokens, const F32Array& embeddings, const I32Array& positions, bool all_logits) {
            I32Array t = tokens_1d(tokens);
            const int64_t d = s.model->config().n_embd;
            if (embeddings.ndim() != 2 || embeddings.shape(1) != d)
              throw InvalidArgument("embeddings must be float32 [m, " + std::to_string(d) + "]");
            if (positions.ndim() != 1 || positions.shape(0) != embeddings.shape(0))
              throw InvalidArgument("positions must be 1-D with one entry per embedding row (" +
                                    std::to_string(embeddings.shape(0)) + ")");
            return s.eval(t.data(), t.shape(0), embeddings.data(), positions.data(), embeddings.shape(0), all_logits);
          },
          pyb::arg("tokens"), pyb::arg("embeddings"), pyb::arg("positions"), pyb::arg("all_logits") = false,
          "As eval, but the rows of `embeddings` replace the token embeddings at `positions` "
          "(increasing indices into tokens; the tokens there, e.g. <unk>, are ignored).")
      .def(
          "token_embedding",
          [](const LLM& s, const I32Array& ids) {
            I32Array t = tokens_1d(ids);
            const int64_t n = t.shape(0), d = s.model->config().n_embd;
            pyb::array_t<float> out({n, d});
            for (int64_t i = 0; i < n; ++i) s.model->token_embedding(t.data()[i], out.mutable_data() + i * d);
            return out;
          },
          pyb::arg("ids"), "Rows of token_embd as float32 [n, n_embd].")
      .def("reset", [](LLM& s) { std::lock_guard<std::mutex> lock(s.mu); s.session->reset(); })
      .def("truncate", [](LLM& s, int64_t n) { std::lock_guard<std::mutex> lock(s.mu); s.session->truncate(n); },
           pyb::arg("n"), "Keeps the first n positions of the cache.")
      .def("fork", &LLM::fork,
           "A new LLM sharing this one's weights and thread pool, with its own KV cache holding a copy "
           "of this one's (same n_ctx, n_batch, kv_type). An LLM and its forks may eval from different "
           "threads; they share the thread pool, which runs one eval's jobs at a time.")
      .def_static(
          "eval_step",
          [](const std::vector<LLM*>& llms, const I32Array& tokens) {
            I32Array t = tokens_1d(tokens);
            const int64_t k = static_cast<int64_t>(llms.size());
            if (k == 0) throw InvalidArgument("eval_step: no LLMs given");
            if (t.shape(0) != k)
              throw InvalidArgument("eval_step: " + std::to_string(t.shape(0)) + " tokens for " + std::to_string(k) +
                                    " LLMs (one each)");
            std::vector<Qwen2Session*> ss;
            for (LLM* l : llms) {
              if (!l) throw InvalidArgument("eval_step: None in the LLM list");
              ss.push_back(l->session.get());
            }
            // every LLM's lock, in address order (no deadlock against another eval_step); a
            // repeated LLM is rejected by Qwen2Session::eval_step before it could lock twice
            std::vector<LLM*> order(llms);
            std::sort(order.begin(), order.end());
            if (std::adjacent_find(order.begin(), order.end()) != order.end())
              throw InvalidArgument("eval_step: the same LLM appears twice");
            const int64_t n_vocab = llms[0]->model->config().n_vocab;
            pyb::array_t<float> out({k, n_vocab});
            float* dst = out.mutable_data();
            {
              pyb::gil_scoped_release release;
              std::vector<std::unique_lock<std::mutex>> locks;
              for (LLM* l : order) locks.emplace_back(l->mu);
              Qwen2Session::eval_step(ss.data(), t.data(), k, dst);
            }
            return out;
          },
          pyb::arg("llms"), pyb::arg("tokens"),
          "One decode step of several LLMs of the same loaded model (fork()s): tokens[i] is appended "
          "to llms[i]; returns float32 logits [k, n_vocab]. The weights are read once for all k rows "
          "(beam search), the caches stay separate.")
      .def("copy_from", &LLM::copy_from, pyb::arg("other"), pyb::arg("start") = 0,
           "Makes this cache hold what `other` holds, copying positions start .. other.n_past - 1 "
           "(the first `start` positions must already be the same in both). Both must come from the "
           "same loaded model (fork()).");
}

}  // namespace minicpmv::py
