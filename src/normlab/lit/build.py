"""Build the ClassifierModule from the optimizer, scheduler and regularizer groups."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hydra.utils import instantiate
from omegaconf import OmegaConf

from normlab.config.errors import ConfigError
from normlab.lit.member_schedules import MemberSchedule
from normlab.lit.module import ClassifierModule, MemberTraining
from normlab.lit.regularizers import regularizer_entries
from normlab.models.members import MemberNetworks


def member_training(cfg, input_shape: tuple[int, ...]) -> MemberTraining:
    """How the cell of `cfg` trains its network: optimizer, schedule, loss and regularizers."""
    if cfg.regularizer.get("augment") is not None and len(input_shape) != 3:
        raise ConfigError(
            f"regularizer=augment needs image data; data={cfg.data.name.value} "
            f"gives inputs of shape {input_shape}"
        )
    schedule = cfg.scheduler.schedule
    return MemberTraining(
        optimizer_factory=instantiate(cfg.optimizer),
        schedule=MemberSchedule(
            OmegaConf.to_container(schedule, resolve=True) if schedule is not None else None,
            cfg.scheduler.interval.value,
            cfg.scheduler.frequency,
        ),
        regularizers=regularizer_entries(cfg.regularizer),
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
