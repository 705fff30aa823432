"""Noisy batch norm (Santurkar et al. 2018, section 2.1): batch norm, then noise that puts the
distributional instability batch norm removes back in.

In training mode every activation of every example is multiplied by a random scale and shifted
by a random offset, `y = bn(x) * (m_s + s_s * e1) + (m_b + s_b * e2)` with e1, e2 ~ N(0, 1),
where the distribution's parameters are themselves drawn anew per unit at every step (every
training forward): m_s ~ U(1 - a, 1 + a), s_s ~ U(0, b), m_b ~ U(-c, c), s_b ~ U(0, d) with
(a, b, c, d) = the `norm.noise_*` keys. A scale of mean 1 and a shift of mean 0 on average, but
at any one step a non-zero mean and a non-unit variance: what follows sees a moving input
distribution. In eval mode the layer is plain batch norm (like dropout, the noise is a
training-time device).

The draws come from the default generator, which the run seeds with its data seed: seeded, and
resumed with the checkpoint's random state, like dropout. `seeded_noise` points every noisy
layer at a generator of its own instead (the instruments' probes and gradcheck): the training
stream is then not touched, and the same seed gives the same noise at every call.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


class _NoisyBatchNorm:
    """The noise on top of a batch norm class (mixed in before it)."""

    def __init__(
        self,
        num_features: int,
        *,
        scale_mean: float,
        scale_std: float,
        shift_mean: float,
        shift_std: float,
        **batch_norm_args,
    ):
        super().__init__(num_features, **batch_norm_args)  # the batch norm class after us
        self.noise_scale_mean, self.noise_scale_std = scale_mean, scale_std
        self.noise_shift_mean, self.noise_shift_std = shift_mean, shift_std
        self.noise_seed: int | None = None  # set by seeded_noise

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = super().forward(x)
        if not self.training:
            return out
        generator = None
        if self.noise_seed is not None:
            generator = torch.Generator(x.device).manual_seed(self.noise_seed)
        scale, shift = self.draw_noise(out, generator)
        return out * scale + shift

    def draw_noise(
        self, out: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """This step's (scale, shift), each of `out`'s shape: per-unit distribution parameters
        first (one uniform draw of 4 x units), then per-activation normals (two of out's size)."""
        units = out.shape[1]
        shape = (1, units) + (1,) * (out.dim() - 2)  # broadcast over examples (and pixels)
        u = torch.rand(4, units, generator=generator, device=out.device, dtype=out.dtype)
        scale_mean = 1 + self.noise_scale_mean * (2 * u[0] - 1)
        scale_std = self.noise_scale_std * u[1]
        shift_mean = self.noise_shift_mean * (2 * u[2] - 1)
        shift_std = self.noise_shift_std * u[3]
        e = torch.randn((2, *out.shape), generator=generator, device=out.device, dtype=out.dtype)
        scale = scale_mean.view(shape) + scale_std.view(shape) * e[0]
        shift = shift_mean.view(shape) + shift_std.view(shape) * e[1]
        return scale, shift

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, noise: scale mean 1±{self.noise_scale_mean} "
            f"std<={self.noise_scale_std}, shift mean ±{self.noise_shift_mean} "
            f"std<={self.noise_shift_std}"
        )


class NoisyBatchNorm1d(_NoisyBatchNorm, nn.BatchNorm1d):
    """Batch norm over (N, C) features followed by Santurkar's per-step-varying noise."""


class NoisyBatchNorm2d(_NoisyBatchNorm, nn.BatchNorm2d):
    """Batch norm over (N, C, H, W) maps followed by Santurkar's per-step-varying noise."""


NOISY_BATCH_NORMS = (NoisyBatchNorm1d, NoisyBatchNorm2d)


def noisy_layers(model: nn.Module) -> list[_NoisyBatchNorm]:
    """The model's noisy batch norms, in module order."""
    return [module for module in model.modules() if isinstance(module, NOISY_BATCH_NORMS)]


@contextmanager
def seeded_noise(model: nn.Module, seed: int) -> Iterator[None]:
    """Inside, the noisy layers of `model` draw from generators of their own seeded from `seed`
    (layer k: `seed * 1009 + k`) at every forward: the same noise at each call, no draw from
    the default generator. Outside, they draw from the default generator again."""
    layers = noisy_layers(model)
    for index, layer in enumerate(layers):
        layer.noise_seed = seed * 1009 + index
    try:
        yield
    finally:
        for layer in layers:
            layer.noise_seed = None
