// Bicubic resize, bit-exact with Pillow's Image.resize(size, Image.Resampling.BICUBIC) on RGB
// uint8 images (Pillow's libImaging/Resample.c, default box, no reducing_gap): a separable
// convolution with the a = -0.5 cubic kernel, pixel-centre aligned, the kernel widened by the
// scale factor when shrinking (antialiasing), coefficients rounded to 22-bit fixed point,
// two 1-D passes with the intermediate image clipped to uint8 in between.
#pragma once
#include "vision/image.h"

namespace minicpmv::vision {

// Which 1-D pass runs first. The intermediate image is uint8, so the order changes some pixels
// (by a level or two on photos, by more on noise). Pillow >= 13 runs the vertical pass first when the height shrinks by more than
// twice as many pixels as the width; Pillow <= 12 (the version the MiniCPM-V 2.6 reference was
// built with in 2024) always ran the horizontal pass first.
enum class PassOrder { pillow13, horizontal_first };

// True when resize_bicubic runs the vertical pass first for this size change.
bool vertical_pass_first(int in_w, int in_h, int out_w, int out_h, PassOrder order);

// Returns a width x height copy of img. A dimension that does not change is not resampled (as in
// Pillow), so resizing to the same size returns an identical copy.
RgbImage resize_bicubic(const RgbImage& img, int width, int height, PassOrder order = PassOrder::pillow13);

}  // namespace minicpmv::vision
