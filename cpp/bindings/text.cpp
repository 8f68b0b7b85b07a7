// _core.Tokenizer, _core.Detokenizer, _core.Sampler: the text layer seen from Python.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <memory>
#include <string>
#include <vector>

#include "bindings/bindings.h"
#include "gguf/gguf.h"
#include "minicpmv/error.h"
#include "text/sampler.h"
#include "text/tokenizer.h"
#include "text/unicode.h"

namespace minicpmv::py {
namespace {

using text::Detokenizer;
using text::Sampler;
using text::SamplerParams;
using text::Tokenizer;
namespace unicode = text::unicode;
using I32Array = pyb::array_t<int32_t, pyb::array::c_style | pyb::array::forcecast>;
using F32Array = pyb::array_t<float, pyb::array::c_style | pyb::array::forcecast>;

// str is encoded as UTF-8 (lone surrogates are an error), bytes are taken as they are.
std::string text_arg(const pyb::object& o) {
  if (pyb::isinstance<pyb::bytes>(o)) return o.cast<std::string>();
  if (pyb::isinstance<pyb::str>(o)) return o.cast<std::string>();
  throw InvalidArgument("expected str or bytes, got " + std::string(pyb::str(pyb::type::handle_of(o).attr("__name__"))));
}

pyb::str to_str_replace(const std::string& s) {
  PyObject* o = PyUnicode_DecodeUTF8(s.data(), static_cast<Py_ssize_t>(s.size()), "replace");
  if (!o) throw pyb::error_already_set();
  return pyb::reinterpret_steal<pyb::str>(o);
}

const int32_t* prev_ptr(const I32Array& a, size_t* n) {
  *n = static_cast<size_t>(a.size());
  return a.data();
}

}  // namespace

void bind_text(pyb::module_& m) {
  pyb::class_<Tokenizer, std::shared_ptr<Tokenizer>>(m, "Tokenizer",
      "Qwen2 byte-level BPE tokenizer (added tokens, Qwen2 split regex, BPE by merge rank)")
      .def(pyb::init([](std::vector<std::string> tokens, std::vector<int32_t> token_types,
                        const std::vector<std::string>& merges) {
             return std::make_shared<Tokenizer>(std::move(tokens), std::move(token_types), merges);
           }),
           pyb::arg("tokens"), pyb::arg("token_types"), pyb::arg("merges"))
      .def_static("from_gguf", [](const std::string& path) {
             auto f = gguf::File::open(path);
             return std::make_shared<Tokenizer>(Tokenizer::from_gguf(*f));
           }, pyb::arg("path"))
      .def("encode", [](const Tokenizer& t, const pyb::object& s, bool parse_special) {
             std::string bytes = text_arg(s);
             pyb::gil_scoped_release nogil;
             return t.encode(bytes, parse_special);
           }, pyb::arg("text"), pyb::arg("parse_special") = true)
      .def("decode", [](const Tokenizer& t, const std::vector<int32_t>& ids, bool skip_special) {
             return pyb::bytes(t.decode(ids, skip_special));
           }, pyb::arg("ids"), pyb::arg("skip_special") = false)
      .def("pre_tokenize", [](const Tokenizer& t, const pyb::object& s) {
             std::string bytes = text_arg(s);
             pyb::list out;
             for (auto p : t.pre_tokenize(bytes)) out.append(pyb::bytes(p.data(), p.size()));
             return out;
           }, pyb::arg("text"))
      .def_static("nfc_normalize", [](const pyb::object& s) { return pyb::bytes(unicode::nfc(text_arg(s))); },
                  pyb::arg("text"), "Unicode NFC of UTF-8 text (invalid bytes kept)")
      .def("token_to_piece", [](const Tokenizer& t, int32_t id) { return pyb::bytes(t.token_to_piece(id)); })
      .def("token_text", [](const Tokenizer& t, int32_t id) { return t.token_text(id); })
      .def("token_type", [](const Tokenizer& t, int32_t id) { return static_cast<int>(t.token_type(id)); })
      .def("find_token", [](const Tokenizer& t, const std::string& s) { return t.find_token(s); })
      .def_property("nfc", &Tokenizer::nfc, &Tokenizer::set_nfc,
                    "apply Unicode NFC to text outside added tokens (HF Qwen2 normalizer)")
      .def_property_readonly("n_vocab", &Tokenizer::n_vocab)
      .def_property_readonly("n_merges", &Tokenizer::n_merges)
      .def_readonly("bos_id", &Tokenizer::bos_id)
      .def_readonly("eos_id", &Tokenizer::eos_id)
      .def_readonly("unk_id", &Tokenizer::unk_id)
      .def_readonly("pad_id", &Tokenizer::pad_id);

  // Holds a reference to its tokenizer; push() returns text, never a split UTF-8 character
  // (bytes that can never form one come out as U+FFFD).
  struct PyDetokenizer {
    std::shared_ptr<Tokenizer> tok;
    Detokenizer d;
    PyDetokenizer(std::shared_ptr<Tokenizer> t, bool skip) : tok(std::move(t)), d(*tok, skip) {}
  };
  pyb::class_<PyDetokenizer>(m, "Detokenizer")
      .def(pyb::init<std::shared_ptr<Tokenizer>, bool>(), pyb::arg("tokenizer"), pyb::arg("skip_special") = false)
      .def("push", [](PyDetokenizer& d, int32_t id) { return to_str_replace(d.d.push(id)); }, pyb::arg("id"))
      .def("push_bytes", [](PyDetokenizer& d, int32_t id) { return pyb::bytes(d.d.push(id)); }, pyb::arg("id"))
      .def("flush", [](PyDetokenizer& d) { return to_str_replace(d.d.flush()); })
      .def("flush_bytes", [](PyDetokenizer& d) { return pyb::bytes(d.d.flush()); });

  pyb::class_<Sampler>(m, "Sampler",
      "HF-style sampler: repetition penalty, temperature, top-k, top-p, min-p, multinomial")
      .def(pyb::init([](int32_t n_vocab, float temperature, int32_t top_k, float top_p, float min_p,
                        float repetition_penalty, uint64_t seed) {
             SamplerParams p;
             p.temperature = temperature;
             p.top_k = top_k;
             p.top_p = top_p;
             p.min_p = min_p;
             p.repetition_penalty = repetition_penalty;
             p.seed = seed;
             return Sampler(n_vocab, p);
           }),
           pyb::arg("n_vocab"), pyb::arg("temperature") = 1.0f, pyb::arg("top_k") = 0,
           pyb::arg("top_p") = 1.0f, pyb::arg("min_p") = 0.0f, pyb::arg("repetition_penalty") = 1.0f,
           pyb::arg("seed") = 0)
      .def("probs", [](Sampler& s, const F32Array& logits, const I32Array& prev) {
             if (logits.ndim() != 1 || logits.size() != s.n_vocab())
               throw InvalidArgument("Sampler.probs: logits must be 1-D of length " + std::to_string(s.n_vocab()));
             pyb::array_t<float> out(s.n_vocab());
             size_t n;
             const int32_t* p = prev_ptr(prev, &n);
             s.probs(logits.data(), p, n, out.mutable_data());
             return out;
           }, pyb::arg("logits"), pyb::arg("prev_tokens") = I32Array(0))
      .def("sample", [](Sampler& s, const F32Array& logits, const I32Array& prev) {
             if (logits.ndim() != 1 || logits.size() != s.n_vocab())
               throw InvalidArgument("Sampler.sample: logits must be 1-D of length " + std::to_string(s.n_vocab()));
             size_t n;
             const int32_t* p = prev_ptr(prev, &n);
             return s.sample(logits.data(), p, n);
           }, pyb::arg("logits"), pyb::arg("prev_tokens") = I32Array(0))
      .def("seed", &Sampler::seed, pyb::arg("seed"))
      .def_property_readonly("n_vocab", &Sampler::n_vocab);
}

}  // namespace minicpmv::py
