"""Reader for the IDX format of (Fashion-)MNIST, plain or gzip-compressed."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

from normlab.data.errors import DataError

_UNSIGNED_BYTE = 0x08


def read_idx(path: Path) -> np.ndarray:
    """Return the uint8 array stored in an IDX file, checking its header against its size."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            raw = handle.read()
    except (OSError, EOFError) as exc:  # truncated gzip streams raise EOFError
        raise DataError(
            f"{path}: unreadable ({exc}); delete it and fetch it again (`make data`)"
        ) from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != _UNSIGNED_BYTE:
        raise DataError(f"{path}: not an unsigned-byte IDX file (bad magic number); fetch it again")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated IDX header; delete it and fetch it again")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    expected = int(np.prod(shape))
    if len(raw) - header != expected:
        raise DataError(
            f"{path}: holds {len(raw) - header} bytes of data, its header promises {expected}"
            " (truncated or corrupt); delete it and fetch it again"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)
