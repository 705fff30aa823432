"""Batch-norm diagnostics: running versus batch statistics, and accuracy under an input shift."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from normlab.callbacks.activation_stats import units_last
from normlab.config.schema import ShiftKind
from normlab.models.layers import BATCH_NORMS

Batch = tuple[torch.Tensor, torch.Tensor]


def has_batch_norm(model: nn.Module) -> bool:
    """Whether any layer of `model` is a batch norm."""
    return any(isinstance(module, BATCH_NORMS) for module in model.modules())


def running_stat_gap(name: str, norm: nn.Module, inputs: torch.Tensor) -> dict[str, torch.Tensor]:
    """How far the running statistics are from the probe batch's, averaged over features.

    `bn/<layer>/mean_gap`: |probe mean - running mean| in units of the running std;
    `bn/<layer>/std_gap`: |probe std / running std - 1|.
    """
    samples = units_last(inputs)
    mean = samples.mean(dim=0)
    # unbiased, like the running variance; written out because var(dim=0) is ~15x slower on CPU
    variance = ((samples - mean) ** 2).sum(dim=0) / max(len(samples) - 1, 1)
    running_std = (norm.running_var + norm.eps).sqrt()
    probe_std = (variance + norm.eps).sqrt()
    return {
        f"bn/{name}/mean_gap": ((mean - norm.running_mean).abs() / running_std).mean(),
        f"bn/{name}/std_gap": (probe_std / running_std - 1).abs().mean(),
    }


@contextmanager
def batch_statistics(model: nn.Module) -> Iterator[None]:
    """Batch norms normalize with each batch's own statistics; running statistics stay untouched."""
    norms = [module for module in model.modules() if isinstance(module, BATCH_NORMS)]
    saved = [(norm.training, norm.track_running_stats) for norm in norms]
    try:
        for norm in norms:
            norm.train()
            norm.track_running_stats = False  # training mode without the running-average update
        yield
    finally:
        for norm, (training, tracking) in zip(norms, saved, strict=True):
            norm.train(training)
            norm.track_running_stats = tracking


def shift_inputs(
    x: torch.Tensor,
    kind: ShiftKind,
    amount: float,
    data_std: torch.Tensor,
    generator: torch.Generator,
) -> torch.Tensor:
    """`x` under the shift of `callbacks.instruments.shift` (see ShiftConfig for the units)."""
    kind = ShiftKind(kind)
    if kind is ShiftKind.brightness:
        return x + amount * data_std
    if kind is ShiftKind.contrast:
        mean = x.reshape(len(x), -1).mean(dim=1).view(-1, *[1] * (x.dim() - 1))
        return mean + amount * (x - mean)
    noise = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
    return x + amount * data_std * noise


def accuracy(model: nn.Module, batches: Sequence[Batch]) -> torch.Tensor:
    """Share of correctly classified examples over `batches`."""
    correct = sum((model(x).argmax(dim=1) == y).sum() for x, y in batches)
    return correct / sum(len(y) for _, y in batches)


@torch.no_grad()
def test_time_metrics(model: nn.Module, batches: Sequence[Batch], shift) -> dict[str, torch.Tensor]:
    """Test accuracy with running versus per-batch statistics, clean and shifted (eval mode)."""
    metrics = {}
    with_bn = has_batch_norm(model)
    if with_bn:
        metrics["bn/test_acc_running"] = accuracy(model, batches)
        with batch_statistics(model):
            metrics["bn/test_acc_batchstats"] = accuracy(model, batches)
    if shift is not None:
        data_std = torch.cat([x.reshape(-1) for x, _ in batches]).std()
        generator = torch.Generator().manual_seed(0)  # the same noisy copy in every run
        shifted = [
            (shift_inputs(x, shift.kind, shift.amount, data_std, generator), y) for x, y in batches
        ]
        metrics["shift/test_acc"] = accuracy(model, shifted)
        if with_bn:
            with batch_statistics(model):
                metrics["shift/test_acc_batchstats"] = accuracy(model, shifted)
    return metrics
