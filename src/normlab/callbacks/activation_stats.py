"""Statistics of one hidden layer on the probe batch: pre-activation distribution, saturation,
dead units and unit symmetry. Pure tensor functions; every result stays on the device."""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import torch

from normlab.models.activations import ActivationOption, activation_option

PERCENTILES = (15, 50, 85)  # the BatchNorm paper's Figure 1(b, c)


def units_last(values: torch.Tensor) -> torch.Tensor:
    """(samples, units): MLP (N, U) as is; CNN (N, C, H, W) -> (N*H*W, C), a channel is a unit."""
    if values.dim() == 2:
        return values
    return values.movedim(1, -1).reshape(-1, values.shape[1])


def sorting_needed(values: torch.Tensor) -> bool:
    """Whether order statistics and histograms of `values` must go through a sort:
    `torch.kthvalue` and `torch.histc` have no deterministic CUDA kernels, so with
    `trainer.deterministic=true` (torch.use_deterministic_algorithms) off the CPU they raise."""
    return torch.are_deterministic_algorithms_enabled() and values.device.type != "cpu"


def order_statistic(flat: torch.Tensor, k: int) -> torch.Tensor:
    """The k-th smallest entry (0-based) of a 1-D tensor, without a full sort.

    On the CPU numpy's single-kth partition (SIMD) is about 10x faster than `torch.kthvalue`;
    elsewhere kthvalue keeps the data on the device.
    """
    if flat.device.type == "cpu":
        return torch.as_tensor(np.partition(flat.numpy(), k)[k])
    return flat.kthvalue(k + 1).values


def percentiles(
    values: torch.Tensor, qs: tuple[float, ...] = PERCENTILES, *, by_sort: bool | None = None
) -> torch.Tensor:
    """Percentiles `qs` (0..100) of all entries, interpolated linearly like numpy's default.

    Two order statistics per percentile, with no size limit (unlike `torch.quantile`): the
    probe's pooled pre-activations can be large. `by_sort`: read them from one sort (the
    deterministic way, same numbers) instead of partial selections; None: `sorting_needed`.
    """
    flat = values.detach().reshape(-1).float()
    if by_sort is None:
        by_sort = sorting_needed(flat)
    kth = flat.sort().values.__getitem__ if by_sort else functools.partial(order_statistic, flat)
    last = flat.numel() - 1
    results = []
    for q in qs:
        position = q / 100 * last
        rank = int(position)
        below = kth(rank)
        above = kth(rank + 1) if rank < last else below
        results.append(below + (above - below) * (position - rank))
    return torch.stack(results)


def histc_by_sort(values: torch.Tensor, bins: int, low: float, high: float) -> torch.Tensor:
    """`torch.histc(values, bins, low, high)` bit for bit, from deterministic ops: each value's
    bin by histc's own float32 formula, then the counts by `searchsorted` on the sorted bins."""
    ordered = values.detach().reshape(-1).float().sort().values
    edges = torch.linspace(low, high, bins + 1, device=ordered.device)  # histc's outer edges
    left, right = edges[0], edges[-1]
    inside = (ordered >= left) & (ordered <= right)
    # a value on the right edge falls in the last bin; values outside (and NaN) are not counted
    in_bin = ((ordered - left) * bins / (right - left)).long().clamp(0, bins - 1)
    below = ordered < left
    index = torch.where(inside, in_bin, torch.where(below, -1, bins))  # sorted, as `ordered` is
    starts = torch.searchsorted(index, torch.arange(bins + 1, device=ordered.device))
    return starts.diff().to(ordered.dtype)


def distribution(values: torch.Tensor) -> dict[str, torch.Tensor]:
    """mean, std and the 15th / 50th / 85th percentiles of all entries of `values`."""
    stats = {"mean": values.mean(), "std": values.std()}
    for q, value in zip(PERCENTILES, percentiles(values), strict=True):
        stats[f"p{q}"] = value
    return stats


def saturated_share(
    output: torch.Tensor, asymptotes: tuple[float, float], margin: float
) -> torch.Tensor:
    """Share of (example, unit) outputs within `margin` of an asymptote (a sigmoid's 0 and 1)."""
    low, high = asymptotes
    return ((output < low + margin) | (output > high - margin)).float().mean()


def dead_share(preactivation: torch.Tensor) -> torch.Tensor:
    """Share of units whose input is <= 0 for every probe example (zero ReLU output throughout)."""
    return (units_last(preactivation) <= 0).all(dim=0).float().mean()


def unit_symmetry(output: torch.Tensor) -> torch.Tensor:
    """Share of the layer's output variance carried by the average unit.

    1: all units compute the same function on the probe batch (symmetry never broken);
    about 1/units for independent units. A constant layer counts as symmetric.
    """
    per_sample = units_last(output).double()
    total = per_sample.var(unbiased=False)
    shared = per_sample.mean(dim=1).var(unbiased=False)
    return torch.where(total > 0, shared / total.clamp_min(1e-300), 1.0).float()


def layer_metrics(
    layer: str,
    preactivation: torch.Tensor,
    output: torch.Tensor,
    *,
    activation: str | ActivationOption | Any,  # an option, its config, or a built-in's name
    typical_unit: int,
    margin: float,
) -> dict[str, torch.Tensor]:
    """All probe metrics of one layer under their logged names (`act/layer3/p15`, `sat/layer3`)."""
    metrics = {f"act/{layer}/{name}": value for name, value in distribution(preactivation).items()}
    unit = units_last(preactivation)[:, typical_unit]
    metrics.update(
        {f"act/{layer}/unit/{name}": value for name, value in distribution(unit).items()}
    )
    option = activation_option(activation)
    if option.asymptotes is not None:
        metrics[f"sat/{layer}"] = saturated_share(output, option.asymptotes, margin)
    if option.rectified:
        metrics[f"dead/{layer}"] = dead_share(preactivation)
    metrics[f"sym/{layer}"] = unit_symmetry(output)
    return metrics
