"""Independent Python reference of the MiniCPM-V 2.6 image preprocessing (HF
MiniCPMVImageProcessor), written from the spec (shared/spec/minicpmv-2.6.md section 5), with
Pillow doing the resizes and crops exactly as the HF code does. Used by tests/test_preprocess.py
as the oracle for the C++ implementation (cpp/vision/).

`ties` (optional list) collects every value whose round() in ensure_divide was an exact .5 tie,
so tests can prove they exercised Python's half-to-even rounding.
"""
import math

import numpy as np
from PIL import Image

SCALE_RESOLUTION = 448
PATCH_SIZE = 14
MAX_SLICE_NUMS = 9


def ensure_divide(length, patch_size, ties=None):
    q = length / patch_size
    if ties is not None and q - math.floor(q) == 0.5:
        ties.append((length, patch_size))
    return max(round(q) * patch_size, patch_size)


def find_best_resize(size, scale_resolution, patch_size, allow_upscale=False, ties=None):
    width, height = size
    if width * height > scale_resolution * scale_resolution or allow_upscale:
        r = width / height
        height = int(scale_resolution / math.sqrt(r))
        width = int(height * r)
    return (ensure_divide(width, patch_size, ties), ensure_divide(height, patch_size, ties))


def get_refine_size(size, grid, scale_resolution, patch_size, allow_upscale=False, ties=None):
    width, height = size
    gx, gy = grid
    refine_w = ensure_divide(width, gx, ties)
    refine_h = ensure_divide(height, gy, ties)
    cell = (refine_w / gx, refine_h / gy)
    best = find_best_resize(cell, scale_resolution, patch_size, allow_upscale, ties)
    return (best[0] * gx, best[1] * gy)


def get_sliced_grid(size, max_slice_nums, scale_resolution, never_split=False):
    width, height = size
    log_ratio = math.log(width / height)
    ratio = width * height / (scale_resolution * scale_resolution)
    multiple = min(math.ceil(ratio), max_slice_nums)
    if multiple <= 1 or never_split:
        return None
    nums = [n for n in (multiple - 1, multiple, multiple + 1) if n != 1 and n <= max_slice_nums]
    grids = [(m, n // m) for n in nums for m in range(1, n + 1) if n % m == 0]
    best, best_err = (1, 1), float("inf")
    for g in grids:
        err = abs(log_ratio - math.log(g[0] / g[1]))
        if err < best_err:  # first grid wins ties
            best, best_err = g, err
    return best


def plan_slices(width, height, max_slice_nums=MAX_SLICE_NUMS, scale_resolution=SCALE_RESOLUTION,
                patch_size=PATCH_SIZE, never_split=False, ties=None):
    """Same dict as _core.plan_slices: grid (cols, rows) or None, source, refine, cell."""
    size = (width, height)
    grid = get_sliced_grid(size, max_slice_nums, scale_resolution, never_split)
    if grid is None:
        source = find_best_resize(size, scale_resolution, patch_size, allow_upscale=True, ties=ties)
        return dict(grid=None, source=source, refine=None, cell=None)
    source = find_best_resize(size, scale_resolution, patch_size, ties=ties)
    refine = get_refine_size(size, grid, scale_resolution, patch_size, allow_upscale=True, ties=ties)
    cell = (int(refine[0] / grid[0]), int(refine[1] / grid[1]))
    return dict(grid=tuple(grid), source=source, refine=refine, cell=cell)


def slice_image(image, max_slice_nums=MAX_SLICE_NUMS, scale_resolution=SCALE_RESOLUTION,
                patch_size=PATCH_SIZE, never_split=False):
    """PIL RGB image -> (grid or None, [source, cells row-major] as PIL images)."""
    plan = plan_slices(*image.size, max_slice_nums, scale_resolution, patch_size, never_split)
    source = image.resize(plan["source"], resample=Image.Resampling.BICUBIC)
    if plan["grid"] is None:
        return None, [source]
    refine = image.resize(plan["refine"], resample=Image.Resampling.BICUBIC)
    cw, ch = plan["cell"]
    cells = [refine.crop((x, y, x + cw, y + ch))
             for y in range(0, refine.size[1], ch) for x in range(0, refine.size[0], cw)]
    return plan["grid"], [source] + cells


def normalize(rgb_u8):
    """uint8 [H, W, 3] -> float32 [3, H, W], as the HF processor computes it (float32 steps)."""
    x = rgb_u8.astype(np.float32) / 255
    mean = np.array([0.5, 0.5, 0.5], dtype=np.float32)
    std = np.array([0.5, 0.5, 0.5], dtype=np.float32)
    x = (x - mean) / std
    return x.transpose(2, 0, 1)


def patches(chw, patch_size=PATCH_SIZE):
    """float [3, H, W] -> [n_patches, 3 * P * P], patches row-major, each in (c, ky, kx) order."""
    c, h, w = chw.shape
    p = patch_size
    x = chw.reshape(c, h // p, p, w // p, p)  # c, r, ky, col, kx
    return x.transpose(1, 3, 0, 2, 4).reshape((h // p) * (w // p), c * p * p)
