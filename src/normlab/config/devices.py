"""An explicit GPU request fails before training when this machine has no GPU torch can use.

`trainer.accelerator=auto` (the presets' `trainer=auto`) takes a GPU where there is one, else
the CPU; `gpu` / `cuda` (trainer=gpu, trainer=ddp) is a request, and a broken CUDA install
must not turn it into a CPU run that looks like a GPU run.
"""

from __future__ import annotations

from normlab.config.errors import ConfigError
from normlab.utils.ranks import devices_per_node

GPU_REQUESTS = ("gpu", "cuda")


def visible_gpus() -> int:
    """CUDA devices torch can use here (0 with a CPU build or a driver it cannot talk to);
    asking does not start CUDA."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def why_no_gpu() -> str:
    """What this torch says about CUDA, for the one-line error."""
    import torch

    if torch.version.cuda is None:
        return f"torch {torch.__version__} is a CPU build"
    return (
        f"torch {torch.__version__} (CUDA {torch.version.cuda}) sees no GPU: check the driver "
        "(nvidia-smi) and CUDA_VISIBLE_DEVICES"
    )


def check_devices_present(trainer) -> None:
    """trainer.accelerator=gpu|cuda has the GPUs trainer.devices asks for on this machine."""
    accelerator = str(trainer.accelerator)
    if accelerator not in GPU_REQUESTS:
        return
    found = visible_gpus()
    if found == 0:
        raise ConfigError(
            f"trainer.accelerator={accelerator}: no usable GPU here ({why_no_gpu()}); "
            "use trainer=cpu, or trainer=auto to take a GPU only where there is one"
        )
    wanted = devices_per_node(trainer)
    if wanted is not None and wanted > found:
        raise ConfigError(
            f"trainer.devices={trainer.devices}: {wanted} GPUs asked for, {found} here; "
            f"set trainer.devices<={found}"
        )
