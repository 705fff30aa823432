"""Build the ClassifierModule from the optimizer, scheduler and regularizer groups."""

from __future__ import annotations

from typing import Any

from hydra.utils import instantiate
from torch import nn

from normlab.config.errors import ConfigError
from normlab.lit.augment import RandomShiftFlip
from normlab.lit.module import ClassifierModule
from normlab.lit.regularizers import WeightPenalty


def build_module(
    cfg, network: nn.Module, num_classes: int, input_shape: tuple[int, ...], config: dict[str, Any]
) -> ClassifierModule:
    """Wrap `network` with its loss, penalties, optimizer and schedule."""
    reg = cfg.regularizer
    augment = None
    if reg.get("augment") is not None:
        if len(input_shape) != 3:
            raise ConfigError(
                f"regularizer=augment needs image data; data={cfg.data.name} "
                f"gives inputs of shape {input_shape}"
            )
        augment = RandomShiftFlip(reg.augment.max_shift, reg.augment.hflip)
    schedule = cfg.scheduler.schedule
    return ClassifierModule(
        network,
        instantiate(cfg.optimizer),
        num_classes,
        schedule_factory=instantiate(schedule) if schedule is not None else None,
        schedule_interval=cfg.scheduler.interval.value,
        schedule_frequency=cfg.scheduler.frequency,
        label_smoothing=reg.label_smoothing.value if reg.get("label_smoothing") else 0.0,
        penalty=WeightPenalty(
            l2=reg.l2.strength if reg.get("l2") else 0.0,
            l1=reg.l1.strength if reg.get("l1") else 0.0,
        ),
        weight_decay=reg.weight_decay.value if reg.get("weight_decay") else 0.0,
        decay_norm_and_bias=bool(reg.weight_decay.decay_norm_and_bias)
        if reg.get("weight_decay")
        else False,
        augment=augment,
        grad_clip=(reg.grad_clip.value, reg.grad_clip.algorithm.value)
        if reg.get("grad_clip")
        else None,
        config=config,
    )
