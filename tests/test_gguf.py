"""GGUF reader (cpp/gguf, `_core.GGUFFile`) and `minicpmv-edge inspect`.

Reference: gguf-py (llama.cpp's own Python reader/writer) on the same files, plus the values we
wrote. Files are written by gguf-py's GGUFWriter or byte by byte here from the format description
(RawGGUF), never by our code. All comparisons are exact: a reader either reproduces every byte and
value or it is wrong. Corruption cases run in a child process, so a crash fails the test with the
case that crashed instead of taking pytest down.
"""
import json
import math
import os
import struct
import subprocess
import sys
import textwrap

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")
from gguf import GGMLQuantizationType as QT  # noqa: E402
from gguf import GGUFValueType as VT  # noqa: E402

from minicpmv_edge._core import GGUFFile  # noqa: E402

RNG = np.random.default_rng(1234)


def f32(x):
    """The double that a float32 field holds for x (what both readers must return)."""
    return struct.unpack("<f", struct.pack("<f", x))[0]


def type_str_from_gguf_py(types):
    """gguf-py's field.types ([ARRAY, ARRAY, INT32]) as our metadata_types string."""
    names = [t.name.lower() for t in types]
    s = names[-1]
    for _ in names[:-1]:
        s = f"array[{s}]"
    return s


def flatten(v):
    if isinstance(v, list):
        return [y for x in v for y in flatten(x)]
    return [v]


def compare_with_gguf_py(path):
    """Everything our reader returns against gguf-py's GGUFReader on the same file."""
    ours = GGUFFile(path)
    ref = gguf.GGUFReader(path)
    assert ours.version == ref.fields["GGUF.version"].contents()
    assert ours.alignment == ref.alignment
    assert ours.data_offset == ref.data_offset
    assert ours.file_size == os.path.getsize(path)

    ref_fields = [(k, f) for k, f in ref.fields.items() if not k.startswith("GGUF.")]
    md, types = ours.metadata, ours.metadata_types
    assert list(md) == [k for k, _ in ref_fields], "keys or their order differ"
    for key, field in ref_fields:
        theirs = field.contents()
        mine = md[key]
        # gguf-py flattens arrays of arrays (its FIXME); our nesting is checked against the input.
        assert flatten(mine) == flatten(theirs), key
        assert [type(x) for x in flatten(mine)] == [type(x) for x in flatten(theirs)], key  # bool vs int etc.
        if not (isinstance(theirs, list) and not theirs):  # gguf-py drops the item type of []
            assert types[key] == type_str_from_gguf_py(field.types), key
        assert ours.metadata_value(key) == mine

    assert len(ours.tensors) == len(ref.tensors)
    for mine, t in zip(ours.tensors, ref.tensors):
        assert mine["name"] == t.name
        assert mine["type_id"] == int(t.tensor_type)
        assert mine["type"].lower() == t.tensor_type.name.lower()
        assert mine["shape"] == [int(x) for x in t.shape]
        assert ours.data_offset + mine["offset"] == t.data_offset
        assert mine["nbytes"] == t.n_bytes
        b = ours.tensor_bytes(t.name)
        assert b.dtype == np.uint8 and b.shape == (t.n_bytes,) and not b.flags.writeable
        assert b.tobytes() == np.ascontiguousarray(t.data).tobytes(), t.name
    return ours


# ---------------------------------------------------------------------------------------------
# A file with every value type, written by gguf-py

SCALARS = [  # (key, add-method, value)
    ("t.u8", "add_uint8", 255), ("t.i8", "add_int8", -128), ("t.u16", "add_uint16", 65535),
    ("t.i16", "add_int16", -32768), ("t.u32", "add_uint32", 2**32 - 1), ("t.i32", "add_int32", -2**31),
    ("t.f32", "add_float32", 3.14159), ("t.u64", "add_uint64", 2**64 - 1), ("t.i64", "add_int64", -2**63),
    ("t.f64", "add_float64", math.pi), ("t.bool_t", "add_bool", True), ("t.bool_f", "add_bool", False),
    ("t.str", "add_string", "h\u00e9llo \u2713 \U0001F600"),
]
ARRAYS = [  # (key, item type, values)
    ("a.u8", VT.UINT8, [0, 1, 255]), ("a.i8", VT.INT8, [-128, 0, 127]),
    ("a.u16", VT.UINT16, [0, 65535]), ("a.i16", VT.INT16, [-32768, 32767]),
    ("a.u32", VT.UINT32, [0, 2**32 - 1, 7]), ("a.i32", VT.INT32, [-2**31, 2**31 - 1]),
    ("a.f32", VT.FLOAT32, [0.5, -0.0, 1e-45, float("inf"), 3.3]),
    ("a.u64", VT.UINT64, [2**64 - 1, 0]), ("a.i64", VT.INT64, [-2**63, 2**63 - 1]),
    ("a.f64", VT.FLOAT64, [math.e, -1e300]), ("a.bool", VT.BOOL, [True, False, True]),
    ("a.str", VT.STRING, ["", "a", "\u4f60\u597d", "x" * 300]),
    ("tokenizer.ggml.tokens", VT.STRING, [f"tok{i}" for i in range(300)]),
    ("tokenizer.ggml.token_type", VT.INT32, [1] * 300),
]
NESTED = [("n.ints", [[1, 2, 3], [4], [-5, 6]]), ("n.strs", [["a", "b"], ["c"]])]
EMPTY_STRING_KEY = "t.empty_str"


def _tensors():
    def raw(qt, byte_shape):
        return RNG.integers(0, 256, size=byte_shape, dtype=np.uint8), qt

    return {  # name -> (array, raw ggml type or None)
        "t.f32.1d": (RNG.standard_normal(7).astype(np.float32), None),
        "t.f16.2d": (RNG.standard_normal((3, 5)).astype(np.float16), None),
        "t.f32.3d": (RNG.standard_normal((2, 3, 4)).astype(np.float32), None),
        "t.f16.4d": (RNG.standard_normal((2, 1, 3, 2)).astype(np.float16), None),
        "t.i32": (np.arange(-2, 3, dtype=np.int32), None),
        "t.q8_0": raw(QT.Q8_0, (4, 2 * 34)),
        "t.q4_K": raw(QT.Q4_K, (2, 144)),
        "t.q6_K.3d": raw(QT.Q6_K, (2, 3, 210)),
        "t.q4_0": raw(QT.Q4_0, (1, 18)),
        "t.bf16": raw(QT.BF16, (2, 8)),
    }


@pytest.fixture(scope="module")
def rich(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("gguf") / "rich.gguf")
    w = gguf.GGUFWriter(path, "testarch")
    w.add_custom_alignment(64)
    for key, method, value in SCALARS:
        getattr(w, method)(key, value)
    w.add_key_value(EMPTY_STRING_KEY, "", VT.STRING)  # add_string() skips empty strings
    for key, vt, values in ARRAYS:
        w.add_key_value(key, values, VT.ARRAY, sub_type=vt)
    for key, values in NESTED:
        w.add_key_value(key, values, VT.ARRAY, sub_type=VT.ARRAY)
    tensors = _tensors()
    for name, (arr, qt) in tensors.items():
        w.add_tensor(name, arr, raw_dtype=qt)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path, tensors


def test_rich_file_matches_gguf_py(rich):
    compare_with_gguf_py(rich[0])


def test_rich_file_matches_what_was_written(rich):
    path, tensors = rich
    f = GGUFFile(path)
    assert f.version == 3 and f.alignment == 64 and f.data_offset % 64 == 0
    assert f.architecture == "testarch"
    md, types = f.metadata, f.metadata_types
    for key, method, value in SCALARS:
        want = f32(value) if method == "add_float32" else value
        assert md[key] == want and type(md[key]) is type(value), key
        assert types[key] == method[len("add_"):], key  # add_uint8 -> "uint8", add_string -> "string"
    assert md[EMPTY_STRING_KEY] == "" and types[EMPTY_STRING_KEY] == "string"
    for key, vt, values in ARRAYS:
        want = [f32(v) for v in values] if vt == VT.FLOAT32 else values
        assert md[key] == want, key
        assert types[key] == f"array[{vt.name.lower()}]"
    for key, values in NESTED:
        assert md[key] == values, key
    assert types["n.ints"] == "array[array[int32]]" and types["n.strs"] == "array[array[string]]"

    info = {t["name"]: t for t in f.tensors}
    assert list(info) == list(tensors)
    for name, (arr, qt) in tensors.items():
        t = info[name]
        if qt is None:
            assert t["shape"] == list(arr.shape[::-1])  # ggml ne order: innermost first
        else:
            bs, ts = gguf.GGML_QUANT_SIZES[qt]
            assert t["shape"] == [arr.shape[-1] // ts * bs, *arr.shape[-2::-1]]
        assert t["offset"] % 64 == 0
        assert f.tensor_bytes(name).tobytes() == arr.tobytes(), name
    assert [len(t["shape"]) for t in f.tensors][:4] == [1, 2, 3, 4]


def test_tensor_bytes_keeps_file_alive_and_is_read_only(rich):
    path, tensors = rich
    f = GGUFFile(path)
    b = f.tensor_bytes("t.f32.3d")
    del f
    import gc

    gc.collect()
    assert b.tobytes() == tensors["t.f32.3d"][0].tobytes()
    with pytest.raises(ValueError):
        b[0] = 1
    with pytest.raises(ValueError):
        b.setflags(write=True)
    g = GGUFFile(path)
    with pytest.raises(ValueError, match="not found"):
        g.tensor_bytes("no.such.tensor")
    with pytest.raises(KeyError):
        g.metadata_value("no.such.key")


def test_open_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.gguf"):
        GGUFFile(str(tmp_path / "nope.gguf"))
    with pytest.raises(OSError, match="not a regular file"):
        GGUFFile(str(tmp_path))
    fifo = tmp_path / "fifo.gguf"
    os.mkfifo(fifo)
    with pytest.raises(OSError, match="not a regular file"):  # and does not block waiting for a writer
        GGUFFile(str(fifo))
    empty = tmp_path / "empty.gguf"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="truncated"):
        GGUFFile(str(empty))
    # os.PathLike is accepted
    assert GGUFFile(write_raw(tmp_path / "p.gguf", RawGGUF().build())).version == 3


# ---------------------------------------------------------------------------------------------
# Hand-built files (byte by byte), for version 2 and for precise corruption

class RawGGUF:
    """Writes GGUF from the format description; records where each field is, for patching."""

    def __init__(self, version=3, alignment=None, kvs=None, tensors=None, big_endian=False):
        self.version = version
        self.alignment = alignment
        self.kvs = kvs if kvs is not None else [
            ("general.architecture", VT.STRING, "qwen2"),
            ("qwen2.block_count", VT.UINT32, 28),
            ("tokenizer.ggml.tokens", (VT.ARRAY, VT.STRING), ["<a>", "b", "\u00e9"]),
            ("clip.vision.image_mean", (VT.ARRAY, VT.FLOAT32), [0.5, 0.5, 0.5]),
            ("empty.ints", (VT.ARRAY, VT.INT32), []),
            ("empty.str", VT.STRING, ""),
        ]
        # (name, ggml type, ne list, offset or None = next aligned)
        self.tensors = tensors if tensors is not None else [
            ("token_embd.weight", QT.Q8_0, [64, 3], None),
            ("output_norm.weight", QT.F32, [64], None),
            ("v.patch_embd.weight", QT.F16, [14, 14, 3, 2], None),
        ]
        self.big_endian = big_endian
        self.at = {}

    def _scalar(self, vt, v):
        fmt = {VT.UINT8: "B", VT.INT8: "b", VT.UINT16: "H", VT.INT16: "h", VT.UINT32: "I", VT.INT32: "i",
               VT.FLOAT32: "f", VT.BOOL: "?", VT.UINT64: "Q", VT.INT64: "q", VT.FLOAT64: "d"}[vt]
        return struct.pack("<" + fmt, v)

    def _string(self, s):
        b = s.encode() if isinstance(s, str) else s
        return struct.pack("<Q", len(b)) + b

    def _value(self, vt, v):
        if isinstance(vt, tuple):  # (ARRAY, item type)
            _, it = vt
            out = struct.pack("<IQ", int(it), len(v))
            for x in v:
                out += self._string(x) if it == VT.STRING else self._scalar(it, x)
            return out
        return self._string(v) if vt == VT.STRING else self._scalar(vt, v)

    def build(self):
        b = bytearray()

        def mark(name):
            self.at[name] = len(b)

        mark("magic")
        b += b"GGUF"
        mark("version")
        b += struct.pack(">I" if self.big_endian else "<I", self.version)
        mark("n_tensors")
        b += struct.pack("<Q", len(self.tensors))
        mark("n_kv")
        kvs = list(self.kvs)
        if self.alignment is not None:
            kvs.append(("general.alignment", VT.UINT32, self.alignment))
        b += struct.pack("<Q", len(kvs))
        for k, (key, vt, v) in enumerate(kvs):
            mark(f"kv{k}")
            b += self._string(key)
            mark(f"kv{k}.type")
            b += struct.pack("<I", int(vt[0] if isinstance(vt, tuple) else vt))
            mark(f"kv{k}.value")
            b += self._value(vt, v)
        align = self.alignment or 32
        offset = 0
        sizes = []
        for k, (name, qt, ne, off) in enumerate(self.tensors):
            bs, ts = gguf.GGML_QUANT_SIZES[qt]
            nbytes = int(np.prod(ne)) // bs * ts
            sizes.append(nbytes)
            mark(f"t{k}")
            b += self._string(name)
            mark(f"t{k}.n_dims")
            b += struct.pack("<I", len(ne))
            mark(f"t{k}.ne")
            b += struct.pack(f"<{len(ne)}Q", *ne)
            mark(f"t{k}.type")
            b += struct.pack("<I", int(qt))
            mark(f"t{k}.offset")
            b += struct.pack("<Q", offset if off is None else off)
            offset += (nbytes + align - 1) // align * align
        mark("end_of_infos")
        b += bytes(-len(b) % align)
        mark("data")
        for nbytes in sizes:
            b += RNG.integers(0, 256, nbytes, dtype=np.uint8).tobytes()
            b += bytes(-len(b) % align)
        return bytes(b)


def patch(data, at, fmt, value):
    b = bytearray(data)
    struct.pack_into("<" + fmt, b, at, value)
    return bytes(b)


def write_raw(path, data):
    with open(path, "wb") as fp:
        fp.write(data)
    return path


def test_version2_hand_built(tmp_path):
    raw = RawGGUF(version=2)
    path = write_raw(tmp_path / "v2.gguf", raw.build())
    f = compare_with_gguf_py(str(path))
    assert f.version == 2 and f.alignment == 32 and f.data_offset == raw.at["data"]
    md = f.metadata
    assert md["tokenizer.ggml.tokens"] == ["<a>", "b", "\u00e9"]
    assert md["empty.ints"] == [] and md["empty.str"] == ""
    assert f.metadata_types["empty.ints"] == "array[int32]"
    assert [t["shape"] for t in f.tensors] == [[64, 3], [64], [14, 14, 3, 2]]
    assert [t["type"] for t in f.tensors] == ["q8_0", "f32", "f16"]


def test_file_larger_than_4gb(tmp_path):
    """64-bit offsets end to end: a sparse file with a tensor 5 GiB into the data section."""
    off = 5 << 30
    raw = RawGGUF(kvs=[("general.architecture", VT.STRING, "big")],
                  tensors=[("small", QT.F32, [4], None), ("far", QT.F32, [16], off)])
    head = raw.build()
    data_at = raw.at["data"]
    path = tmp_path / "big.gguf"
    marker = np.arange(16, dtype=np.float32) + 0.25
    with open(path, "wb") as fp:
        fp.write(head)
        fp.seek(data_at + off)
        fp.write(marker.tobytes())
    st = os.stat(path)
    if st.st_blocks * 512 > (256 << 20):
        pytest.skip("filesystem without sparse files")
    f = GGUFFile(str(path))
    assert f.file_size == data_at + off + 64 > 2**32
    far = [t for t in f.tensors if t["name"] == "far"][0]
    assert far["offset"] == off
    assert np.array_equal(f.tensor_bytes("far").view(np.float32), marker)


# ---------------------------------------------------------------------------------------------
# Corruption: every case must raise ValueError naming the file (run in a child process)

CHILD = textwrap.dedent("""
    import json, sys
    from minicpmv_edge._core import GGUFFile
    cases = json.load(open(sys.argv[1]))
    results = {}
    for c in cases:
        sys.stderr.write(c["label"] + "\\n"); sys.stderr.flush()
        if "src" in c:   # a prefix of src
            with open(c["src"], "rb") as fp:
                data = fp.read(c["len"])
            with open(c["path"], "wb") as fp:
                fp.write(data)
        try:
            f = GGUFFile(c["path"])
            f.metadata; f.tensors
            results[c["label"]] = ["ok", ""]
        except ValueError as e:
            results[c["label"]] = ["ValueError", str(e)]
        except Exception as e:
            results[c["label"]] = [type(e).__name__, str(e)]
    print(json.dumps(results))
""")


def run_cases(tmp_path, cases):
    spec = tmp_path / "cases.json"
    spec.write_text(json.dumps(cases))
    r = subprocess.run([sys.executable, "-c", CHILD, str(spec)], capture_output=True, text=True, timeout=300)
    last = r.stderr.strip().splitlines()[-1:] if r.stderr.strip() else ["(none)"]
    assert r.returncode == 0, f"reader crashed (exit {r.returncode}) on case {last}: {r.stderr[-2000:]}"
    return json.loads(r.stdout)


def test_every_truncation_is_a_value_error(rich, tmp_path):
    src, _ = rich
    f = GGUFFile(src)
    data_offset = f.data_offset
    # the padding after the last tensor is not needed: cutting it leaves a complete file
    data_end = data_offset + max(t["offset"] + t["nbytes"] for t in f.tensors)
    lengths = list(range(0, data_offset + 1)) + sorted(
        set(np.linspace(data_offset + 1, data_end - 1, 60).astype(int).tolist()))
    out = str(tmp_path / "trunc.gguf")
    cases = [{"label": f"len{n}", "src": src, "len": n, "path": out} for n in lengths]
    res = run_cases(tmp_path, cases)
    bad = {k: v for k, v in res.items() if v[0] != "ValueError" or out not in v[1] or "truncated" not in v[1]}
    assert not bad, f"{len(bad)} of {len(res)} truncations not a ValueError naming the file: " \
                    f"{list(bad.items())[:5]}"
    assert len(res) == len(lengths) > 1000


def corrupt_cases(tmp_path):
    """(label, bytes, substring the message must contain)."""
    base = RawGGUF()
    good = base.build()
    at = base.at
    cases = [
        ("wrong magic", patch(good, 0, "4s", b"GGML"), "not a GGUF file"),
        ("version 1", patch(good, at["version"], "I", 1), "unsupported GGUF version 1"),
        ("version 4", patch(good, at["version"], "I", 4), "unsupported GGUF version 4"),
        ("big endian", RawGGUF(big_endian=True).build(), "big-endian"),
        ("huge tensor count", patch(good, at["n_tensors"], "Q", 1 << 60), "tensor infos need more than 2^64 bytes"),
        ("tensor count 1000", patch(good, at["n_tensors"], "Q", 1000), "1000 tensor infos need at least 24000 bytes"),
        ("huge kv count", patch(good, at["n_kv"], "Q", 2**64 - 1), "metadata entries need more than 2^64"),
        ("huge key length", patch(good, at["kv1"], "Q", 1 << 62), "truncated while reading metadata entry 1"),
        ("huge string value", patch(good, at["kv0.value"], "Q", 2**64 - 9), "metadata entry 0 ('general.architecture')"),
        ("huge array count", patch(good, at["kv2.value"] + 4, "Q", 1 << 61), "string array items need more than 2^64"),
        ("huge float array", patch(good, at["kv3.value"] + 4, "Q", 10**12), "float32 array items need at least"),
        ("unknown value type", patch(good, at["kv1.type"], "I", 13), "unknown metadata value type 13"),
        ("unknown array item type", patch(good, at["kv2.value"], "I", 99), "unknown array item value type 99"),
        ("huge tensor name", patch(good, at["t1"], "Q", 1 << 40), "truncated while reading tensor info 1"),
        ("n_dims 5", patch(good, at["t0.n_dims"], "I", 5), "5 dimensions"),
        ("n_dims huge", patch(good, at["t0.n_dims"], "I", 2**32 - 1), "dimensions, at most 4"),
        ("ne zero", patch(good, at["t1.ne"], "Q", 0), "must be > 0"),
        ("ne overflow", patch(patch(good, at["t2.ne"], "Q", 2**40), at["t2.ne"] + 8, "Q", 2**40), "overflows"),
        ("ne negative", patch(good, at["t1.ne"], "Q", 2**63), "must be > 0"),
        # 2^62 f32 elements: 2^64 bytes, which wraps to 0 in 64 bits if the row size is not checked
        ("row bytes overflow", patch(good, at["t1.ne"], "Q", 2**62), "byte size overflows 64 bits"),
        ("unknown type id 99", patch(good, at["t0.type"], "I", 99), "'token_embd.weight' has unknown ggml type id 99"),
        ("removed type id 4", patch(good, at["t0.type"], "I", 4), "unknown ggml type id 4"),
        ("ne0 not a block multiple", patch(good, at["t0.ne"], "Q", 48), "not a multiple of the block size 32"),
        ("offset past end", patch(good, at["t2.offset"], "Q", 1 << 20), "'v.patch_embd.weight'"),
        ("offset near 2^64", patch(good, at["t2.offset"], "Q", 2**64 - 32), "truncated"),
        ("misaligned offset", patch(good, at["t1.offset"], "Q", 256 + 4), "not a multiple of the alignment 32"),
        ("overlap", patch(good, at["t1.offset"], "Q", 0), "overlap"),
        ("alignment 0", RawGGUF(alignment=0).build(), "nonzero power of two"),
        ("alignment 48", RawGGUF(alignment=48).build(), "nonzero power of two"),
        ("alignment string", RawGGUF(kvs=[("general.alignment", VT.STRING, "64")]).build(), "general.alignment has type string"),
        ("duplicate key", RawGGUF(kvs=[("a", VT.UINT8, 1), ("a", VT.UINT8, 2)]).build(), "duplicate metadata key 'a'"),
        ("duplicate tensor", RawGGUF(tensors=[("w", QT.F32, [4], None), ("w", QT.F32, [4], None)]).build(),
         "duplicate tensor name 'w'"),
        ("cut in data", good[:at["data"] + 100], "truncated"),
    ]
    small = RawGGUF(tensors=[("w", QT.F32, [4], None)])
    cases.append(("no data section", small.build()[:small.at["end_of_infos"]], "data section starts at"))
    # arrays of arrays nested deeper than the reader allows
    deep = b""
    for _ in range(20):
        deep = struct.pack("<IQ", int(VT.ARRAY), 1) + deep
    deep = deep + struct.pack("<IQ", int(VT.UINT8), 0)
    kv = struct.pack("<Q", 4) + b"deep" + struct.pack("<I", int(VT.ARRAY)) + deep
    deep_file = b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + kv
    cases.append(("nested too deep", deep_file, "nested deeper than"))
    return cases


def test_corrupt_fields_are_value_errors(tmp_path):
    cases = corrupt_cases(tmp_path)
    spec = []
    for k, (label, data, _) in enumerate(cases):
        path = write_raw(tmp_path / f"bad{k}.gguf", data)
        spec.append({"label": label, "path": str(path)})
    res = run_cases(tmp_path, spec)
    for k, (label, _, needle) in enumerate(cases):
        kind, msg = res[label]
        assert kind == "ValueError", f"{label}: {kind} {msg}"
        assert str(tmp_path / f"bad{k}.gguf") in msg, f"{label}: path missing in {msg!r}"
        assert needle in msg, f"{label}: {msg!r} lacks {needle!r}"
    # the unpatched file reads, so each failure above is due to its one patch
    ok = GGUFFile(write_raw(tmp_path / "good.gguf", RawGGUF().build()))
    assert len(ok.tensors) == 3


def test_random_byte_flips_never_crash(rich, tmp_path):
    """Flip bytes in the header: either the file still reads, or a ValueError; nothing else."""
    src, _ = rich
    data = open(src, "rb").read()
    header = GGUFFile(src).data_offset
    rng = np.random.default_rng(7)
    spec = []
    for k in range(300):
        b = bytearray(data[:header + 4096])
        for pos in rng.integers(0, header, size=int(rng.integers(1, 4))):
            b[pos] = int(rng.integers(0, 256))
        path = write_raw(tmp_path / f"flip{k}.gguf", bytes(b))
        spec.append({"label": f"flip{k}", "path": str(path)})
    res = run_cases(tmp_path, spec)
    odd = {k: v for k, v in res.items() if v[0] not in ("ok", "ValueError")}
    assert not odd, list(odd.items())[:5]
    assert sum(v[0] == "ValueError" for v in res.values()) > 100


# ---------------------------------------------------------------------------------------------
# `minicpmv-edge inspect` on llama.cpp-style layouts (spec 9.2 LLM, 9.3 mmproj), tiny sizes

def write_llm(path, n_vocab=300, n_embd=256):
    w = gguf.GGUFWriter(str(path), "qwen2")
    w.add_uint32("qwen2.block_count", 1)
    w.add_uint32("qwen2.context_length", 32768)
    w.add_uint32("qwen2.embedding_length", n_embd)
    w.add_uint32("qwen2.feed_forward_length", 512)
    w.add_uint32("qwen2.attention.head_count", 4)
    w.add_uint32("qwen2.attention.head_count_kv", 2)
    w.add_float32("qwen2.rope.freq_base", 1e6)
    w.add_float32("qwen2.attention.layer_norm_rms_epsilon", 1e-6)
    w.add_string("tokenizer.ggml.model", "gpt2")
    w.add_string("tokenizer.ggml.pre", "qwen2")
    w.add_array("tokenizer.ggml.tokens", [f"tok{i}" for i in range(n_vocab)])
    w.add_array("tokenizer.ggml.token_type", [1] * n_vocab)
    w.add_array("tokenizer.ggml.merges", [f"t o{i}" for i in range(200)])
    w.add_uint32("tokenizer.ggml.bos_token_id", 151644 % n_vocab)
    w.add_string("tokenizer.chat_template", "{% for message in messages %}" * 10)

    def q(name, qt, rows, cols):
        bs, ts = gguf.GGML_QUANT_SIZES[qt]
        w.add_tensor(name, RNG.integers(0, 256, (rows, cols // bs * ts), dtype=np.uint8), raw_dtype=qt)

    q("token_embd.weight", QT.Q4_K, n_vocab, n_embd)
    w.add_tensor("output_norm.weight", np.ones(n_embd, np.float32))
    q("output.weight", QT.Q6_K, n_vocab, n_embd)
    w.add_tensor("blk.0.attn_norm.weight", np.ones(n_embd, np.float32))
    q("blk.0.attn_q.weight", QT.Q4_K, n_embd, n_embd)
    w.add_tensor("blk.0.attn_q.bias", np.zeros(n_embd, np.float32))
    q("blk.0.attn_k.weight", QT.Q4_K, 128, n_embd)
    q("blk.0.ffn_down.weight", QT.Q6_K, n_embd, 512)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return str(path)


def write_mmproj(path):
    w = gguf.GGUFWriter(str(path), "clip")
    w.add_bool("clip.has_text_encoder", False)
    w.add_bool("clip.has_vision_encoder", True)
    w.add_bool("clip.has_minicpmv_projector", True)
    w.add_uint32("general.file_type", 1)
    w.add_string("general.description", "image encoder for MiniCPM-V")
    w.add_string("clip.projector_type", "resampler")
    w.add_int32("clip.minicpmv_version", 3)
    w.add_uint32("clip.vision.image_size", 448)
    w.add_uint32("clip.vision.patch_size", 14)
    w.add_float32("clip.vision.attention.layer_norm_epsilon", 1e-6)
    w.add_array("clip.vision.image_mean", [0.5, 0.5, 0.5])
    w.add_array("clip.vision.image_std", [0.5, 0.5, 0.5])
    w.add_bool("clip.use_gelu", True)
    w.add_tensor("v.patch_embd.weight", RNG.standard_normal((8, 3, 14, 14)).astype(np.float16))
    w.add_tensor("v.patch_embd.bias", np.zeros(8, np.float32))
    w.add_tensor("v.blk.0.ffn_down.weight", RNG.standard_normal((16, 8)).astype(np.float16))
    w.add_tensor("resampler.query", RNG.standard_normal((4, 32)).astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return str(path)


def cli(*args):
    return subprocess.run([sys.executable, "-m", "minicpmv_edge", "inspect", *map(str, args)],
                          capture_output=True, text=True, timeout=120)


def test_inspect_llm_text(tmp_path):
    path = write_llm(tmp_path / "ggml-model-Q4_K_M.gguf")
    ref = gguf.GGUFReader(path)
    r = cli(path)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert "architecture  qwen2" in lines
    assert "version       3" in lines
    assert f"tensors       {len(ref.tensors)} (" in r.stdout
    tok = [ln for ln in lines if ln.split()[:1] == ["tokenizer.ggml.tokens"]]
    assert tok and tok[0].split()[1:] == ["array[string]", "[300", "strings]"], tok
    rope = [ln for ln in lines if ln.split()[:1] == ["qwen2.rope.freq_base"]][0].split()
    assert rope[1] == "float32" and float(rope[2]) == 1e6
    assert any(ln.split()[:1] == ["tokenizer.chat_template"] and "chars)" in ln for ln in lines)
    for t in ref.tensors:  # one table row per tensor: index, name, type, shape, bytes
        row = [ln for ln in lines if ln.split()[1:2] == [t.name]]
        assert len(row) == 1, t.name
        shape = "[" + ", ".join(str(int(x)) for x in t.shape) + "]"
        assert row[0].split()[2] == t.tensor_type.name.lower().replace("_k", "_K")
        assert shape in row[0] and row[0].split()[-1] == str(t.n_bytes)
    by_type = {}
    for t in ref.tensors:
        by_type.setdefault(t.tensor_type.name, []).append(t.n_bytes)
    for name, sizes in by_type.items():
        tot = [ln for ln in lines if ln.split()[:1] == [name.lower().replace("_k", "_K")] and "tensors" in ln]
        assert tot and tot[0].split()[1] == str(len(sizes)) and tot[0].split()[3] == str(sum(sizes)), name
    assert [ln for ln in lines if ln.split()[:1] == ["total"]][0].split()[1] == str(len(ref.tensors))

    full = cli(path, "--all-metadata")
    assert full.returncode == 0
    assert '"tok299"' in full.stdout and "[300 strings]" not in full.stdout


def test_inspect_json_matches_gguf_py(tmp_path):
    for path in (write_llm(tmp_path / "llm.gguf"), write_mmproj(tmp_path / "mmproj-model-f16.gguf")):
        ref = gguf.GGUFReader(path)
        r = cli(path, "--json")
        assert r.returncode == 0, r.stderr
        info = json.loads(r.stdout)
        assert info["version"] == 3 and info["data_offset"] == ref.data_offset
        assert info["architecture"] == ref.fields["general.architecture"].contents()
        assert info["n_tensors"] == len(ref.tensors)
        for t, ours in zip(ref.tensors, info["tensors"]):
            assert (ours["name"], ours["type_id"], ours["shape"], info["data_offset"] + ours["offset"], ours["nbytes"]) \
                == (t.name, int(t.tensor_type), [int(x) for x in t.shape], t.data_offset, t.n_bytes)
        for key, field in ref.fields.items():
            if key.startswith("GGUF."):
                continue
            e = info["metadata"][key]
            v = field.contents()
            if isinstance(v, list) and len(v) > 8:
                assert e["count"] == len(v) and "value" not in e
            else:
                assert e["value"] == v, key
        assert info["tensor_bytes"] == sum(t.n_bytes for t in ref.tensors)
    assert info["metadata"]["clip.vision.image_mean"]["value"] == [0.5, 0.5, 0.5]
    assert info["tensors"][0]["shape"] == [14, 14, 3, 8]


def test_inspect_bad_files(tmp_path):
    bad = write_raw(tmp_path / "bad.gguf", patch(RawGGUF().build(), 4, "I", 1))
    r = cli(bad)
    assert r.returncode == 1 and r.stdout == ""
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("minicpmv-edge inspect: error:") and str(bad) in err[0]
    assert "unsupported GGUF version 1" in err[0]
    r = cli(tmp_path / "missing.gguf")
    assert r.returncode == 1 and "missing.gguf" in r.stderr and len(r.stderr.strip().splitlines()) == 1
