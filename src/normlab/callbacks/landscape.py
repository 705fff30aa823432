"""The landscape callback: Santurkar et al. 2018's measures of why batch norm helps, on a fixed
probe batch (x, y), the first `probe_size` validation examples.

Every `every_n_steps` optimizer steps (steps 0, N, 2N, ...), for each member's network with
weights w and probe loss L:

- `landscape/loss_min`, `_max`, `_spread`: L(w - eta g) over eta = lr x `lr_multipliers`,
  g = grad L(w), lr the member's learning rate of this step (their Fig. 4a; spread = max - min);
- `landscape/grad_diff_min`, `_max`: gradient predictiveness ||grad L(w) - grad L(w - eta g)||
  over the same grid (Fig. 4b); `landscape/beta`: the effective beta-smoothness, the maximum
  over eta of that difference over ||eta g|| (Fig. 4c); `landscape/loss`, `landscape/grad_norm`
  at w itself;
- `ics/<layer>/l2`, `ics/<layer>/cos` (definition 2.1) for every layer with layers before it
  (hidden blocks from the second on, and `head`): G = grad of L wrt the layer's weight at w
  (before this step's update), G' = the same at (W'_1..W'_{i-1}, W_i..W_k), where W' are the
  weights the real optimizer step left (every parameter of the modules before layer i, norm
  gains included, updated; the rest as before the step); ||G - G'||_2 and cos(G, G').

The probes run in training mode for batch norm (batch statistics, as in the step) on copies of
its running statistics, with dropout and dropconnect off; they change nothing of the training:
no parameter, gradient, optimizer state, buffer or random draw. Noisy batch norm's noise comes
from the probes' own generator (models/noisy_batchnorm.seeded_noise) seeded by the step: every
probe at step t sees one noise draw, and G' (the network of step t + 1) sees step t + 1's, as the
next step would: its changing noise is the instability it adds.

The pre-update measures run in `on_before_optimizer_step` (after the step's backward), G' in an
optimizer step post-hook (right after the update, before anything else moves the weights).
Each member of a stack is probed on its own ordinary network; stacks form only of cells with
the same callbacks (a key of normlab.stack.plan.stack_key), so every member records at the same
steps.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.callbacks import Callback
from torch import nn
from torch.func import functional_call, grad_and_value

from normlab.callbacks.instruments import log_member_scalars, member_networks
from normlab.config.errors import ConfigError
from normlab.models.blocks import HiddenBlock
from normlab.models.noisy_batchnorm import seeded_noise

Tensors = dict[str, torch.Tensor]


def probe_batch(datamodule: pl.LightningDataModule, size: int) -> tuple[torch.Tensor, ...]:
    """The first `size` validation examples and their labels (fewer when the split is smaller)."""
    inputs, labels, count = [], [], 0
    for x, y in datamodule.val_dataloader():
        inputs.append(x)
        labels.append(y)
        count += len(x)
        if count >= size:
            break
    return torch.cat(inputs)[:size], torch.cat(labels)[:size]


@contextmanager
def probe_mode(model: nn.Module) -> Iterator[None]:
    """Batch norms in training mode (batch statistics), every other module in eval mode (no
    dropout draws); the modes are restored after."""
    modes = {module: module.training for module in model.modules()}
    model.eval()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.train()
    try:
        yield
    finally:
        for module, training in modes.items():
            module.training = training


def probe_loss(model: nn.Module, weights: Tensors, x: torch.Tensor, y: torch.Tensor):
    """L(weights) on (x, y): `model`'s forward with `weights` for its parameters and fresh
    copies of its buffers (batch norm's in-place running-statistic updates land on the copies)."""
    buffers = {name: buffer.clone() for name, buffer in model.named_buffers()}
    return F.cross_entropy(functional_call(model, {**weights, **buffers}, (x,)), y)


def loss_and_gradient(
    model: nn.Module, weights: Tensors, x: torch.Tensor, y: torch.Tensor
) -> tuple[torch.Tensor, Tensors]:
    """(L(weights), grad L(weights)) by torch.func: nothing lands in any `.grad`."""
    gradient, loss = grad_and_value(lambda w: probe_loss(model, w, x, y))(weights)
    return loss.detach(), gradient


def flat_norm(tensors: Tensors) -> torch.Tensor:
    """The 2-norm of all entries of `tensors` together."""
    return torch.linalg.vector_norm(torch.stack([t.norm() for t in tensors.values()]))


def landscape_metrics(
    model: nn.Module,
    weights: Tensors,
    x: torch.Tensor,
    y: torch.Tensor,
    etas: Sequence[float],
) -> tuple[Tensors, Tensors]:
    """The landscape metrics at `weights` (see the module doc) and grad L(weights)."""
    loss, gradient = loss_and_gradient(model, weights, x, y)
    step_norm = flat_norm(gradient)
    losses, differences, smoothness = [], [], []
    for eta in etas:
        moved = {name: w - eta * gradient[name] for name, w in weights.items()}
        moved_loss, moved_gradient = loss_and_gradient(model, moved, x, y)
        difference = flat_norm({n: gradient[n] - moved_gradient[n] for n in gradient})
        losses.append(moved_loss)
        differences.append(difference)
        smoothness.append(difference / (eta * step_norm).clamp_min(1e-30))
    losses, differences = torch.stack(losses), torch.stack(differences)
    metrics = {
        "landscape/loss": loss,
        "landscape/grad_norm": step_norm,
        "landscape/loss_min": losses.min(),
        "landscape/loss_max": losses.max(),
        "landscape/loss_spread": losses.max() - losses.min(),
        "landscape/grad_diff_min": differences.min(),
        "landscape/grad_diff_max": differences.max(),
        "landscape/beta": torch.stack(smoothness).max(),
    }
    return metrics, gradient


def hidden_blocks(model: nn.Module) -> dict[str, HiddenBlock]:
    """normlab's hidden blocks of `model` by name (`layer1`, ...): ICS is defined per block
    (a network of one's own has none, and logs no ICS)."""
    return {name: m for name, m in model.named_children() if isinstance(m, HiddenBlock)}


def ics_layers(model: nn.Module) -> dict[str, tuple[str, list[str]]]:
    """Per layer with layers before it: (its weight's parameter name, the parameter names of
    every module before it)."""
    blocks = hidden_blocks(model)
    weighted = [name for name in blocks if hasattr(blocks[name].transform, "weight")]
    if isinstance(getattr(model, "head", None), nn.Linear):
        weighted.append("head")
    order = [name for name, _ in model.named_children()]
    parameters = [name for name, _ in model.named_parameters()]
    layers = {}
    for layer in weighted[1:]:
        earlier = set(order[: order.index(layer)])
        preceding = [p for p in parameters if p.split(".", 1)[0] in earlier]
        weight = f"{layer}.transform.weight" if layer in blocks else f"{layer}.weight"
        layers[layer] = (weight, preceding)
    return layers


def ics_metrics(
    model: nn.Module,
    before: Tensors,
    gradient: Tensors,
    after: Tensors,
    x: torch.Tensor,
    y: torch.Tensor,
) -> Tensors:
    """||G - G'|| and cos(G, G') per layer (definition 2.1): G from `gradient` (at `before`),
    G' at `before` with every parameter of the preceding modules taken from `after`."""
    metrics = {}
    for layer, (weight, preceding) in ics_layers(model).items():
        mixed = {**before, **{name: after[name] for name in preceding}}
        moving = mixed.pop(weight)

        def layer_loss(w: torch.Tensor, mixed: Tensors = mixed, weight: str = weight):
            return probe_loss(model, {**mixed, weight: w}, x, y)

        shifted = torch.func.grad(layer_loss)(moving)
        original = gradient[weight]
        metrics[f"ics/{layer}/l2"] = (original - shifted).norm()
        metrics[f"ics/{layer}/cos"] = F.cosine_similarity(
            original.reshape(1, -1), shifted.reshape(1, -1), eps=1e-30
        )[0]
    return metrics


class Landscape(Callback):
    """ICS, loss landscape, gradient predictiveness and beta-smoothness every N steps on a
    probe batch (module doc), for every member of a stack on its own network."""

    def __init__(self, cfg: Any):
        self.every_n_steps, self.probe_size = cfg.every_n_steps, cfg.probe_size
        self.multipliers = [float(m) for m in cfg.lr_multipliers]
        if not self.multipliers or any(m <= 0 for m in self.multipliers):
            raise ConfigError(
                f"callbacks.landscape.lr_multipliers={self.multipliers}: give one or more "
                "positive multiples of the learning rate, e.g. [0.25,0.5,1,2,4]"
            )
        self.ics = cfg.ics
        self.probe: tuple[torch.Tensor, torch.Tensor] | None = None
        self._step: int | None = None  # the step being recorded, until its update is done
        self._pending: dict[int, tuple[Tensors, Tensors]] = {}  # member -> (w, grad L(w))
        self._metrics: list[Tensors] = []  # per member
        self._module: pl.LightningModule | None = None
        self._trainer: pl.Trainer | None = None
        self._handles: list[Any] = []

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.datamodule is None:
            raise ConfigError("callbacks.landscape needs a datamodule for its probe batch")
        x, y = probe_batch(trainer.datamodule, self.probe_size)
        self.probe = (x.to(pl_module.device), y.to(pl_module.device))

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._trainer, self._module = trainer, pl_module
        self._handles = [
            optimizer.register_step_post_hook(self._after_update)
            for optimizer in trainer.optimizers
        ]

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._remove_hooks()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exc) -> None:
        self._remove_hooks()

    def _remove_hooks(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        step = trainer.global_step
        if step % self.every_n_steps or not trainer.is_global_zero:
            return
        self._step, self._pending = step, {}
        x, y = self.probe
        networks = member_networks(pl_module)
        self._metrics = [{} for _ in networks]
        rates, active = pl_module.member_optimizer.lr.tolist(), pl_module.active_list()
        with torch.enable_grad():
            for member, model in enumerate(networks):
                if not active[member]:
                    continue
                lr = rates[member]
                weights = {name: p.detach().clone() for name, p in model.named_parameters()}
                with probe_mode(model), seeded_noise(model, step):
                    metrics, gradient = landscape_metrics(
                        model, weights, x, y, [lr * m for m in self.multipliers]
                    )
                self._metrics[member].update(metrics)
                self._pending[member] = (weights, gradient)

    def _after_update(self, optimizer: torch.optim.Optimizer, args, kwargs) -> None:
        """Optimizer post-hook: G' with the weights of the update just made, then the log."""
        step, self._step = self._step, None
        if step is None:
            return
        pl_module, (x, y) = self._module, self.probe
        if self.ics:
            networks = member_networks(pl_module)
            with torch.enable_grad():
                for member, (before, gradient) in self._pending.items():
                    model = networks[member]
                    after = {name: p.detach() for name, p in model.named_parameters()}
                    with probe_mode(model), seeded_noise(model, step + 1):
                        metrics = ics_metrics(model, before, gradient, after, x, y)
                    self._metrics[member].update(metrics)
        log_member_scalars(self._trainer, self._metrics, step)
        self._pending, self._metrics = {}, []
