"""provenance.json: everything needed to tell how a run folder was produced."""

from __future__ import annotations

import functools
import platform
import socket
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import torch

from normlab.paths import is_checkout
from normlab.utils.files import write_json_atomic, write_text_atomic

PACKAGES = (
    "normlab",
    "torch",
    "pytorch-lightning",
    "hydra-core",
    "omegaconf",
    "torchmetrics",
    "wandb",
    "numpy",
)


@functools.lru_cache(maxsize=16)  # a stack writes one record per member: ask git once
def _git(repo: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout


@functools.cache  # a stack writes one record per member: read the installed metadata once
def package_versions() -> dict[str, str | None]:
    """Installed versions of the packages that decide a run's numbers."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


# trainer.accelerator values that train on a CUDA device when it has one ("auto" takes one
# where there is one, as Lightning does)
_CUDA_ACCELERATORS = ("gpu", "cuda", "auto")


@functools.cache
def device_description(accelerator: str) -> str:
    """The device a run on `accelerator` (trainer.accelerator) trains on: the GPU's name, or
    the CPU's. Read from the configuration, not from what this process touched: naming a GPU
    starts CUDA, which a CPU run must not do (in a gloo DDP run, rank 0 alone would have CUDA
    started, and the ranks' saved random states would differ in kind)."""
    if str(accelerator) in _CUDA_ACCELERATORS and torch.cuda.is_available():
        return f"cuda: {torch.cuda.get_device_name(0)} x{torch.cuda.device_count()}"
    return f"cpu: {platform.processor() or platform.machine()}"


def write_provenance(
    run_dir: Path,
    repo_dir: Path,
    threads: int,
    seeds: dict[str, int],
    stack: dict | None = None,
    user_code: dict | None = None,
    *,
    accelerator: str,
) -> dict:
    """Write provenance.json (and git_diff.patch when the tree is dirty); return the record.
    `stack`: the stack a member trained in (its folder, size, this member's index);
    `user_code`: the user's own modules the run imports (normlab.utils.user_code);
    `accelerator`: trainer.accelerator, the device the run trains on."""
    # an installed wheel has no checkout: git must not report whatever repository holds it
    checkout = is_checkout(repo_dir)
    commit = _git(repo_dir, "rev-parse", "HEAD") if checkout else None
    status = _git(repo_dir, "status", "--porcelain", "--untracked-files=no") if checkout else None
    dirty = bool(status and status.strip())
    if dirty:
        write_text_atomic(run_dir / "git_diff.patch", _git(repo_dir, "diff", "HEAD") or "")
    record = {
        "git_commit": commit.strip() if commit else None,
        "git_dirty": dirty if status is not None else None,
        "command": [Path(sys.argv[0]).name, *sys.argv[1:]],
        "python": sys.version.split()[0],
        "packages": dict(package_versions()),
        "device": device_description(accelerator),
        # the vector kernels torch dispatches to on this CPU (DEFAULT, AVX2, AVX512, ...):
        # other kernels may round differently, so compare runs to the digit only between runs
        # with the same kernels
        "cpu_kernels": torch.backends.cpu.get_cpu_capability(),
        "torch_threads": threads,
        "host": socket.gethostname(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "seeds": seeds,
        "user_code": user_code or {},
        **({"stack": stack} if stack is not None else {}),
    }
    write_json_atomic(run_dir / "provenance.json", record)
    return record
