// The vision model (model/siglip, model/resampler, model/vision_encoder): SigLIP tower + resampler
// read from an mmproj GGUF. Thin wrappers: shape checks on numpy inputs, no math.
#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <cstring>
#include <string>

#include "bindings/bindings.h"
#include "minicpmv/error.h"
#include "model/resampler.h"
#include "model/siglip.h"
#include "model/vision_encoder.h"

namespace minicpmv::py {
namespace {

using FloatArray = pyb::array_t<float, pyb::array::c_style | pyb::array::forcecast>;
using model::VisionEncoder;

std::string shape_of(const pyb::array& a) {
  std::string s = "(";
  for (pyb::ssize_t i = 0; i < a.ndim(); ++i) s += (i ? ", " : "") + std::to_string(a.shape(i));
  return s + ")";
}

// np.float32 [h*w, cols] (other float dtypes are converted) or a ValueError saying why not.
FloatArray patches_arg(const pyb::array& obj, int64_t h, int64_t w, int64_t patch_dim,
                       const char* what = "patches") {
  if (h < 1 || w < 1)
    throw InvalidArgument("patch grid (h, w) must be at least 1x1, got (" + std::to_string(h) + ", " +
                          std::to_string(w) + ")");
  FloatArray a = FloatArray::ensure(obj);
  if (!a) throw InvalidArgument(std::string(what) + ": expected a float32 array [h*w, " + std::to_string(patch_dim) + "]");
  if (a.ndim() != 2 || a.shape(0) != h * w || a.shape(1) != patch_dim)
    throw InvalidArgument(std::string(what) + ": expected shape (" + std::to_string(h * w) + ", " + std::to_string(patch_dim) +
                          ") for a " + std::to_string(h) + "x" + std::to_string(w) + " grid, got " + shape_of(a));
  return a;
}

vision::RgbImage image_arg(const pyb::array& obj) {
  if (!obj.dtype().is(pyb::dtype::of<uint8_t>()))
    throw InvalidArgument("image: expected dtype uint8, got " + std::string(pyb::str(obj.dtype())));
  if (obj.ndim() != 3 || obj.shape(2) != 3 || obj.shape(0) < 1 || obj.shape(1) < 1)
    throw InvalidArgument("image: expected shape [H, W, 3] (RGB), got " + shape_of(obj));
  vision::check_image_size(int(obj.shape(1)), int(obj.shape(0)), "image");
  auto c = pyb::array_t<uint8_t, pyb::array::c_style>::ensure(obj);
  vision::RgbImage img(int(obj.shape(1)), int(obj.shape(0)));
  std::memcpy(img.data.data(), c.data(), img.data.size());
  return img;
}

pyb::dict config_dict(const model::Mmproj& m) {
  const auto& v = m.vision;
  const auto& r = m.resampler;
  pyb::dict d;
  d["hidden"] = v.hidden;
  d["intermediate"] = v.intermediate;
  d["layers"] = v.n_layers;
  d["declared_layers"] = m.declared_layers();
  d["heads"] = v.n_heads;
  d["head_dim"] = v.head_dim;
  d["patch_size"] = v.patch_size;
  d["image_size"] = v.image_size;
  d["patches_per_side"] = v.patches_per_side;
  d["eps"] = v.eps;
  d["image_mean"] = std::vector<float>(v.image_mean.begin(), v.image_mean.end());
  d["image_std"] = std::vector<float>(v.image_std.begin(), v.image_std.end());
  d["embed_dim"] = r.embed_dim;
  d["query_num"] = r.query_num;
  d["resampler_heads"] = r.n_heads;
  d["minicpmv_version"] = m.minicpmv_version();
  d["ffn_names_swapped"] = m.ffn_names_swapped();
  return d;
}

}  // namespace

void bind_vision_model(pyb::module_& m) {
  m.def(
      "vision_position_ids",
      [](int64_t h, int64_t w, int64_t side) {
        if (h < 1 || w < 1 || side < 1) throw InvalidArgument("vision_position_ids: h, w, side must be >= 1");
        pyb::array_t<int32_t> ids({pyb::ssize_t(h), pyb::ssize_t(w)});
        model::vision_position_ids(h, w, side, ids.mutable_data());
        return ids;
      },
      pyb::arg("h"), pyb::arg("w"), pyb::arg("side") = 70,
      "Row of the SigLIP position table for each patch of an h x w grid, [h, w] int32.");
  m.def(
      "resampler_pos_embed",
      [](int64_t h, int64_t w, int64_t embed_dim) {
        if (h < 1 || w < 1) throw InvalidArgument("resampler_pos_embed: h, w must be >= 1");
        pyb::array_t<float> pe({pyb::ssize_t(h * w), pyb::ssize_t(embed_dim)});
        model::resampler_pos_embed(h, w, embed_dim, pe.mutable_data());
        return pe;
      },
      pyb::arg("h"), pyb::arg("w"), pyb::arg("embed_dim"),
      "2-D sin-cos key position embedding of the resampler, [h*w, embed_dim] float32.");

  pyb::class_<VisionEncoder>(m, "VisionEncoder",
                             "SigLIP navit tower + perceiver resampler of MiniCPM-V 2.6 from an mmproj GGUF.")
      .def(pyb::init([](const std::string& path, int n_threads, const std::string& weights) {
             pyb::gil_scoped_release nogil;  // the q8_0 conversion takes a while for a full tower
             return std::make_unique<VisionEncoder>(path, n_threads, weights);
           }),
           pyb::arg("mmproj_path"), pyb::arg("n_threads") = 0, pyb::arg("weights") = "native",
           "weights: 'native' (as stored; the default), 'q8_0' (f16/f32 matrices quantized to Q8_0 at load: "
           "int8 kernels, ~1e-2 relative error), 'bf16' (converted to bf16 at load, bf16 dot products; "
           "AVX512_BF16 only, else native) or 'auto' (bf16 with AVX512_BF16, else q8_0 on fast int8 CPUs, "
           "else native).")
      .def_property_readonly("weight_format", [](const VisionEncoder& e) { return e.weights(); })
      .def_property_readonly("config", [](const VisionEncoder& e) { return config_dict(e.mmproj()); })
      .def(
          "encode_patches",
          [](VisionEncoder& e, const pyb::array& patches, int64_t h, int64_t w) {
            FloatArray p = patches_arg(patches, h, w, e.mmproj().vision.patch_dim());
            const auto& r = e.mmproj().resampler;
            pyb::array_t<float> out({pyb::ssize_t(r.query_num), pyb::ssize_t(r.embed_dim)});
            float* o = out.mutable_data();
            {
              pyb::gil_scoped_release nogil;
              e.encode_patches(p.data(), h, w, o);
            }
            return out;
          },
          pyb::arg("patches"), pyb::arg("h"), pyb::arg("w"),
          "Normalized patches [h*w, 3*14*14] of one slice -> [query_num, embed_dim].")
      .def(
          "vision_tower",
          [](VisionEncoder& e, const pyb::array& patches, int64_t h, int64_t w) {
            FloatArray p = patches_arg(patches, h, w, e.mmproj().vision.patch_dim());
            pyb::array_t<float> out({pyb::ssize_t(h * w), pyb::ssize_t(e.mmproj().vision.hidden)});
            float* o = out.mutable_data();
            {
              pyb::gil_scoped_release nogil;
              e.vision_tower(p.data(), h, w, o);
            }
            return out;
          },
          pyb::arg("patches"), pyb::arg("h"), pyb::arg("w"),
          "The tower alone: patches [h*w, 3*14*14] -> post-LN hidden states [h*w, hidden].")
      .def(
          "resample",
          [](VisionEncoder& e, const pyb::array& hidden, int64_t h, int64_t w) {
            FloatArray x = patches_arg(hidden, h, w, e.mmproj().vision.hidden, "hidden");
            const auto& r = e.mmproj().resampler;
            pyb::array_t<float> out({pyb::ssize_t(r.query_num), pyb::ssize_t(r.embed_dim)});
            float* o = out.mutable_data();
            {
              pyb::gil_scoped_release nogil;
              e.resample(x.data(), h, w, o);
            }
            return out;
          },
          pyb::arg("hidden"), pyb::arg("h"), pyb::arg("w"),
          "The resampler alone: tower output [h*w, hidden] -> [query_num, embed_dim].")
      .def(
          "encode_image",
          [](VisionEncoder& e, const pyb::array& image, int max_slice_nums) {
            vision::RgbImage img = image_arg(image);
            model::EncodedImage res;
            {
              pyb::gil_scoped_release nogil;
              res = e.encode_image(img, max_slice_nums);
            }
            const auto& r = e.mmproj().resampler;
            const pyb::ssize_t n = pyb::ssize_t(res.tgt_sizes.size());
            pyb::array_t<float> out({n, pyb::ssize_t(r.query_num), pyb::ssize_t(r.embed_dim)});
            std::memcpy(out.mutable_data(), res.embeddings.data(), res.embeddings.size() * sizeof(float));
            const auto& L = res.layout;
            pyb::dict layout;
            layout["grid"] = L.sliced ? pyb::object(pyb::make_tuple(L.grid_cols, L.grid_rows)) : pyb::object(pyb::none());
            pyb::list sizes;
            for (const auto& t : res.tgt_sizes) sizes.append(pyb::make_tuple(t.h, t.w));
            layout["tgt_sizes"] = sizes;
            layout["source"] = pyb::make_tuple(L.source.width, L.source.height);
            layout["cell"] = L.sliced ? pyb::object(pyb::make_tuple(L.cell.width, L.cell.height)) : pyb::object(pyb::none());
            return pyb::make_tuple(out, layout);
          },
          pyb::arg("image"), pyb::arg("max_slice_nums") = 9,
          "RGB uint8 [H, W, 3] -> (float32 [n_slices, query_num, embed_dim], layout dict: grid (cols, rows) "
          "or None, tgt_sizes [(h, w)] per slice, source and cell sizes (width, height)).");
}

}  // namespace minicpmv::py
