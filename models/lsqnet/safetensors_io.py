"""safetensors_io.py - read and write the safetensors format without the safetensors package.

Debian ships no Python safetensors, so the format is written directly:
  8-byte little-endian header length N, N bytes of JSON
  {"__metadata__": {str: str}, name: {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...}
  (padded with spaces to a multiple of 8), then the raw little-endian tensor bytes, contiguous and in
  header order; offsets are relative to the end of the header.
"""
import json
import struct
import sys

import torch

# Tensor bytes are copied as the host lays them out; the format is little-endian.
assert sys.byteorder == "little", "safetensors_io supports little-endian hosts only"

# safetensors dtype name -> (torch dtype, bytes per element)
_DTYPES = {
    "F32": (torch.float32, 4),
    "F16": (torch.float16, 2),
    "BF16": (torch.bfloat16, 2),
    "F64": (torch.float64, 8),
    "I8": (torch.int8, 1),
    "U8": (torch.uint8, 1),
    "I16": (torch.int16, 2),
    "I32": (torch.int32, 4),
    "I64": (torch.int64, 8),
    "BOOL": (torch.bool, 1),
}
_NAMES = {dt: name for name, (dt, _) in _DTYPES.items()}

# Refuse absurd headers before json.loads sees them (the real package uses the same 100 MB limit).
MAX_HEADER_BYTES = 100 * 1000 * 1000


def _tensor_bytes(t):
    t = t.detach().cpu().contiguous()
    if t.dtype == torch.bfloat16:  # numpy has no bfloat16: move the raw bits through int16
        t = t.view(torch.int16)
    return t.numpy().tobytes()


def save(path, tensors, metadata=None):
    """Write tensors (name -> torch.Tensor) and metadata (str -> str) to path."""
    metadata = metadata or {}
    for k, v in metadata.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise TypeError(f"safetensors metadata must map str to str, got {k!r}: {type(v).__name__}")
    header = {"__metadata__": dict(metadata)} if metadata else {}
    blobs, offset = [], 0
    for name, t in tensors.items():
        if name == "__metadata__":
            raise ValueError("'__metadata__' is reserved and cannot name a tensor")
        if t.dtype not in _NAMES:
            raise TypeError(f"tensor {name}: dtype {t.dtype} has no safetensors equivalent")
        b = _tensor_bytes(t)
        header[name] = {"dtype": _NAMES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(b)]}
        blobs.append(b)
        offset += len(b)
    h = json.dumps(header, separators=(",", ":")).encode("utf-8")
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def load(path):
    """Read path; returns (tensors: dict name -> torch.Tensor in header order, metadata: dict)."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 8:
        raise ValueError(f"{path}: too short for a safetensors header")
    (n,) = struct.unpack("<Q", data[:8])
    if n > MAX_HEADER_BYTES or 8 + n > len(data):
        raise ValueError(f"{path}: header length {n} exceeds the file ({len(data)} bytes)")
    header = json.loads(data[8:8 + n].decode("utf-8"))
    metadata = header.pop("__metadata__", {}) or {}
    body = memoryview(data)[8 + n:]
    tensors = {}
    for name, info in header.items():
        if info["dtype"] not in _DTYPES:
            raise ValueError(f"{path}: tensor {name}: unsupported dtype {info['dtype']}")
        dt, size = _DTYPES[info["dtype"]]
        shape = [int(s) for s in info["shape"]]
        begin, end = (int(x) for x in info["data_offsets"])
        numel = 1
        for s in shape:
            numel *= s
        if not (0 <= begin <= end <= len(body)) or end - begin != numel * size:
            raise ValueError(f"{path}: tensor {name}: data_offsets {begin},{end} do not fit shape {shape} x {size} bytes")
        raw = bytearray(body[begin:end])  # a writable copy, so torch.frombuffer does not warn
        if numel == 0:
            t = torch.empty(shape, dtype=dt)
        elif dt == torch.bfloat16:
            t = torch.frombuffer(raw, dtype=torch.int16).view(torch.bfloat16).reshape(shape)
        else:
            t = torch.frombuffer(raw, dtype=dt).reshape(shape)
        tensors[name] = t
    return tensors, metadata
