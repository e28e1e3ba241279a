"""torch <-> MLX checkpoint conversion.

Both backends write the same canonical safetensors file (shared/DESIGN.md section 7), so conversion checks the file's
header against config.json and copies its bytes: every dtype (bfloat16 included) survives bit for bit, and
neither framework needs to be installed.
"""

import json
import math
import shutil
from collections import Counter
from pathlib import Path

import numpy as np

from hrm_shared.core.checkpoint import (
    IDENTIFIERS_FILE,
    MODEL_FILE,
    TRAIN_STATE_FILE,
    check_finite,
    check_identifiers,
    check_stored,
    checkpoint_directory,
    read_checkpoint_config,
    verify_file,
    write_checkpoint_config,
)
from hrm_shared.core.contract import BACKENDS
from hrm_shared.core.errors import HRMError

# safetensors dtype codes -> (our dtype name, bytes per element)
DTYPES = {"F64": ("float64", 8), "F32": ("float32", 4), "F16": ("float16", 2), "BF16": ("bfloat16", 2),
          "I64": ("int64", 8), "I32": ("int32", 4), "I16": ("int16", 2), "I8": ("int8", 1), "U8": ("uint8", 1),
          "BOOL": ("bool", 1)}
_MAX_HEADER = 100 << 20
# A float is NaN or infinite exactly when all its exponent bits are set: (the unsigned view, its exponent mask).
EXPONENT_BITS = {"float64": ("<u8", 0x7FF0000000000000), "float32": ("<u4", 0x7F800000),
                 "float16": ("<u2", 0x7C00), "bfloat16": ("<u2", 0x7F80)}
_CHUNK = 1 << 24  # elements checked at a time


def read_safetensors_header(path: Path) -> dict[str, tuple[str, tuple[int, ...]]]:
    """{tensor name: (dtype name, shape)} from a safetensors file's header, after checking that the header is
    well formed and the tensors' byte ranges tile the data section exactly."""
    return _read_header(path)[0]


def finite_tensors(path: Path) -> dict[str, bool]:
    """{tensor name: whether every value is finite} of a safetensors file (checked as read_safetensors_header
    checks it), read from the bits, so bfloat16 needs no framework; tensors of integers count as finite."""
    tensors, spans, start = _read_header(path)
    data = np.memmap(path, dtype=np.uint8, mode="r")
    finite = {}
    for name, (dtype, _) in tensors.items():
        finite[name] = True
        if dtype in EXPONENT_BITS:
            unsigned, mask = EXPONENT_BITS[dtype]
            bits = data[start + spans[name][0]:start + spans[name][1]].view(unsigned)
            finite[name] = not any(np.any((bits[i:i + _CHUNK] & mask) == mask) for i in range(0, len(bits), _CHUNK))
    return finite


def _read_header(path: Path) -> tuple[dict[str, tuple[str, tuple[int, ...]]], dict[str, tuple[int, int]], int]:
    """({name: (dtype name, shape)}, {name: (begin, end) in the data section}, where the data section begins) of a
    safetensors file; HRMError unless read_safetensors_header's checks pass."""
    path = Path(path)
    broken = f"{path} is not a valid safetensors file"
    size = path.stat().st_size
    with path.open("rb") as f:
        n = int.from_bytes(f.read(8), "little") if size >= 8 else -1
        if not 0 < n <= min(size - 8, _MAX_HEADER):
            raise HRMError(f"{broken} (bad header length); write the checkpoint again")
        try:
            header = json.loads(f.read(n).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise HRMError(f"{broken} (its header is not JSON); write the checkpoint again") from None
    if not isinstance(header, dict):
        raise HRMError(f"{broken} (its header is not a JSON object); write the checkpoint again")
    header.pop("__metadata__", None)
    tensors, spans = {}, {}
    for name, entry in header.items():
        try:
            dtype, itemsize = DTYPES[entry["dtype"]]
            shape = tuple(int(d) for d in entry["shape"])
            begin, end = (int(o) for o in entry["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise HRMError(f"{broken} (tensor {name!r} has a malformed header entry)") from None
        if min(shape, default=0) < 0 or end - begin != math.prod(shape) * itemsize:
            raise HRMError(f"{broken} (tensor {name!r}: its byte range does not match its shape and dtype)")
        tensors[name] = (dtype, shape)
        spans[name] = (begin, end)
    position = 0
    for begin, end in sorted(spans.values()):
        if begin != position:
            raise HRMError(f"{broken} (tensor data overlaps or leaves gaps); write the checkpoint again")
        position = end
    if position != size - 8 - n:
        raise HRMError(f"{broken} (the file is {size} bytes; the header describes {8 + n + position})")
    return tensors, spans, 8 + n


def convert_checkpoint(src: Path, dst: Path, to: str, force: bool = False) -> dict:
    """Copy checkpoint `src` to `dst` for backend `to`: config.json (backend set), model.safetensors byte for byte
    once its tensors match the config strictly, identifiers.json. Training state stays behind. Returns a summary."""
    src, dst = Path(src), Path(dst)
    if to not in BACKENDS:
        raise HRMError(f"unknown backend {to!r}; choose one of {', '.join(BACKENDS)}")
    if dst.resolve() == src.resolve():
        raise HRMError(f"the destination {dst} is the source checkpoint; convert into a new directory")
    config = read_checkpoint_config(src)
    tensors = read_safetensors_header(src / MODEL_FILE)
    check_stored(config.model, tensors, str(src / MODEL_FILE))
    check_finite(finite_tensors(src / MODEL_FILE), str(src / MODEL_FILE))
    verify_file(src, MODEL_FILE)  # the copy gets checksums of its own: copy nothing that changed since written
    check_identifiers(src, config)
    with checkpoint_directory(dst, force) as tmp:
        shutil.copyfile(src / MODEL_FILE, tmp / MODEL_FILE)
        config.backend, source_backend = to, config.backend
        write_checkpoint_config(tmp, config)
        if (src / IDENTIFIERS_FILE).is_file():
            shutil.copyfile(src / IDENTIFIERS_FILE, tmp / IDENTIFIERS_FILE)
    dtypes = Counter(dtype for dtype, _ in tensors.values())
    summary = {"from": f"{src} ({source_backend or 'unknown backend'})", "to": f"{dst} ({to})",
               "tensors": ", ".join(f"{count} {dtype}" for dtype, count in sorted(dtypes.items())),
               "identifiers": "copied" if (dst / IDENTIFIERS_FILE).is_file() else "none"}
    if (src / TRAIN_STATE_FILE).is_file():
        summary["left out"] = f"{TRAIN_STATE_FILE} (optimizer state; training from {dst} starts a new optimizer)"
    return summary
