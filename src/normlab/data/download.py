"""Checksummed download of dataset files, trying mirrors in order."""

from __future__ import annotations

import hashlib
import shutil
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from normlab.data.errors import DataError


def md5_of(path: Path) -> str:
    """MD5 of a file's bytes (the checksum the datasets publish)."""
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download(
    filename: str, md5: str, mirrors: Sequence[str], folder: Path, timeout: float = 30
) -> Path:
    """Fetch `filename` from the first mirror that serves it with the right MD5.

    The file is written to a temporary name and renamed only once its checksum matches,
    so an interrupted or corrupted download never leaves a file that looks complete.
    """
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / filename
    if target.exists() and md5_of(target) == md5:
        return target
    partial = folder / f".{filename}.part"
    failures = []
    for mirror in mirrors:
        url = mirror.rstrip("/") + "/" + filename
        try:
            with (
                urllib.request.urlopen(url, timeout=timeout) as response,
                partial.open("wb") as out,
            ):
                shutil.copyfileobj(response, out)
        except OSError as exc:
            failures.append(f"{url}: {exc}")
            continue
        got = md5_of(partial)
        if got == md5:
            partial.replace(target)
            return target
        failures.append(f"{url}: checksum mismatch (md5 {got}, expected {md5})")
    partial.unlink(missing_ok=True)
    raise DataError(
        f"could not download {filename} into {folder}: "
        + "; ".join(failures)
        + f". Fix: copy the official {filename} into {folder} by hand, or check the network"
    )
