// Image preprocessing (cpp/vision/): slice planning against the spec's worked examples,
// Python rounding semantics, Pillow-exact resize against checksums produced by Pillow, and the
// normalised patch layout. Small enough to run under qemu-aarch64, where it checks that libm
// and the compiler (no FMA contraction) give the same sizes and pixels as on x86-64.
#include <cmath>
#include <cstdint>

#include "testing.h"
#include "vision/normalize.h"
#include "vision/preprocess.h"
#include "vision/resize.h"
#include "vision/slicing.h"

using namespace minicpmv::vision;

namespace {

struct PlanCase {
  int w, h;
  int cols, rows;  // 0, 0: no grid
  Size source, refine, cell;
};

// Spec section 5.6 (worked examples of the HF algorithm).
const PlanCase kSpecTable[] = {
    {448, 448, 0, 0, {448, 448}, {}, {}},
    {300, 200, 0, 0, {546, 364}, {}, {}},
    {600, 300, 0, 0, {630, 322}, {}, {}},
    {1000, 600, 2, 1, {574, 350}, {812, 490}, {406, 490}},
    {800, 600, 2, 2, {518, 392}, {1036, 784}, {518, 392}},
    {1024, 768, 2, 2, {518, 392}, {1036, 784}, {518, 392}},
    {1920, 1080, 4, 2, {602, 336}, {1680, 952}, {420, 476}},
    {1344, 1344, 3, 3, {448, 448}, {1344, 1344}, {448, 448}},
    {3000, 400, 7, 1, {1218, 168}, {3234, 434}, {462, 434}},
};

RgbImage pattern(int w, int h) {
  RgbImage img(w, h);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      for (int c = 0; c < 3; ++c) img.row(y)[x * 3 + c] = uint8_t((x * 7 + y * 13 + c * 50 + ((x * y) % 17) * 9) & 255);
  return img;
}

uint64_t fnv1a(const std::vector<uint8_t>& v) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (uint8_t b : v) {
    h ^= b;
    h *= 0x100000001b3ull;
  }
  return h;
}

}  // namespace

TEST(plan_slices_spec_table) {
  for (const PlanCase& c : kSpecTable) {
    const SliceLayout L = plan_slices(c.w, c.h);
    CHECK_MSG(L.sliced == (c.cols != 0), "%dx%d", c.w, c.h);
    CHECK_MSG(L.source == c.source, "%dx%d source %dx%d", c.w, c.h, L.source.width, L.source.height);
    if (c.cols) {
      CHECK_MSG(L.grid_cols == c.cols && L.grid_rows == c.rows, "%dx%d grid %dx%d", c.w, c.h, L.grid_cols, L.grid_rows);
      CHECK_MSG(L.refine == c.refine, "%dx%d refine %dx%d", c.w, c.h, L.refine.width, L.refine.height);
      CHECK_MSG(L.cell == c.cell, "%dx%d cell %dx%d", c.w, c.h, L.cell.width, L.cell.height);
    }
  }
}

TEST(python_rounding) {
  // round() is half to even; C's round() would give 3, 1, -3 and make ensure_divide(35, 14) = 42.
  CHECK(py_round(2.5) == 2);
  CHECK(py_round(3.5) == 4);
  CHECK(py_round(0.5) == 0);
  CHECK(py_round(-2.5) == -2);
  CHECK(py_round(2.5000000000000004) == 3);
  CHECK(py_round(1e15 + 0.5) == 1000000000000000LL);
  CHECK(ensure_divide(35, 14) == 28);
  CHECK(ensure_divide(49, 14) == 56);
  CHECK(ensure_divide(3, 14) == 14);  // never below one patch
  CHECK(ensure_divide(1001, 2) == 1000);
}

TEST(plan_slices_options) {
  // never_split: no grid, the overview keeps its aspect at about 448^2 pixels.
  const SliceLayout a = plan_slices(1920, 1080, 9, 448, 14, true);
  CHECK(!a.sliced && a.n_slices() == 1);
  // max_slice_nums = 1 (HF video setting) also disables slicing.
  CHECK(!plan_slices(4000, 3000, 1).sliced);
  const SliceLayout b = plan_slices(4000, 3000, 2);
  CHECK(b.sliced && b.grid_cols * b.grid_rows <= 2);
  // Every slice side is a multiple of the patch size, including for extreme sizes.
  for (auto wh : {std::pair<int, int>{1, 1}, {13, 7}, {8000, 200}, {200, 8000}, {1, 100000}, {4000, 3000}}) {
    const SliceLayout L = plan_slices(wh.first, wh.second);
    CHECK(L.source.width % 14 == 0 && L.source.height % 14 == 0 && L.source.width > 0);
    if (L.sliced) CHECK(L.cell.width % 14 == 0 && L.cell.height % 14 == 0 && L.grid_cols * L.grid_rows <= 9);
  }
  CHECK_THROWS(plan_slices(0, 10));
  CHECK_THROWS(plan_slices(10, -1));
  CHECK_THROWS(plan_slices(10, 10, 0));
}

TEST(resize_matches_pillow_checksums) {
  // FNV-1a of Pillow 13.0.0 Image.resize((W, H), BICUBIC) of pattern(w, h) (RGB bytes), and of
  // the Pillow <= 12 pass order (horizontal first, reproduced with two one-axis Pillow resizes).
  struct Case {
    int w, h, W, H;
    uint64_t pillow13, horizontal_first;
  };
  const Case cases[] = {
      {37, 29, 100, 61, 0xb7a6e50523a7360aull, 0xb7a6e50523a7360aull},
      {301, 203, 64, 45, 0x03949fd2b0f6989eull, 0x03949fd2b0f6989eull},
      {1, 9, 5, 3, 0x33254f69f4cc2de1ull, 0x33254f69f4cc2de1ull},
      {120, 40, 7, 40, 0x67c1bdc3f199a7edull, 0x67c1bdc3f199a7edull},
      {40, 200, 50, 20, 0xe8b2ec8ca88e10b5ull, 0xf763d695ad782d5full},
      {200, 150, 90, 160, 0x043636fddd6ebb24ull, 0x043636fddd6ebb24ull},
      {9, 1, 1, 1, 0x859d4a18cd65d15dull, 0x859d4a18cd65d15dull},
      {640, 480, 14, 700, 0x802c9ab546a2f3a1ull, 0x802c9ab546a2f3a1ull},
      {50, 400, 30, 100, 0xa07e6f9bf65980c0ull, 0xfa65ca76f5c1ef05ull},
      {23, 300, 61, 97, 0x4e76a15d1ca6da5aull, 0xacec14147df2bcafull},
  };
  for (const Case& c : cases) {
    const RgbImage src = pattern(c.w, c.h);
    const RgbImage a = resize_bicubic(src, c.W, c.H);
    const RgbImage b = resize_bicubic(src, c.W, c.H, PassOrder::horizontal_first);
    CHECK(a.width == c.W && a.height == c.H);
    CHECK_MSG(fnv1a(a.data) == c.pillow13, "%dx%d -> %dx%d", c.w, c.h, c.W, c.H);
    CHECK_MSG(fnv1a(b.data) == c.horizontal_first, "%dx%d -> %dx%d (horizontal first)", c.w, c.h, c.W, c.H);
  }
}

TEST(resize_properties) {
  const RgbImage src = pattern(33, 17);
  CHECK(resize_bicubic(src, 33, 17).data == src.data);  // same size: exact copy
  RgbImage flat(29, 31);
  for (size_t i = 0; i < flat.data.size(); ++i) flat.data[i] = uint8_t(i % 3 == 0 ? 200 : i % 3 == 1 ? 0 : 255);
  const RgbImage up = resize_bicubic(flat, 101, 7);  // constant channels stay constant
  bool constant = true;
  for (size_t i = 0; i < up.data.size(); ++i) constant &= up.data[i] == flat.data[i % 3];
  CHECK(constant);
  CHECK_THROWS(resize_bicubic(src, 0, 5));
  RgbImage broken(4, 4);
  broken.data.resize(10);
  CHECK_THROWS(resize_bicubic(broken, 2, 2));
}

TEST(slice_image_cells) {
  const RgbImage src = pattern(1000, 600);
  const SlicedImage s = slice_image(src);
  CHECK(s.layout.sliced && s.layout.grid_cols == 2 && s.layout.grid_rows == 1);
  CHECK(s.slices.size() == 3);
  CHECK(s.slices[0].width == 574 && s.slices[0].height == 350);
  const RgbImage refine = resize_bicubic(src, 812, 490);
  CHECK(s.slices[1].data == crop(refine, 0, 0, 406, 490).data);
  CHECK(s.slices[2].data == crop(refine, 406, 0, 406, 490).data);
  const TgtSize t = tgt_size({s.slices[1].width, s.slices[1].height});
  CHECK(t.h == 35 && t.w == 29);
}

TEST(normalize_layout) {
  CHECK(normalize_value(0) == -1.0f);
  CHECK(normalize_value(255) == 1.0f);
  for (int u = 0; u < 256; ++u) CHECK(std::fabs(normalize_value(uint8_t(u)) - (u / 255.0 - 0.5) / 0.5) < 2e-7);
  const RgbImage img = pattern(28, 42);
  const std::vector<float> chw = normalize_chw(img);
  const std::vector<float> p = normalize_patches(img);
  CHECK(p.size() == size_t(3 * 2) * 3 * 14 * 14);
  bool ok = true;
  for (int r = 0; r < 3; ++r)
    for (int c = 0; c < 2; ++c)
      for (int ch = 0; ch < 3; ++ch)
        for (int ky = 0; ky < 14; ++ky)
          for (int kx = 0; kx < 14; ++kx)
            ok &= p[size_t(r * 2 + c) * 588 + (ch * 14 + ky) * 14 + kx] ==
                  chw[size_t(ch) * 42 * 28 + size_t(r * 14 + ky) * 28 + c * 14 + kx];
  CHECK(ok);
  CHECK_THROWS(normalize_patches(pattern(20, 14)));
}

TEST(preprocess_image_matches_parts) {
  const RgbImage src = pattern(700, 500);
  const SlicedImage s = slice_image(src);
  const PreprocessedImage p = preprocess_image(src);
  CHECK(p.slices.size() == s.slices.size() && p.slices.size() == size_t(s.layout.n_slices()));
  for (size_t i = 0; i < p.slices.size() && i < s.slices.size(); ++i) {
    CHECK(p.slices[i].tgt_size.h * 14 == s.slices[i].height && p.slices[i].tgt_size.w * 14 == s.slices[i].width);
    CHECK(p.slices[i].patches == normalize_patches(s.slices[i]));
  }
}

TEST_MAIN()
