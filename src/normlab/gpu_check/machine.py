"""What the GPU check runs on: the GPUs the driver lists, the ones torch sees, the versions."""

from __future__ import annotations

import shutil
import subprocess
from typing import Any

from normlab.config.devices import visible_gpus, why_no_gpu


def listed_gpus() -> list[str]:
    """The GPUs `nvidia-smi -L` lists (none without nvidia-smi, or when it fails)."""
    command = shutil.which("nvidia-smi")
    if command is None:
        return []
    try:
        done = subprocess.run([command, "-L"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in done.stdout.splitlines() if line.startswith("GPU ")]


def _nccl_version() -> str | None:
    import torch

    try:
        version = torch.cuda.nccl.version()
    except (AttributeError, RuntimeError):  # a CPU build has no NCCL
        return None
    return ".".join(map(str, version)) if isinstance(version, tuple) else str(version)


def versions() -> dict[str, Any]:
    """torch, CUDA, cuDNN and NCCL versions, the TF32 flags, and the GPU torch sees."""
    import torch

    gpus = visible_gpus()
    return {
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if gpus else None,
        "nccl": _nccl_version(),
        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
        "tf32_cudnn": torch.backends.cudnn.allow_tf32,
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "gpus_torch_sees": gpus,
        "gpu": torch.cuda.get_device_name(0) if gpus else None,
    }


def device_to_check(allow_cpu: bool) -> tuple[str | None, str]:
    """("gpu" | "cpu" | None, why): None when there is nothing honest to check."""
    listed, seen = listed_gpus(), visible_gpus()
    if seen:
        return "gpu", f"{seen} GPU(s) torch can use"
    if listed:
        return None, (
            f"nvidia-smi lists {len(listed)} GPU(s) ({listed[0]}) but torch sees none: "
            f"{why_no_gpu()}"
        )
    if allow_cpu:
        return "cpu", "no GPU; --allow-cpu: the checks' logic on CPU, which proves nothing on GPUs"
    return None, (
        "no GPU here (nvidia-smi lists none, torch sees none): nothing to check; "
        "--allow-cpu runs the checks' logic on CPU"
    )
