"""`python -m normlab.gradcheck [overrides]`: back-propagation against centred finite differences.

Builds the network the same overrides would train (any `model._target_`, same config, same init
seed), copies it to float64 and compares, on the first `gradcheck.batch_size` training examples,
every parameter tensor's autograd gradient of the cross-entropy with
(J(theta + eps) - J(theta - eps)) / 2 eps.
Dropout and DropConnect are off; batch norm runs in training mode, because the gradient through
the batch statistics is the one worth checking; noisy batch norm keeps its noise, frozen (one
draw, reused by every forward). Prints the worst relative error per tensor.
Exit code: 0 when all are within `gradcheck.tolerance`, 1 when one is not, 2 for a config or
data error.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import hydra
import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn

from normlab.config.errors import ConfigError
from normlab.config.resolvers import register_resolvers
from normlab.config.schema import register_schemas
from normlab.config.validate import validate
from normlab.models.dropconnect import DropConnectLinear
from normlab.models.noisy_batchnorm import seeded_noise
from normlab.paths import CONFIG_SEARCH_PATH
from normlab.utils.seeding import run_seeds

register_schemas()
register_resolvers()

# Below this size a gradient entry is compared in absolute terms: float64 centred differences
# of an O(1) loss with step 1e-5 carry ~3e-11 of rounding noise, which would swamp the relative
# error of a near-zero gradient. A wrong backward errs by about the gradient itself: still seen.
ERROR_FLOOR = 1e-6


@dataclass(frozen=True)
class TensorCheck:
    """The outcome for one parameter tensor."""

    name: str
    entries: int  # entries compared
    worst: float  # worst relative error over them


def relative_error(analytic: torch.Tensor, numeric: torch.Tensor) -> torch.Tensor:
    """|a - n| / max(|a|, |n|, ERROR_FLOOR), entry by entry."""
    scale = torch.maximum(analytic.abs(), numeric.abs()).clamp_min(ERROR_FLOOR)
    return (analytic - numeric).abs() / scale


def deterministic_training_mode(model: nn.Module) -> None:
    """Training mode (batch statistics) with the random layers switched off (noisy batch norms
    keep their noise: `run_gradcheck` freezes it)."""
    model.train()
    for module in model.modules():
        # every dropout kind (Dropout2d, AlphaDropout... in a network of one's own)
        if isinstance(module, (nn.modules.dropout._DropoutNd, DropConnectLinear)):
            module.eval()


def check_gradients(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    epsilon: float,
    max_entries: int | None,
    seed: int = 0,
) -> list[TensorCheck]:
    """Worst relative error of each parameter tensor of `model` (used as it is: float64 and
    deterministic is the caller's choice); at most `max_entries` random entries per tensor."""
    parameters = dict(model.named_parameters())
    loss = F.cross_entropy(model(x), y)
    analytic = dict(
        zip(parameters, torch.autograd.grad(loss, list(parameters.values())), strict=True)
    )
    generator = torch.Generator().manual_seed(seed)
    checks = []
    with torch.no_grad():
        for name, parameter in parameters.items():
            flat = parameter.view(-1)
            count = flat.numel() if max_entries is None else min(max_entries, flat.numel())
            entries = torch.randperm(flat.numel(), generator=generator)[:count]
            numeric = torch.empty(count, dtype=flat.dtype)
            for slot, entry in enumerate(entries.tolist()):
                original = flat[entry].item()
                flat[entry] = original + epsilon
                plus = F.cross_entropy(model(x), y).item()
                flat[entry] = original - epsilon
                minus = F.cross_entropy(model(x), y).item()
                flat[entry] = original
                numeric[slot] = (plus - minus) / (2 * epsilon)
            errors = relative_error(analytic[name].reshape(-1)[entries].cpu(), numeric)
            checks.append(TensorCheck(name, count, float(errors.max())))
    return checks


def run_gradcheck(cfg: DictConfig) -> list[TensorCheck]:
    """Build the configured network in float64 and check every parameter tensor."""
    from normlab.data.datamodule import ResidentDataModule
    from normlab.models.build import seeded_network

    validate(cfg)
    torch.set_num_threads(cfg.threads or 1)  # tiny batches: extra threads only add contention
    seeds = run_seeds(cfg)
    datamodule = ResidentDataModule(cfg.data, Path(cfg.paths.data_dir), seeds.data)
    datamodule.setup()
    # the same initial weights as training, by construction
    network = seeded_network(cfg, datamodule.input_shape, datamodule.num_classes, seeds.init)
    network.double()
    deterministic_training_mode(network)
    x, y = datamodule.tensors["train"]
    size = cfg.gradcheck.batch_size
    # norm=noisy_batch: the same noise at every forward, or the differences would measure it
    with seeded_noise(network, cfg.seed):
        return check_gradients(
            network,
            x[:size].double(),
            y[:size],
            epsilon=cfg.gradcheck.epsilon,
            max_entries=cfg.gradcheck.max_entries,
            seed=cfg.seed,
        )


def format_report(checks: list[TensorCheck], tolerance: float) -> str:
    """A table of tensors and their worst relative errors, then the verdict."""
    width = max(len("parameter"), *(len(check.name) for check in checks))
    lines = [f"{'parameter':<{width}}  entries  worst relative error"]
    for check in checks:
        flag = "  FAIL" if check.worst > tolerance else ""
        lines.append(f"{check.name:<{width}}  {check.entries:>7}  {check.worst:.3e}{flag}")
    worst = max(check.worst for check in checks)
    verdict = "gradients match" if worst <= tolerance else "GRADIENTS DIFFER"
    lines.append(f"worst {worst:.3e}, tolerance {tolerance:.1e}: {verdict}")
    return "\n".join(lines)


@hydra.main(version_base="1.3", config_path=CONFIG_SEARCH_PATH, config_name="train")
def main(cfg: DictConfig) -> None:
    """Print the table; exit 1 above `gradcheck.tolerance`, 2 on a config or data error."""
    from normlab.data.errors import DataError

    try:
        checks = run_gradcheck(cfg)
    except (ConfigError, DataError) as exc:
        kind = "config" if isinstance(exc, ConfigError) else "data"
        print(f"normlab: {kind} error: {exc}", file=sys.stderr)
        sys.exit(2)
    settings = cfg.gradcheck
    entries = (
        "every entry"
        if settings.max_entries is None
        else f"up to {settings.max_entries} random entries"
    )
    print(
        f"gradcheck: float64, first {settings.batch_size} training examples, epsilon "
        f"{settings.epsilon:g}, {entries} per tensor"
    )
    print(format_report(checks, settings.tolerance))
    if max(check.worst for check in checks) > settings.tolerance:
        sys.exit(1)


if __name__ == "__main__":
    main()
