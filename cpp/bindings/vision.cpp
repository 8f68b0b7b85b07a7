// Image preprocessing (vision/): slice planning, Pillow-exact bicubic resize, slicing,
// normalisation. Python decodes images and converts them to RGB uint8 [H, W, 3] before calling.
#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <cstring>
#include <string>

#include "bindings/bindings.h"
#include "minicpmv/error.h"
#include "vision/normalize.h"
#include "vision/preprocess.h"
#include "vision/resize.h"
#include "vision/slicing.h"

namespace minicpmv::py {
namespace {

using vision::RgbImage;
using vision::Size;

// np.uint8 [H, W, 3] (any strides) -> RgbImage; anything else is a ValueError naming `arg`.
RgbImage to_image(const pyb::handle& obj, const char* arg) {
  if (!pyb::isinstance<pyb::array>(obj))
    throw InvalidArgument(std::string(arg) + ": expected a numpy uint8 array [H, W, 3], got " +
                          Py_TYPE(obj.ptr())->tp_name);
  auto arr = pyb::reinterpret_borrow<pyb::array>(obj);
  if (!arr.dtype().is(pyb::dtype::of<uint8_t>()))
    throw InvalidArgument(std::string(arg) + ": expected dtype uint8, got " + std::string(pyb::str(arr.dtype())) +
                          " (convert the image with PIL .convert(\"RGB\") and np.asarray)");
  if (arr.ndim() != 3 || arr.shape(2) != 3) {
    std::string shape = "(";
    for (pyb::ssize_t i = 0; i < arr.ndim(); ++i) shape += (i ? ", " : "") + std::to_string(arr.shape(i));
    throw InvalidArgument(std::string(arg) + ": expected shape [H, W, 3] (RGB), got " + shape + ")");
  }
  if (arr.shape(0) < 1 || arr.shape(1) < 1 || arr.shape(0) > vision::kMaxImageSide ||
      arr.shape(1) > vision::kMaxImageSide)
    throw InvalidArgument(std::string(arg) + ": image size " + std::to_string(arr.shape(1)) + "x" +
                          std::to_string(arr.shape(0)) + " is outside 1.." + std::to_string(vision::kMaxImageSide));
  auto c = pyb::array_t<uint8_t, pyb::array::c_style>::ensure(arr);
  RgbImage img(int(arr.shape(1)), int(arr.shape(0)));
  std::memcpy(img.data.data(), c.data(), img.data.size());
  return img;
}

pyb::array_t<uint8_t> to_numpy(const RgbImage& img) {
  pyb::array_t<uint8_t> a({pyb::ssize_t(img.height), pyb::ssize_t(img.width), pyb::ssize_t(3)});
  std::memcpy(a.mutable_data(), img.data.data(), img.data.size());
  return a;
}

pyb::object size_or_none(bool present, Size s) {
  return present ? pyb::object(pyb::make_tuple(s.width, s.height)) : pyb::object(pyb::none());
}

vision::PassOrder pass_order(const std::string& name) {
  if (name == "pillow13") return vision::PassOrder::pillow13;
  if (name == "horizontal_first") return vision::PassOrder::horizontal_first;
  throw InvalidArgument("pass_order: expected \"pillow13\" or \"horizontal_first\" (Pillow <= 12), got \"" +
                        name + "\"");
}

vision::SliceOptions options(int max_slice_nums, int scale_resolution, int patch_size, bool never_split,
                             const std::string& order = "pillow13") {
  vision::SliceOptions o;
  o.resize_order = pass_order(order);
  o.max_slice_nums = max_slice_nums;
  o.scale_resolution = scale_resolution;
  o.patch_size = patch_size;
  o.never_split = never_split;
  return o;
}

pyb::dict layout_dict(const vision::SliceLayout& L) {
  pyb::dict d;
  d["grid"] = L.sliced ? pyb::object(pyb::make_tuple(L.grid_cols, L.grid_rows)) : pyb::object(pyb::none());
  d["source"] = pyb::make_tuple(L.source.width, L.source.height);
  d["refine"] = size_or_none(L.sliced, L.refine);
  d["cell"] = size_or_none(L.sliced, L.cell);
  return d;
}

}  // namespace

void bind_vision(pyb::module_& m) {
  m.def(
      "plan_slices",
      [](int width, int height, int max_slice_nums, int scale_resolution, int patch_size, bool never_split) {
        return layout_dict(vision::plan_slices(width, height,
                                               options(max_slice_nums, scale_resolution, patch_size, never_split)));
      },
      pyb::arg("width"), pyb::arg("height"), pyb::arg("max_slice_nums") = 9, pyb::arg("scale_resolution") = 448,
      pyb::arg("patch_size") = 14, pyb::arg("never_split") = false,
      "MiniCPM-V 2.6 slicing plan of a width x height image: dict(grid=(cols, rows) or None, "
      "source=(w, h), refine=(w, h) or None, cell=(w, h) or None).");

  m.def(
      "resize_bicubic",
      [](pyb::object image, int width, int height, const std::string& order) {
        RgbImage img = to_image(image, "resize_bicubic(image)");
        const vision::PassOrder po = pass_order(order);
        RgbImage out;
        {
          pyb::gil_scoped_release nogil;
          out = vision::resize_bicubic(img, width, height, po);
        }
        return to_numpy(out);
      },
      pyb::arg("image"), pyb::arg("width"), pyb::arg("height"), pyb::arg("pass_order") = "pillow13",
      "Resize an RGB uint8 [H, W, 3] array to [height, width, 3], bit-exact with PIL "
      "Image.resize((width, height), Image.Resampling.BICUBIC) of Pillow >= 13 (pass_order="
      "\"horizontal_first\": of Pillow <= 12).");

  m.def(
      "slice_image",
      [](pyb::object image, int max_slice_nums, int scale_resolution, int patch_size, bool never_split,
         const std::string& order) {
        RgbImage img = to_image(image, "slice_image(image)");
        const vision::SliceOptions opt = options(max_slice_nums, scale_resolution, patch_size, never_split, order);
        vision::SlicedImage s;
        {
          pyb::gil_scoped_release nogil;
          s = vision::slice_image(img, opt);
        }
        pyb::dict d = layout_dict(s.layout);
        pyb::list slices, sizes, tgt_sizes;
        for (const RgbImage& sl : s.slices) {
          slices.append(to_numpy(sl));
          sizes.append(pyb::make_tuple(sl.width, sl.height));
          const vision::TgtSize t = vision::tgt_size({sl.width, sl.height}, patch_size);
          tgt_sizes.append(pyb::make_tuple(t.h, t.w));
        }
        d["slices"] = slices;
        d["sizes"] = sizes;
        d["tgt_sizes"] = tgt_sizes;
        return d;
      },
      pyb::arg("image"), pyb::arg("max_slice_nums") = 9, pyb::arg("scale_resolution") = 448,
      pyb::arg("patch_size") = 14, pyb::arg("never_split") = false, pyb::arg("pass_order") = "pillow13",
      "Slice an RGB uint8 [H, W, 3] array as the HF MiniCPMVImageProcessor does: dict(grid, source, "
      "refine, cell, slices=[source, cells row-major], sizes=[(w, h)], tgt_sizes=[(h/14, w/14)]).");

  m.def(
      "preprocess_image",
      [](pyb::object image, int max_slice_nums, int scale_resolution, int patch_size, bool never_split,
         const std::string& order) {
        RgbImage img = to_image(image, "preprocess_image(image)");
        const vision::SliceOptions opt = options(max_slice_nums, scale_resolution, patch_size, never_split, order);
        vision::PreprocessedImage pre;
        {
          pyb::gil_scoped_release nogil;
          pre = vision::preprocess_image(img, opt);
        }
        pyb::dict d = layout_dict(pre.layout);
        pyb::list patches, tgt_sizes;
        for (const vision::SlicePatches& s : pre.slices) {
          pyb::array_t<float> a({pyb::ssize_t(s.tgt_size.h) * s.tgt_size.w, pyb::ssize_t(3) * patch_size * patch_size});
          std::memcpy(a.mutable_data(), s.patches.data(), s.patches.size() * sizeof(float));
          patches.append(a);
          tgt_sizes.append(pyb::make_tuple(s.tgt_size.h, s.tgt_size.w));
        }
        d["patches"] = patches;
        d["tgt_sizes"] = tgt_sizes;
        return d;
      },
      pyb::arg("image"), pyb::arg("max_slice_nums") = 9, pyb::arg("scale_resolution") = 448,
      pyb::arg("patch_size") = 14, pyb::arg("never_split") = false, pyb::arg("pass_order") = "pillow13",
      "slice_image + normalize_patches per slice: dict(grid, source, refine, cell, "
      "patches=[float32 [h*w, 3*P*P]] (source first, cells row-major), tgt_sizes=[(h, w)]).");

  m.def(
      "normalize",
      [](pyb::object image) {
        RgbImage img = to_image(image, "normalize(image)");
        std::vector<float> v = vision::normalize_chw(img);
        pyb::array_t<float> a({pyb::ssize_t(3), pyb::ssize_t(img.height), pyb::ssize_t(img.width)});
        std::memcpy(a.mutable_data(), v.data(), v.size() * sizeof(float));
        return a;
      },
      pyb::arg("image"), "(u8 / 255 - 0.5) / 0.5 as float32 [3, H, W] (CHW).");

  m.def(
      "normalize_patches",
      [](pyb::object image, int patch_size) {
        RgbImage img = to_image(image, "normalize_patches(image)");
        std::vector<float> v = vision::normalize_patches(img, patch_size);
        const pyb::ssize_t n = pyb::ssize_t(img.height / patch_size) * (img.width / patch_size);
        pyb::array_t<float> a({n, pyb::ssize_t(3) * patch_size * patch_size});
        std::memcpy(a.mutable_data(), v.data(), v.size() * sizeof(float));
        return a;
      },
      pyb::arg("image"), pyb::arg("patch_size") = 14,
      "Normalised patches float32 [n_patches, 3*P*P]: patches row-major, each in (channel, ky, kx) "
      "order (the conv weight order of the SigLIP patch embedding).");
}

}  // namespace minicpmv::py
