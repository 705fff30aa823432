"""A grid that grows keeps what it has: a finished cell anywhere under the output root is reused
by a new sweep that contains it, instead of trained again.

A cell is found by its result-relevant config: its resolved config.yaml without the keys that
change no result (normlab.sweep.RESULT_NEUTRAL_KEYS, and the experiment's `name` and `tags`).
It is reused only when the code and the machine that trained it give the same numbers, which
provenance.json records: the same normlab commit (and the same uncommitted diff, if any), the
same torch version and the same CPU kernels (`cpu_kernels`: other kernels round otherwise). A
match trained otherwise is not reused, and the launcher says which rule kept it out.

Reusing writes the new cell's folder as a normal cell folder: result.json (with `reused_from`,
the original folder), and links to the original's metrics.csv, config.yaml, provenance.json and
W&B run. `--no-reuse` (normlab-train), or NORMLAB_REUSE=0, trains every cell again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from normlab.sweep import FINISHED, cell_status, is_result_neutral

log = logging.getLogger("normlab")

REUSE_ENV = "NORMLAB_REUSE"  # "0": train every cell of a sweep, even those found elsewhere
# naming and bookkeeping: they change no number
_NEUTRAL_TOP = ("name", "tags", "threads", "paths", "hydra")
# what must agree between the cell's training and now for its numbers to stand
_CODE_KEYS = ("git_commit", "git_diff", "torch", "cpu_kernels")
# the files a reused cell's folder links to (result.json is written, with `reused_from`)
LINKED = ("metrics.csv", "config.yaml", "provenance.json", "wandb")


def reuse_enabled() -> bool:
    """Whether sweeps reuse finished cells found elsewhere (NORMLAB_REUSE != "0")."""
    return os.environ.get(REUSE_ENV, "1") != "0"


def _strip(tree: Any, prefix: str = "") -> Any:
    if not isinstance(tree, dict):
        return tree
    return {
        key: _strip(value, f"{prefix}{key}.")
        for key, value in tree.items()
        if not (prefix == "" and key in _NEUTRAL_TOP) and not is_result_neutral(f"{prefix}{key}")
    }


def result_key(resolved: dict[str, Any]) -> str:
    """A short hash of a resolved config's result-relevant part."""
    text = json.dumps(_strip(resolved), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def code_record(provenance: dict[str, Any], run_dir: Path | None = None) -> dict[str, Any]:
    """What of a provenance.json decides whether its numbers can be reused."""
    diff = (run_dir / "git_diff.patch") if run_dir is not None else None
    return {
        "git_commit": provenance.get("git_commit"),
        "git_diff": _sha(diff) if diff is not None and diff.is_file() else None,
        "torch": (provenance.get("packages") or {}).get("torch"),
        "cpu_kernels": provenance.get("cpu_kernels"),
    }


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@cache
def current_code() -> dict[str, Any]:
    """This process's code record (what a cell trained now would record)."""
    import torch

    from normlab.paths import REPO_DIR
    from normlab.utils.provenance import _git, is_checkout, package_versions

    checkout = is_checkout(REPO_DIR)
    commit = _git(REPO_DIR, "rev-parse", "HEAD") if checkout else None
    status = _git(REPO_DIR, "status", "--porcelain", "--untracked-files=no") if checkout else None
    # the diff provenance.json's git_diff.patch holds (written only for a dirty tree)
    diff = _git(REPO_DIR, "diff", "HEAD") if status and status.strip() else None
    return {
        "git_commit": commit.strip() if commit else None,
        "git_diff": hashlib.sha256((diff or "").encode()).hexdigest() if diff is not None else None,
        "torch": package_versions().get("torch"),
        "cpu_kernels": torch.backends.cpu.get_cpu_capability(),
    }


class FinishedCells:
    """Every finished cell under a folder, by result key (built once, on first use)."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self._index: dict[str, list[Path]] | None = None

    def index(self) -> dict[str, list[Path]]:
        """Result key -> the finished cell folders with it."""
        if self._index is None:
            self._index = {}
            for result in self.root.glob("*/*/*/result.json"):
                cell = result.parent
                if cell.is_symlink() or cell_status(cell) not in FINISHED:
                    continue
                if "reused_from" in json.loads(result.read_text()):
                    continue  # a reuse points at its original: index the original only
                try:
                    resolved = yaml.load((cell / "config.yaml").read_text(), yaml.CSafeLoader)
                except (OSError, yaml.YAMLError):
                    continue
                self._index.setdefault(result_key(resolved), []).append(cell)
        return self._index

    def match(self, resolved: dict[str, Any], run_dir: Path) -> tuple[Path | None, str]:
        """A finished cell elsewhere that `run_dir` (config `resolved`) can reuse, and why not
        when there is a match that cannot be reused ("" otherwise)."""
        candidates = [c for c in self.index().get(result_key(resolved), []) if c != run_dir]
        refused = ""
        for cell in candidates:
            try:
                provenance = json.loads((cell / "provenance.json").read_text())
            except (OSError, json.JSONDecodeError):
                continue
            theirs, ours = code_record(provenance, cell), current_code()
            differs = [key for key in _CODE_KEYS if theirs[key] != ours[key]]
            if not differs:
                return cell, ""
            refused = (
                f"{cell} has the same config but was trained with another "
                + ", ".join(f"{key} ({theirs[key]} there, {ours[key]} here)" for key in differs)
                + ": its numbers may differ, so it is trained again"
            )
        return None, refused


def reuse(original: Path, run_dir: Path) -> dict[str, Any]:
    """Make `run_dir` a cell folder reading as `original`'s: result.json (with `reused_from`)
    and links to its other files. Its result."""
    from normlab.utils.files import write_json_atomic

    run_dir.mkdir(parents=True, exist_ok=True)
    for name in LINKED:
        source, link = original / name, run_dir / name
        if source.exists() and not link.exists():
            link.symlink_to(os.path.relpath(source, run_dir))
    result = {**json.loads((original / "result.json").read_text()), "reused_from": str(original)}
    write_json_atomic(run_dir / "result.json", result)
    return result


@cache
def finished_cells(root: str) -> FinishedCells:
    """The finished cells under `root` (one index per process)."""
    return FinishedCells(Path(root))


def reuse_if_found(resolved: dict[str, Any], run_dir: Path) -> dict[str, Any] | None:
    """Reuse a finished cell found elsewhere under the sweep's output root for `run_dir` (one
    line says from where, or why a match is not reused); its result, or None."""
    if not reuse_enabled():
        return None
    root = Path(resolved["paths"]["output_dir"]) / "multirun"
    original, refused = finished_cells(str(root)).match(resolved, Path(run_dir))
    if refused:
        log.info("not reused: %s", refused)
    if original is None:
        return None
    log.info("reused %s for %s", original, run_dir)
    return reuse(original, Path(run_dir))
