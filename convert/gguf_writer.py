"""A small streaming GGUF (v3) writer.

gguf-py's GGUFWriter keeps tensors in memory until the end; this one takes every tensor's name,
shape and type up front, writes the complete header (metadata + tensor infos with their final
offsets), then receives each tensor's bytes in order, chunk by chunk. Peak memory is one chunk.

File layout: "GGUF", u32 version 3, u64 tensor count, u64 kv count; kv pairs (u64-length key,
u32 value type, value); tensor infos (name, u32 n_dims, u64 ne[n_dims] with ne[0] the row
length, u32 ggml type, u64 offset relative to the data section); zero padding to the alignment;
tensor data, each tensor starting at a multiple of the alignment. All little-endian.
"""
import os
import struct
from pathlib import Path

import numpy as np

GGUF_MAGIC = b"GGUF"
GGUF_VERSION = 3
ALIGNMENT = 32

# GGUF metadata value types
UINT8, INT8, UINT16, INT16, UINT32, INT32, FLOAT32, BOOL, STRING, ARRAY, UINT64, INT64, FLOAT64 = range(13)

_SCALAR_FMT = {UINT8: "<B", INT8: "<b", UINT16: "<H", INT16: "<h", UINT32: "<I", INT32: "<i",
               FLOAT32: "<f", BOOL: "<?", UINT64: "<Q", INT64: "<q", FLOAT64: "<d"}

# ggml type id -> (name, elements per block, bytes per block). Ids are ggml's, as stored in files.
GGML_TYPES = {
    0: ("f32", 1, 4), 1: ("f16", 1, 2), 2: ("q4_0", 32, 18), 3: ("q4_1", 32, 20),
    6: ("q5_0", 32, 22), 7: ("q5_1", 32, 24), 8: ("q8_0", 32, 34),
    12: ("q4_K", 256, 144), 13: ("q5_K", 256, 176), 14: ("q6_K", 256, 210), 30: ("bf16", 1, 2),
}
GGML_TYPE_ID = {name: tid for tid, (name, _, _) in GGML_TYPES.items()}


def tensor_nbytes(ggml_type, shape):
    """Bytes of a tensor of numpy-order `shape` (last dim = row length) stored as `ggml_type`."""
    name, blck, tsize = GGML_TYPES[ggml_type]
    row = shape[-1] if shape else 1
    if row % blck:
        raise ValueError(f"row length {row} is not a multiple of the {name} block size {blck}")
    n_rows = 1
    for d in shape[:-1]:
        n_rows *= d
    return n_rows * (row // blck) * tsize


def _pad(n, align=ALIGNMENT):
    return (align - n % align) % align


def _pack_string(s):
    b = s.encode("utf-8")
    return struct.pack("<Q", len(b)) + b


class GGUFStreamWriter:
    """Usage: add_* metadata; add_tensor_info(...) for every tensor; then `with w.open(): `
    write_tensor_data(name, bytes-like) for each tensor in order (may be called several times
    per tensor, chunk by chunk). The file is written to `path + '.part'` and renamed into place
    only when complete."""

    def __init__(self, path):
        self.path = Path(path)
        self._kv = []  # (key, encoded bytes)
        self._keys = set()
        self._tensors = []  # (name, shape, type, nbytes)
        self._names = set()
        self._fh = None

    # ---- metadata ----
    def _add(self, key, vtype, payload):
        if key in self._keys:
            raise ValueError(f"duplicate GGUF key {key!r}")
        self._keys.add(key)
        self._kv.append(_pack_string(key) + struct.pack("<I", vtype) + payload)

    def add_scalar(self, key, vtype, value):
        self._add(key, vtype, struct.pack(_SCALAR_FMT[vtype], value))

    def add_uint32(self, key, value):
        self.add_scalar(key, UINT32, int(value))

    def add_int32(self, key, value):
        self.add_scalar(key, INT32, int(value))

    def add_float32(self, key, value):
        self.add_scalar(key, FLOAT32, float(value))

    def add_bool(self, key, value):
        self.add_scalar(key, BOOL, bool(value))

    def add_string(self, key, value):
        self._add(key, STRING, _pack_string(value))

    def add_array(self, key, etype, values):
        values = values if isinstance(values, (list, tuple)) else list(values)
        head = struct.pack("<IQ", etype, len(values))
        if etype == STRING:
            buf = bytearray()
            for v in values:
                b = v.encode("utf-8")
                buf += struct.pack("<Q", len(b))
                buf += b
            body = bytes(buf)
        else:
            fmt = _SCALAR_FMT[etype]
            body = np.asarray(values, dtype=np.dtype(fmt)).tobytes()
        self._add(key, ARRAY, head + body)

    # ---- tensors ----
    def add_tensor_info(self, name, shape, ggml_type):
        """shape in numpy order (rows first, row length last)."""
        if name in self._names:
            raise ValueError(f"duplicate tensor name {name!r}")
        if len(name.encode()) >= 64:
            raise ValueError(f"tensor name {name!r} is longer than ggml's 63-byte limit")
        self._names.add(name)
        shape = tuple(int(d) for d in shape)
        self._tensors.append((name, shape, ggml_type, tensor_nbytes(ggml_type, shape)))

    @property
    def tensors(self):
        return list(self._tensors)

    def _header(self):
        out = [GGUF_MAGIC, struct.pack("<IQQ", GGUF_VERSION, len(self._tensors), len(self._kv))]
        out.extend(self._kv)
        offset = 0
        for name, shape, gtype, nbytes in self._tensors:
            ne = tuple(reversed(shape)) if shape else (1,)
            out.append(_pack_string(name) + struct.pack("<I", len(ne))
                       + struct.pack(f"<{len(ne)}Q", *ne) + struct.pack("<IQ", gtype, offset))
            offset += nbytes + _pad(nbytes)
        header = b"".join(out)
        return header + b"\0" * _pad(len(header))

    # ---- data ----
    def open(self):
        return _Writing(self)

    def _begin(self):
        self._tmp = self.path.with_name(self.path.name + ".part")
        self._fh = open(self._tmp, "wb")
        self._fh.write(self._header())
        self._cur = 0  # index of the tensor being written
        self._written = 0  # bytes of it written so far

    def write_tensor_data(self, name, data):
        if self._cur >= len(self._tensors):
            raise ValueError(f"tensor {name!r}: all declared tensors are already written")
        tname, _, _, nbytes = self._tensors[self._cur]
        if name != tname:
            raise ValueError(f"tensor {name!r} written out of order (expected {tname!r})")
        mv = memoryview(np.ascontiguousarray(data)).cast("B")
        if self._written + len(mv) > nbytes:
            raise ValueError(f"tensor {name!r}: {self._written + len(mv)} bytes written, declared {nbytes}")
        self._fh.write(mv)
        self._written += len(mv)
        if self._written == nbytes:
            self._fh.write(b"\0" * _pad(nbytes))
            self._cur += 1
            self._written = 0

    def _finish(self, ok):
        fh, self._fh = self._fh, None
        fh.close()
        if ok:
            if self._cur != len(self._tensors):
                os.unlink(self._tmp)
                raise ValueError(f"{self.path}: only {self._cur} of {len(self._tensors)} tensors were written")
            os.replace(self._tmp, self.path)
        else:
            try:
                os.unlink(self._tmp)
            except OSError:
                pass


class _Writing:
    def __init__(self, w):
        self.w = w

    def __enter__(self):
        self.w._begin()
        return self.w

    def __exit__(self, exc_type, exc, tb):
        self.w._finish(exc_type is None)
        return False
