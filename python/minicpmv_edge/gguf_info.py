"""Summaries of GGUF files (ours and llama.cpp's), used by `minicpmv-edge inspect`.

The file is read by the C++ reader (`_core.GGUFFile`): a corrupt or truncated file raises
ValueError naming the file and what is wrong; a missing one FileNotFoundError.
"""
import json

SHORT_ARRAY = 8     # arrays up to this many items are shown in full
SHORT_STRING = 72   # strings longer than this are cut in the text summary


def open_gguf(path):
    from ._core import GGUFFile

    return GGUFFile(str(path))


def human_bytes(n):
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1000.0
    return f"{n:.2f} TB"


def _plural(vtype):
    inner = vtype[len("array["):-1] if vtype.startswith("array[") else vtype
    if inner == "string":
        return "strings"
    if inner.startswith("array"):
        return "arrays"
    return f"{inner} values"


def _fmt_scalar(v, full, f32=False):
    if isinstance(v, str):
        if not full and len(v) > SHORT_STRING:
            return json.dumps(v[:SHORT_STRING], ensure_ascii=False)[:-1] + f'..." ({len(v)} chars)'
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        if f32:  # shortest text that reads back as the same float32 (1e-06, not 9.99999997e-07)
            import numpy as np

            return str(np.float32(v))
        return repr(v)
    if isinstance(v, list):
        return "[" + ", ".join(_fmt_scalar(x, full, f32) for x in v) + "]"
    return str(v)


def format_value(value, vtype, full=False):
    """One-line text for a metadata value; long arrays become "[151666 strings]" unless full."""
    f32 = "float32" in vtype
    if isinstance(value, list):
        if not full and len(value) > SHORT_ARRAY:
            return f"[{len(value)} {_plural(vtype)}]"
    return _fmt_scalar(value, full, f32)


def describe(path, all_metadata=False):
    """A JSON-able description: header fields, metadata (long arrays reduced to their length
    unless all_metadata), tensor infos and byte totals per type."""
    f = open_gguf(path)
    metadata = {}
    types = f.metadata_types
    for key, value in f.metadata.items():
        entry = {"type": types[key]}
        if isinstance(value, list) and not all_metadata and len(value) > SHORT_ARRAY:
            entry["count"] = len(value)
        else:
            entry["value"] = value
            if isinstance(value, list):
                entry["count"] = len(value)
        metadata[key] = entry
    tensors = f.tensors
    totals = {}
    for t in tensors:
        tot = totals.setdefault(t["type"], {"count": 0, "nbytes": 0})
        tot["count"] += 1
        tot["nbytes"] += t["nbytes"]
    return {
        "path": str(path),
        "file_size": f.file_size,
        "version": f.version,
        "alignment": f.alignment,
        "data_offset": f.data_offset,
        "architecture": f.architecture,
        "n_metadata": len(metadata),
        "n_tensors": len(tensors),
        "metadata": metadata,
        "tensors": tensors,
        "totals_by_type": totals,
        "tensor_bytes": sum(t["nbytes"] for t in tensors),
    }


def format_text(info, all_metadata=False):
    out = []
    add = out.append
    add(f"file          {info['path']} ({human_bytes(info['file_size'])}, {info['file_size']} bytes)")
    add(f"architecture  {info['architecture'] if info['architecture'] is not None else '(none)'}")
    add(f"version       {info['version']}")
    add(f"alignment     {info['alignment']}")
    add(f"data offset   {info['data_offset']}")
    add(f"metadata      {info['n_metadata']} keys")
    add(f"tensors       {info['n_tensors']} ({human_bytes(info['tensor_bytes'])})")

    add("")
    add("metadata:")
    if info["metadata"]:
        kw = max(len(k) for k in info["metadata"])
        tw = max(len(e["type"]) for e in info["metadata"].values())
        for key, e in info["metadata"].items():
            if "value" in e:
                text = format_value(e["value"], e["type"], full=all_metadata)
            else:
                text = f"[{e['count']} {_plural(e['type'])}]"
            add(f"  {key:<{kw}}  {e['type']:<{tw}}  {text}")

    add("")
    add("tensors (shape in ggml order, ne[0] first):")
    rows = [(str(i), t["name"], t["type"], "[" + ", ".join(map(str, t["shape"])) + "]", str(t["nbytes"]))
            for i, t in enumerate(info["tensors"])]
    header = ("#", "name", "type", "shape", "bytes")
    if rows:
        w = [max(len(r[c]) for r in rows + [header]) for c in range(5)]
        add(f"  {header[0]:>{w[0]}}  {header[1]:<{w[1]}}  {header[2]:<{w[2]}}  {header[3]:<{w[3]}}  {header[4]:>{w[4]}}")
        for r in rows:
            add(f"  {r[0]:>{w[0]}}  {r[1]:<{w[1]}}  {r[2]:<{w[2]}}  {r[3]:<{w[3]}}  {r[4]:>{w[4]}}")

    add("")
    add("totals by type:")
    total = info["tensor_bytes"]
    for name, tot in sorted(info["totals_by_type"].items(), key=lambda kv: -kv[1]["nbytes"]):
        share = 100.0 * tot["nbytes"] / total if total else 0.0
        add(f"  {name:<6} {tot['count']:>6} tensors  {tot['nbytes']:>15} bytes  {share:5.1f}%")
    add(f"  {'total':<6} {info['n_tensors']:>6} tensors  {total:>15} bytes  ({human_bytes(total)})")
    return "\n".join(out)
