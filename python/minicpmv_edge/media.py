"""Images and video in, RGB uint8 arrays out. Python does the decoding (Pillow, OpenCV); the
engine receives H x W x 3 uint8 arrays."""
from __future__ import annotations

import base64
import io
import os
from pathlib import Path
from typing import Any, Callable, List, Optional, Tuple
from urllib.parse import unquote, urlparse

import numpy as np


class ImageError(ValueError):
    """An image that cannot be used: unreadable, empty, or of an unsupported kind."""


def _pil_to_rgb_array(img, what: str = "image") -> np.ndarray:
    # The reference converts any mode with .convert("RGB"): alpha is dropped, not composited,
    # 16-bit values are clipped to 255, and the EXIF orientation is NOT applied (no exif_transpose).
    if img.width == 0 or img.height == 0:
        raise ImageError(f"image has zero size ({img.width}x{img.height})")
    try:
        if img.mode != "RGB":
            img = img.convert("RGB")  # also loads a lazily opened image: decoding errors land here
        return np.asarray(img, dtype=np.uint8).copy()
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageError(f"{what}: not a readable image ({e})") from None


def _open_bytes(data: bytes, what: str) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise ImageError(f"{what}: empty image data")
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            return _pil_to_rgb_array(im, what)
    except UnidentifiedImageError:
        # Pillow's own message names an in-memory BytesIO object, not the file: say it plainly.
        raise ImageError(f"{what}: not a readable image (unknown or unsupported format)") from None
    except Image.DecompressionBombError as e:
        # Not an OSError: without this it would escape as a bare PIL exception.
        raise ImageError(f"{what}: image too large ({e})") from None
    except (OSError, SyntaxError) as e:
        raise ImageError(f"{what}: not a readable image ({e})") from None


def load_image(obj: Any) -> np.ndarray:
    """A PIL image, an H x W x 3 (or H x W) uint8 array, a path, a file:// URL, a data: URL
    (base64) or raw encoded bytes -> H x W x 3 uint8 RGB array."""
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - pillow is a dependency
        Image = None
    if Image is not None and isinstance(obj, Image.Image):
        return _pil_to_rgb_array(obj)
    if isinstance(obj, np.ndarray):
        a = obj
        if a.ndim == 3 and a.shape[2] == 1:  # H x W x 1: grayscale as H x W
            a = a[:, :, 0]
        if a.ndim == 2:  # grayscale, as Pillow's L -> RGB
            a = np.repeat(a[:, :, None], 3, axis=2)
        if a.ndim != 3 or a.shape[2] not in (3, 4):
            raise ImageError(f"image array must be H x W x 3 (RGB), H x W x 4 (RGBA: alpha dropped) or "
                             f"H x W (grayscale), got shape {obj.shape}")
        if a.dtype != np.uint8:
            raise ImageError(f"image array must be uint8, got {a.dtype}")
        if a.shape[0] == 0 or a.shape[1] == 0:
            raise ImageError(f"image has zero size ({a.shape[1]}x{a.shape[0]})")
        return np.ascontiguousarray(a[:, :, :3])
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return _open_bytes(bytes(obj), "image bytes")
    if isinstance(obj, (str, os.PathLike)):
        s = os.fspath(obj)
        if s.startswith("data:"):
            header, _, payload = s.partition(",")
            if ";base64" not in header:
                raise ImageError("data URL images must be base64-encoded")
            try:
                data = base64.b64decode(payload, validate=False)
            except ValueError as e:
                raise ImageError(f"data URL: bad base64 ({e})") from None
            return _open_bytes(data, "data URL")
        if s.startswith("file://"):
            s = unquote(urlparse(s).path)
        elif "://" in s:
            raise ImageError(f"only local paths, file:// and data: URLs are supported, got {s[:60]!r}")
        p = Path(s).expanduser()
        if not p.exists():
            raise FileNotFoundError(f"image file not found: {p}")
        if p.is_dir():
            raise ImageError(f"{p} is a directory, not an image")
        return _open_bytes(p.read_bytes(), str(p))
    raise ImageError(f"unsupported image object of type {type(obj).__name__}")


def video_frame_indices(n_frames: int, fps: float, max_frames: int = 64) -> List[int]:
    """The official MiniCPM-V 2.6 video example: every round(fps)-th frame (about 1 per second),
    then at most `max_frames` of them spread uniformly (index int(i * gap + gap / 2))."""
    if n_frames <= 0:
        return []
    step = max(1, round(fps)) if fps and fps > 0 else 1
    idx = list(range(0, n_frames, step))
    if len(idx) > max_frames:
        gap = len(idx) / max_frames
        idx = [idx[int(i * gap + gap / 2)] for i in range(max_frames)]
    return idx


def load_video(path: str, max_frames: int = 64,
               progress: Optional[Callable[[int, int], None]] = None) -> Tuple[List[np.ndarray], List[float]]:
    """Frames (RGB uint8) and their timestamps in seconds, sampled as the official example does."""
    try:
        import cv2
    except ImportError:
        raise ImportError("video needs OpenCV: pip install opencv-python-headless") from None
    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"video file not found: {p}")
    cap = cv2.VideoCapture(str(p))
    if not cap.isOpened():
        raise ValueError(f"{p}: not a readable video")
    try:
        fps = cap.get(cv2.CAP_PROP_FPS) or 0.0
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        if n <= 0:  # some containers do not say: count by grabbing
            while cap.grab():
                n += 1
            cap.release()
            cap = cv2.VideoCapture(str(p))
        wanted = video_frame_indices(n, fps, max_frames)
        frames, times = [], []
        want = set(wanted)
        i = 0
        while wanted and i <= wanted[-1]:
            if not cap.grab():
                break
            if i in want:
                ok, bgr = cap.retrieve()
                if ok and bgr is not None and bgr.size:
                    frames.append(np.ascontiguousarray(bgr[:, :, ::-1]))
                    times.append(i / fps if fps > 0 else float(len(times)))
                    if progress:
                        progress(len(frames), len(wanted))
            i += 1
    finally:
        cap.release()
    if not frames:
        raise ValueError(f"{p}: no frames could be read from the video")
    return frames, times
