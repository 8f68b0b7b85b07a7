// Pixel normalisation of a slice for the SigLIP vision tower: x = (u8 / 255 - 0.5) / 0.5 per
// channel (mean = std = 0.5), computed in float32 in the same order as the HF processor
// (uint8 -> float32, / 255, then (x - mean) / std), so values match it bit for bit.
#pragma once
#include <vector>

#include "vision/image.h"

namespace minicpmv::vision {

// float32 [3, H, W] (CHW), the layout the HF processor produces.
std::vector<float> normalize_chw(const RgbImage& img);

// The slice cut into patch_size x patch_size patches, row-major over the patch grid
// (patch index = r * (W / P) + c), each flattened in the patch-embedding conv weight order
// (channel, ky, kx): [n_patches, 3 * P * P]. The SigLIP patch embedding (conv, kernel = stride = P)
// then becomes one matmul with the conv weight viewed as [embed_dim, 3 * P * P].
// W and H must be multiples of patch_size (InvalidArgument otherwise).
std::vector<float> normalize_patches(const RgbImage& img, int patch_size = 14);

// The normalised value of one uint8 sample.
float normalize_value(uint8_t u);

}  // namespace minicpmv::vision
