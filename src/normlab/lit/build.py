"""Build the ClassifierModule from the optimizer, scheduler and regularizer groups."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hydra.utils import instantiate
from omegaconf import OmegaConf

from normlab.config.errors import ConfigError
from normlab.lit.augment import RandomShiftFlip
from normlab.lit.member_schedules import MemberSchedule
from normlab.lit.module import ClassifierModule, MemberTraining
from normlab.models.members import MemberNetworks


def member_training(cfg, input_shape: tuple[int, ...]) -> MemberTraining:
    """How the cell of `cfg` trains its network: optimizer, schedule, loss and regularizers."""
    reg = cfg.regularizer
    augment = None
    if reg.get("augment") is not None:
        if len(input_shape) != 3:
            raise ConfigError(
                f"regularizer=augment needs image data; data={cfg.data.name.value} "
                f"gives inputs of shape {input_shape}"
            )
        augment = RandomShiftFlip(reg.augment.max_shift, reg.augment.hflip)
    schedule = cfg.scheduler.schedule
    decay = reg.get("weight_decay")
    return MemberTraining(
        optimizer_factory=instantiate(cfg.optimizer),
        schedule=MemberSchedule(
            OmegaConf.to_container(schedule, resolve=True) if schedule is not None else None,
            cfg.scheduler.interval.value,
            cfg.scheduler.frequency,
        ),
        label_smoothing=reg.label_smoothing.value if reg.get("label_smoothing") else 0.0,
        l2=reg.l2.strength if reg.get("l2") else 0.0,
        l1=reg.l1.strength if reg.get("l1") else 0.0,
        weight_decay=decay.value if decay else 0.0,
        decay_norm_and_bias=bool(decay.decay_norm_and_bias) if decay else False,
        augment=augment,
        grad_clip=(reg.grad_clip.value, reg.grad_clip.algorithm.value)
        if reg.get("grad_clip")
        else None,
        early_stopping=reg.get("early_stopping"),
    )


def build_module(
    cfgs: Sequence,
    model: MemberNetworks,
    num_classes: int,
    input_shape: tuple[int, ...],
    config: dict[str, Any] | list[dict[str, Any]],
) -> ClassifierModule:
    """Wrap `model` (one network per config of `cfgs`) with each member's loss, penalties,
    optimizer settings and schedule."""
    return ClassifierModule(
        model,
        [member_training(cfg, input_shape) for cfg in cfgs],
        num_classes,
        config=config,
    )
