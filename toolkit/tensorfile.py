"""Safetensors files checked without trusting them: every tensor's extent inside the file, and file digests.

    from toolkit.tensorfile import check, sha256
    tensors = check(path, label="adapter")     # {name: (dtype, shape)}, or InputError naming the file
    digest = sha256(path)                       # hex sha256 of the bytes (checkpoint digests, publish verification)

A safetensors file is an 8-byte little-endian header length, a JSON header {name: {dtype, shape,
data_offsets: [begin, end]}} and the data. A file cut short keeps a readable header, so reading the header alone
(what publishing did) passes a truncated file; `check` also requires that every tensor's byte range has the
size its dtype and shape imply, lies inside the data, and that ranges do not overlap. Nothing is loaded.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

from toolkit.errors import InputError

DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
               "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}
MAX_HEADER = 100_000_000
"""the safetensors format's own limit on the header size"""


def sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _fail(label: str, path: Path, why: str):
    raise InputError(f"{label}: '{path}' is not a valid safetensors file ({why})")


def check(path: str | Path, *, label: str = "adapter") -> dict[str, tuple[str, tuple[int, ...]]]:
    """{tensor name: (dtype, shape)} of a structurally complete safetensors file; InputError otherwise.

        >>> check("adapters/x/adapter_model.safetensors")["base_model.model...lora_A.weight"]
        ('F32', (8, 64))
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                _fail(label, path, f"{size} bytes, shorter than a header")
            n = int.from_bytes(head, "little")
            if not 0 < n <= min(MAX_HEADER, size - 8):
                _fail(label, path, f"header length {n} does not fit a {size}-byte file")
            header = json.loads(f.read(n))
    except OSError as exc:
        raise InputError(f"{label}: cannot read '{path}' ({exc.strerror or exc})") from None
    except (ValueError, UnicodeDecodeError):
        _fail(label, path, "the header is not JSON")
    if not isinstance(header, dict):
        _fail(label, path, "the header is not a JSON object")
    data = size - 8 - n
    out, extents = {}, []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (begin, end) = info["dtype"], tuple(info["shape"]), info["data_offsets"]
            ok = (dtype in DTYPE_BYTES and all(isinstance(d, int) and d >= 0 for d in shape)
                  and isinstance(begin, int) and isinstance(end, int))
        except (TypeError, KeyError, ValueError):
            ok = False
        if not ok:
            _fail(label, path, f"tensor '{name}' has a malformed entry")
        if not 0 <= begin <= end <= data:
            _fail(label, path, f"tensor '{name}' lies outside the file (bytes {begin}..{end} of {data}): truncated?")
        if end - begin != math.prod(shape) * DTYPE_BYTES[dtype]:
            _fail(label, path, f"tensor '{name}' spans {end - begin} bytes, its {dtype} shape {list(shape)} needs "
                               f"{math.prod(shape) * DTYPE_BYTES[dtype]}")
        extents.append((begin, end, name))
        out[name] = (dtype, shape)
    extents.sort()
    for (_, end, a), (begin, _, b) in zip(extents, extents[1:]):
        if begin < end:
            _fail(label, path, f"tensors '{a}' and '{b}' overlap")
    return out
