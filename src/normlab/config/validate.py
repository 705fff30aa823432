"""Checks that types alone cannot express, run on the composed config before anything is built.

Each failure raises `ConfigError` with one line: the key, the value, what is wrong, the fix.
"""

from __future__ import annotations

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from normlab.config.bounds import check_bounds
from normlab.config.devices import check_devices_present
from normlab.config.distributed import check_distributed
from normlab.config.errors import ConfigError
from normlab.config.extras import check_extras
from normlab.config.keys import check_config_keys
from normlab.config.schema import DATA_KEYS_READ_BY
from normlab.utils.ranks import per_device_batch
from normlab.utils.wandb_run import wandb_mode


def _reason(exc: BaseException) -> str:
    while exc.__cause__ is not None:  # hydra wraps the real error in InstantiationException
        exc = exc.__cause__
    return str(exc).strip().splitlines()[-1]


def _empty(*shape: int):
    import torch

    return torch.empty(*shape)


def _dummy_parameter():
    import torch  # here: importing the config package loads no torch

    return torch.nn.Parameter(torch.zeros(2, 2))


def check_optimizer(optimizer_cfg: DictConfig) -> None:
    """The optimizer config names a class that accepts its arguments, with sane values."""
    if not isinstance(optimizer_cfg, DictConfig) or "_target_" not in optimizer_cfg:
        raise ConfigError(
            "optimizer: no _target_; pick one with optimizer=sgd|momentum|nesterov|"
            "rmsprop|adam|adamw or add a YAML file with a _target_"
        )
    rules = {
        "lr": (lambda v: v > 0, "> 0"),
        "momentum": (lambda v: 0 <= v < 1, "in [0, 1)"),
        "weight_decay": (lambda v: v >= 0, ">= 0"),
        "eps": (lambda v: v > 0, "> 0"),
    }
    for key, (test, text) in rules.items():
        if key not in optimizer_cfg:
            continue
        value = optimizer_cfg[key]
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise ConfigError(f"optimizer.{key}={value!r}: must be a number")
        if not test(value):
            raise ConfigError(f"optimizer.{key}={value}: must be {text}")
    try:
        instantiate(optimizer_cfg)([_dummy_parameter()])
    except Exception as exc:
        raise ConfigError(f"optimizer ({optimizer_cfg._target_}): {_reason(exc)}") from None


def check_scheduler(cfg: DictConfig) -> None:
    """The schedule builds on the configured optimizer (OneCycleLR, for one, needs an optimizer
    with momentum or betas), built on a throwaway parameter."""
    schedule = cfg.scheduler.schedule
    if schedule is None:
        return
    optimizer = instantiate(cfg.optimizer)([_dummy_parameter()])
    try:
        scheduler = instantiate(schedule)(optimizer)
        for _ in range(10):  # some schedules only use (and so only reject) arguments later on
            optimizer.step()  # no gradients: a no-op that keeps the scheduler's order check quiet
            scheduler.step()
    except Exception as exc:
        raise ConfigError(
            f"scheduler.schedule ({schedule.get('_target_')}) with optimizer "
            f"({cfg.optimizer.get('_target_')}): {_reason(exc)}"
        ) from None


def check_init(init_cfg: DictConfig) -> None:
    """Both initializers accept a weight-shaped tensor."""
    for part in ("weight", "bias"):
        spec = init_cfg.get(part)
        if spec is None:
            continue
        try:
            instantiate(spec)(_empty(4, 4) if part == "weight" else _empty(4))
        except Exception as exc:
            raise ConfigError(f"init.{part} ({spec.get('_target_')}): {_reason(exc)}") from None


def check_norm(cfg: DictConfig) -> None:
    """Group counts divide every norm width a network declares (`norm_widths`); batch norm sees
    at least 2 examples per device."""
    from normlab.models.build import network_arguments, network_class
    from normlab.models.norms import norm_option

    norm = cfg.norm
    network = network_class(cfg.model)
    norm_widths = getattr(network, "norm_widths", None)
    if "num_groups" in norm and norm_widths is not None:
        widths = sorted(set(norm_widths(**network_arguments(cfg.model, network))))
        bad = [w for w in widths if w % norm.num_groups]
        if bad:
            width = f" (model.width={cfg.model.width})" if "width" in cfg.model else ""
            divisors = [d for d in range(2, bad[0] + 1) if all(w % d == 0 for w in widths)][:6]
            raise ConfigError(
                f"norm.num_groups={norm.num_groups} does not divide the hidden width {bad[0]}"
                f"{width}; pick a divisor, e.g. one of {divisors}"
            )
    if norm_option(norm).batch_statistics:
        per_device = per_device_batch(cfg.trainer, cfg.data.batch_size) or cfg.data.batch_size
        if per_device < 2:
            raise ConfigError(
                f"data.batch_size={cfg.data.batch_size}: batch norm needs at least 2 "
                "examples per device; raise data.batch_size or use norm=group|layer"
            )


# trainer.precision values normlab trains correctly: weights and bookkeeping (the on-device
# training sums, metrics) stay float32; "*-true" half precisions would cast those buffers too
PRECISIONS = ("32", "32-true", "bf16-mixed", "16-mixed")


def check_precision(trainer: DictConfig) -> None:
    """trainer.precision is one normlab keeps exact books under, on a device that has it."""
    precision = str(trainer.precision)
    if precision not in PRECISIONS:
        why = (
            "casts the weights and the training sums to half precision (counts go wrong)"
            if precision.endswith("-true") and precision[:2] in ("16", "bf")
            else "is not a precision normlab supports"
        )
        raise ConfigError(
            f"trainer.precision={precision} {why}; use trainer.precision=32, bf16-mixed "
            "or 16-mixed (GPU)"
        )
    if precision == "16-mixed" and trainer.accelerator == "cpu":
        raise ConfigError(
            "trainer.precision=16-mixed needs a GPU (trainer.accelerator=cpu has no float16 "
            "autocast); use trainer.precision=bf16-mixed on CPU"
        )


def check_data(data: DictConfig) -> None:
    """data=custom: its function imports, runs and gives data normlab can train on (the result
    is kept for the run). A key only other data sets read (data._target_ without data=custom,
    data.num_features off synthetic, ...) would be ignored, so it is refused."""
    from normlab.data.custom import custom_source

    name = getattr(data.name, "value", data.name)
    for key, readers in DATA_KEYS_READ_BY.items():
        value = data.get(key)
        if value in (None, {}) or name in readers:
            continue
        shown = value if not isinstance(value, DictConfig) else OmegaConf.to_container(value)
        raise ConfigError(
            f"data.{key}={shown} is read only by data={' / data='.join(readers)}; drop it, "
            f"or choose data={readers[0]} (now data={name})"
        )
    if name == "custom":
        custom_source(data)


def validate(cfg: DictConfig, *, devices_here: bool = True) -> None:
    """Run every check; the first failure raises ConfigError. `devices_here=False` leaves out
    whether the requested devices exist (a sweep submitted to SLURM runs elsewhere)."""
    from normlab.models.build import check_network
    from normlab.models.options import type_options

    type_options(cfg)
    check_config_keys(cfg)
    check_bounds(cfg)
    check_network(cfg)
    check_norm(cfg)
    check_distributed(cfg)
    if devices_here:
        check_devices_present(cfg.trainer)
    check_precision(cfg.trainer)
    check_optimizer(cfg.optimizer)
    check_scheduler(cfg)
    check_init(cfg.init)
    check_extras(cfg)
    if cfg.logger.wandb is not None:
        wandb_mode(cfg.logger.wandb.mode)  # a bad $WANDB_MODE fails here, in one line
    if cfg.trainer.max_steps == -1 and cfg.trainer.max_epochs == -1:
        raise ConfigError(
            "trainer.max_steps=-1 and trainer.max_epochs=-1: set a budget "
            "(e.g. trainer.max_steps=3000)"
        )
    check_data(cfg.data)  # last: data=custom calls the user's function, which may load for a while
