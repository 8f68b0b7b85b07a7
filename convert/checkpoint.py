"""Read a Hugging Face checkpoint directory without torch: config.json, the safetensors index and
its shards. Shards are memory-mapped; a tensor is decoded to float32 only a block of rows at a
time, so converting never holds more than one chunk of any tensor in memory."""
import json
import mmap
from pathlib import Path

import numpy as np

# safetensors dtype -> (numpy storage dtype, bytes per element)
_ST_DTYPES = {"BF16": np.uint16, "F16": np.float16, "F32": np.float32}


def bf16_bits_to_f32(bits):
    """bf16 bit patterns (uint16) -> float32, exact (bf16 is the top half of an f32)."""
    return (np.asarray(bits, dtype=np.uint16).astype(np.uint32) << np.uint32(16)).view(np.float32)


def read_json(path, what):
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: {what} not found")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None


class SourceTensor:
    """One tensor of a shard: shape, dtype, and row-block access decoded to float32."""

    def __init__(self, shard, name, dtype, shape, begin, end):
        self.shard = shard
        self.name = name
        self.dtype = dtype
        self.shape = tuple(shape)
        self._begin = begin
        self._end = end

    @property
    def rows(self):
        return self.shape[0] if len(self.shape) > 0 else 1

    @property
    def row_len(self):
        n = 1
        for d in self.shape[1:]:
            n *= d
        return n if len(self.shape) > 1 else (self.shape[0] if self.shape else 1)

    def _raw(self):
        np_dtype = _ST_DTYPES[self.dtype]
        buf = self.shard.buffer()
        count = (self._end - self._begin) // np.dtype(np_dtype).itemsize
        return np.frombuffer(buf, dtype=np_dtype, count=count, offset=self._begin)

    def rows_f32(self, start, stop):
        """Rows [start, stop) of the tensor seen as 2-D [rows, row_len], as a new float32 array.
        A 1-D tensor is one row."""
        raw = self._raw()
        if len(self.shape) <= 1:
            raw2 = raw.reshape(1, -1)
        else:
            raw2 = raw.reshape(self.shape[0], -1)
        block = raw2[start:stop]
        if self.dtype == "BF16":
            return bf16_bits_to_f32(block)
        return block.astype(np.float32)

    def numpy_f32(self):
        """The whole tensor as float32 in its own shape (used only for small tensors)."""
        return self.rows_f32(0, self.rows).reshape(self.shape)


class Shard:
    """A .safetensors file: header parsed and validated, data memory-mapped on first use."""

    def __init__(self, path):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: safetensors shard not found")
        size = self.path.stat().st_size
        with open(self.path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise ValueError(f"{self.path}: truncated safetensors file (no header length)")
            hlen = int.from_bytes(head, "little")
            if hlen <= 0 or 8 + hlen > size:
                raise ValueError(f"{self.path}: corrupt safetensors header length {hlen} (file has {size} bytes)")
            try:
                header = json.loads(f.read(hlen).decode("utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise ValueError(f"{self.path}: corrupt safetensors header ({e})") from None
        if not isinstance(header, dict):
            raise ValueError(f"{self.path}: corrupt safetensors header (not a JSON object)")
        self._data_start = 8 + hlen
        data_size = size - self._data_start
        self.tensors = {}
        for name, info in header.items():
            if name == "__metadata__":
                continue
            try:
                dtype = info["dtype"]
                shape = [int(d) for d in info["shape"]]
                begin, end = (int(v) for v in info["data_offsets"])
            except (KeyError, TypeError, ValueError):
                raise ValueError(f"{self.path}: corrupt header entry for tensor {name!r}") from None
            if dtype not in _ST_DTYPES:
                raise ValueError(f"{self.path}: tensor {name!r} has dtype {dtype}; "
                                 f"supported: {', '.join(_ST_DTYPES)}")
            n = 1
            for d in shape:
                if d < 0:
                    raise ValueError(f"{self.path}: tensor {name!r} has a negative dimension {shape}")
                n *= d
            itemsize = np.dtype(_ST_DTYPES[dtype]).itemsize
            if not (0 <= begin <= end <= data_size) or end - begin != n * itemsize:
                raise ValueError(f"{self.path}: tensor {name!r} data_offsets {[begin, end]} do not match "
                                 f"shape {shape} x {itemsize} bytes within {data_size} data bytes")
            self.tensors[name] = SourceTensor(self, name, dtype, shape,
                                              self._data_start + begin, self._data_start + end)
        self._mmap = None

    def buffer(self):
        if self._mmap is None:
            with open(self.path, "rb") as f:
                self._mmap = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        return self._mmap

    def close(self):
        if self._mmap is not None:
            try:
                self._mmap.close()
            except BufferError:
                pass  # a numpy view still exists; the mapping is released with it
            self._mmap = None


class Checkpoint:
    """A Hugging Face model directory: config.json + model.safetensors.index.json + shards
    (or a single model.safetensors)."""

    def __init__(self, hf_dir):
        self.dir = Path(hf_dir)
        if not self.dir.is_dir():
            raise FileNotFoundError(f"{self.dir}: checkpoint directory not found")
        self.config = read_json(self.dir / "config.json", "model config")
        index_path = self.dir / "model.safetensors.index.json"
        self._shards = {}
        if index_path.is_file():
            index = read_json(index_path, "safetensors index")
            weight_map = index.get("weight_map") if isinstance(index, dict) else None
            if not isinstance(weight_map, dict):
                raise ValueError(f"{index_path}: missing key 'weight_map'")
            self.index_path = index_path
            self.weight_map = dict(weight_map)
        elif (self.dir / "model.safetensors").is_file():
            self.index_path = self.dir / "model.safetensors"
            shard = self._shard("model.safetensors", None)
            self.weight_map = {n: "model.safetensors" for n in shard.tensors}
        else:
            raise FileNotFoundError(f"{index_path}: safetensors index not found "
                                    f"(nor a single model.safetensors)")

    def _shard(self, fname, key):
        if fname not in self._shards:
            path = self.dir / fname
            if not path.is_file():
                raise FileNotFoundError(f"{path}: shard not found (listed for tensor {key!r} in {self.index_path.name})")
            self._shards[fname] = Shard(path)
        return self._shards[fname]

    def __contains__(self, name):
        return name in self.weight_map

    def tensor(self, name):
        fname = self.weight_map.get(name)
        if fname is None:
            raise ValueError(f"{self.index_path}: tensor {name!r} not found in the checkpoint")
        shard = self._shard(fname, name)
        t = shard.tensors.get(name)
        if t is None:
            raise ValueError(f"{shard.path}: tensor {name!r} is listed in {self.index_path.name} "
                             f"but missing from the shard")
        return t

    def close(self):
        for s in self._shards.values():
            s.close()
        self._shards.clear()
