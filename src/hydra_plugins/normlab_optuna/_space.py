"""Hydra sweep overrides -> Optuna distributions (the searched keys) and fixed overrides."""

from __future__ import annotations

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import IntervalSweep, Override, Transformer
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)


def distribution(override: Override) -> BaseDistribution:
    """choice(...), range(...): categorical; interval(a, b): uniform floats; tagged `log`: on a
    log scale; tagged `int`: integers, e.g. tag(int, log, interval(16, 512))."""
    if override.is_discrete_sweep():
        choices = override.sweep_iterator(transformer=Transformer.encode)
        return CategoricalDistribution(list(choices))
    interval = override.value()
    if not isinstance(interval, IntervalSweep):
        raise ValueError(f"{override.input_line}: not a sweep Optuna can sample")
    log = "log" in interval.tags
    if "int" in interval.tags:  # Hydra reads interval bounds as floats, always
        return IntDistribution(int(interval.start), int(interval.end), log=log)
    return FloatDistribution(interval.start, interval.end, log=log)


def search_space(overrides: list[str]) -> tuple[dict[str, BaseDistribution], list[str]]:
    """The searched keys with their distributions, and the overrides every trial gets as they are.

    A later override of a key wins, so a command-line value replaces the preset's `params`.
    """
    space: dict[str, BaseDistribution] = {}
    fixed: dict[str, str] = {}
    for override in OverridesParser.create().parse_overrides(overrides):
        key = override.get_key_element()
        space.pop(key, None)
        fixed.pop(key, None)
        if override.is_sweep_override():
            space[key] = distribution(override)
        else:
            fixed[key] = override.input_line
    return space, list(fixed.values())
