"""How many members one stack process holds: the stacked launcher bounds its stacks by memory.

A member costs its tensors (parameters, gradients and optimizer state live in `[M, P]` tensors:
about STATE_COPIES copies of its parameters; its activations for a training and an evaluation
batch) and a fixed share of host memory for what every member has of its own (its config, its
network's modules, its loggers): MEMBER_OVERHEAD_BYTES, measured as the peak RSS of a
1,024-member stack of the tiny MLP over a stack of one, per member. The launcher's default
`max_members` is what fits in MEMORY_SHARE of the memory available now (the GPU's on a GPU),
shared among the stacks that run at once.
"""

from __future__ import annotations

import math
import os
from typing import Any

STATE_COPIES = 6  # parameters, gradients, up to two optimizer moments, decay and stop snapshots
MEMBER_OVERHEAD_BYTES = 600 * 1024  # host memory per member beyond its tensors (see the module doc)
MEMORY_SHARE = 0.5  # of the memory available at launch: room for the data, the report, the rest
# one example's shape and the class count, for the built-in data sets (data=custom: read)
_SHAPES = {
    "fashion_mnist": ((1, 28, 28), 10),
    "mnist": ((1, 28, 28), 10),
    "digits": ((1, 8, 8), 10),
    "mnist1d": ((40,), 10),
    "cifar10": ((3, 32, 32), 10),
    "cifar100": ((3, 32, 32), 100),
}


def data_shape(data: dict[str, Any]) -> tuple[tuple[int, ...], int] | None:
    """(input shape, classes) of a resolved data config; None where only loading would tell."""
    if data["name"] == "synthetic":
        return (int(data["num_features"] or 20),), int(data["num_classes"] or 4)
    return _SHAPES.get(data["name"])


def member_bytes(cfg, resolved: dict[str, Any]) -> int | None:
    """A member's estimated memory (`cfg`: its config; `resolved`: the same, resolved); None
    when its data's shape is not known without loading it."""
    from normlab.models.build import build_model

    shape = data_shape(resolved["data"])
    if shape is None:
        return None
    input_shape, classes = shape
    network = build_model(cfg, input_shape, classes)
    parameters = sum(p.numel() for p in network.parameters())
    # the outputs of every linear layer, and of every conv layer over the input's pixels (an
    # upper bound: pooling only shrinks them)
    pixels = math.prod(input_shape[1:]) if len(input_shape) == 3 else 1
    outputs = sum(
        p.shape[0] * (pixels if p.dim() == 4 else 1) for p in network.parameters() if p.dim() >= 2
    )
    batch = resolved["data"]["batch_size"]
    examples = 3 * batch + resolved["data"]["eval_batch_size"]  # saved for backward; evaluation
    activations = outputs * examples
    return 4 * (STATE_COPIES * parameters + activations) + MEMBER_OVERHEAD_BYTES


def available_bytes(on_gpu: bool) -> int:
    """Memory free now: the GPU's (the first visible one) on a GPU, else the host's."""
    if on_gpu:
        import torch

        return int(torch.cuda.mem_get_info()[0])
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def members_that_fit(cfg, resolved: dict[str, Any], at_once: int, available: int) -> int | None:
    """Members of `cfg`'s kind that fit a stack when `at_once` stacks share `available` bytes;
    None when the member's size is unknown."""
    size = member_bytes(cfg, resolved)
    if size is None:
        return None
    return max(1, int(MEMORY_SHARE * available / max(1, at_once) // size))
