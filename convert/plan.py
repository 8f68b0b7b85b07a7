"""An output tensor: its GGUF name, shape and type, and where its float32 rows come from.

Rows are produced in chunks straight from the memory-mapped source, so a tensor is never fully
in memory unless it has to be transposed (only resampler.proj) or is computed (pos_embed_k)."""
from dataclasses import dataclass
from typing import Optional

import numpy as np

from .checkpoint import SourceTensor
from .quantize import quantize_rows

CHUNK_BYTES = 32 << 20  # float32 bytes decoded per chunk; bounds the converter's peak memory


@dataclass
class OutTensor:
    name: str
    shape: tuple  # numpy order: row length last (GGUF ne reversed)
    gtype: int
    src: Optional[SourceTensor] = None
    row_start: int = 0  # first source row (2-D view) / element (1-D) taken
    transpose: bool = False  # write src^T (src must be 2-D)
    data: Optional[np.ndarray] = None  # a computed tensor (float32) instead of a source

    @property
    def row_len(self):
        return self.shape[-1]

    @property
    def n_rows(self):
        n = 1
        for d in self.shape[:-1]:
            n *= d
        return n

    def f32_chunks(self, chunk_bytes=None):
        """Yield float32 [k, row_len] blocks covering the tensor's rows in order."""
        chunk_bytes = chunk_bytes or CHUNK_BYTES
        rows, row_len = self.n_rows, self.row_len
        if self.data is not None:
            full = np.ascontiguousarray(self.data, dtype=np.float32).reshape(rows, row_len)
            yield from _split(full, chunk_bytes)
            return
        if self.transpose:
            full = np.ascontiguousarray(self.src.numpy_f32().T).reshape(rows, row_len)
            yield from _split(full, chunk_bytes)
            return
        if len(self.src.shape) <= 1:
            v = self.src.numpy_f32().reshape(-1)[self.row_start:self.row_start + rows * row_len]
            yield v.reshape(rows, row_len)
            return
        step = max(1, chunk_bytes // (4 * row_len))
        for r in range(0, rows, step):
            k = min(step, rows - r)
            yield self.src.rows_f32(self.row_start + r, self.row_start + r + k).reshape(k, row_len)

    def write(self, writer, n_threads=0, chunk_bytes=None, on_bytes=None):
        for block in self.f32_chunks(chunk_bytes):
            q = quantize_rows(self.gtype, block, n_threads)
            writer.write_tensor_data(self.name, q)
            if on_bytes is not None:
                on_bytes(q.nbytes)


def _split(full, chunk_bytes):
    step = max(1, chunk_bytes // (4 * full.shape[1]))
    for r in range(0, full.shape[0], step):
        yield full[r:r + step]
