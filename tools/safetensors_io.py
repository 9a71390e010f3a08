"""Minimal hand-written safetensors writer/reader (no `safetensors` package needed).

File layout (https://github.com/huggingface/safetensors):
  * 8 bytes: little-endian u64 N = length of the JSON header in bytes
  * N bytes: UTF-8 JSON header
        {"<name>": {"dtype": "F32", "shape": [...], "data_offsets": [begin, end]},
         ...,
         "__metadata__": {"<str>": "<str>"}}
    data_offsets are relative to the first byte after the header; tensors are
    stored contiguously in header order. The header is padded with spaces so
    that N is a multiple of 8 (data section starts 8-byte aligned).
  * the raw little-endian tensor bytes (C order).

Only numpy is required; torch tensors are accepted by `write_safetensors` (they are
converted with `.detach().cpu().numpy()`).
"""

from __future__ import annotations

import json
import struct
from collections import OrderedDict
from typing import Any, Dict, Mapping, Optional, Tuple

import numpy as np

# safetensors dtype string <-> little-endian numpy dtype
_ST_TO_NP = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}
_KIND_TO_ST = {(v.kind, v.itemsize): k for k, v in _ST_TO_NP.items()}


def _to_numpy(t: Any) -> np.ndarray:
    if hasattr(t, "detach"):  # torch.Tensor
        import torch

        t = t.detach().cpu()
        if t.dtype == torch.bfloat16:
            raise TypeError("bfloat16: convert explicitly (e.g. .float()) before writing")
        return t.contiguous().numpy()
    return np.asarray(t)


def write_safetensors(
    path: str,
    tensors: Mapping[str, Any],
    metadata: Optional[Mapping[str, str]] = None,
    dtypes: Optional[Mapping[str, str]] = None,
) -> int:
    """Write `tensors` (name -> array/tensor, insertion order kept) to `path`.

    `dtypes` optionally maps a name to a target safetensors dtype ("F32", "F16", ...);
    otherwise the array's own dtype is used. Returns the file size in bytes.
    """
    header: "OrderedDict[str, Any]" = OrderedDict()
    blobs = []
    offset = 0
    for name, t in tensors.items():
        if name == "__metadata__":
            raise ValueError("'__metadata__' is reserved")
        a = _to_numpy(t)
        if dtypes is not None and name in dtypes:
            st = dtypes[name]
        else:
            st = _KIND_TO_ST.get((a.dtype.kind, a.dtype.itemsize))
            if st is None:
                raise TypeError(f"{name}: unsupported dtype {a.dtype}")
        a = np.ascontiguousarray(a.astype(_ST_TO_NP[st], copy=False))
        b = a.tobytes(order="C")
        header[name] = {"dtype": st, "shape": [int(s) for s in a.shape], "data_offsets": [offset, offset + len(b)]}
        blobs.append(b)
        offset += len(b)
    if metadata:
        md = OrderedDict()
        for k, v in metadata.items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise TypeError("__metadata__ must map str -> str")
            md[k] = v
        header["__metadata__"] = md
    hb = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    hb += b" " * ((8 - len(hb) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hb)))
        f.write(hb)
        for b in blobs:
            f.write(b)
    return 8 + len(hb) + offset


def read_safetensors(path: str) -> Tuple["OrderedDict[str, np.ndarray]", Dict[str, str]]:
    """Read a safetensors file. Returns (name -> numpy array in header order, metadata)."""
    with open(path, "rb") as f:
        raw = f.read()
    if len(raw) < 8:
        raise ValueError(f"{path}: too short")
    (n,) = struct.unpack("<Q", raw[:8])
    if 8 + n > len(raw):
        raise ValueError(f"{path}: header length {n} exceeds file size")
    header = json.loads(raw[8 : 8 + n].decode("utf-8"), object_pairs_hook=OrderedDict)
    metadata = dict(header.pop("__metadata__", {}) or {})
    data = memoryview(raw)[8 + n :]
    out: "OrderedDict[str, np.ndarray]" = OrderedDict()
    spans = []
    for name, info in header.items():
        dt = _ST_TO_NP[info["dtype"]]
        shape = tuple(info["shape"])
        b, e = info["data_offsets"]
        count = int(np.prod(shape)) if shape else 1
        if e - b != count * dt.itemsize or e > len(data) or b < 0:
            raise ValueError(f"{path}: bad data_offsets for {name}: {b},{e} shape {shape} {info['dtype']}")
        out[name] = np.frombuffer(data[b:e], dtype=dt).reshape(shape).copy()
        spans.append((b, e))
    spans.sort()
    pos = 0
    for b, e in spans:
        if b != pos:
            raise ValueError(f"{path}: data section not contiguous at {b} (expected {pos})")
        pos = e
    if pos != len(data):
        raise ValueError(f"{path}: {len(data) - pos} trailing bytes after tensors")
    return out, metadata


def read_header(path: str) -> Tuple["OrderedDict[str, Any]", Dict[str, str]]:
    """Read only the JSON header (name -> {dtype, shape, data_offsets}) and metadata."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n).decode("utf-8"), object_pairs_hook=OrderedDict)
    metadata = dict(header.pop("__metadata__", {}) or {})
    return header, metadata
