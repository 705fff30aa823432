"""The batched forward of MemberNetworks: one call per layer for all M members.

Per layer: one `baddbmm` (linear) or one grouped convolution (conv) over the stacked leaves, then
norm and activation per run of members of one kind (the launcher sorts members so that each kind
is a contiguous slice of the member axis), pooling, and dropout drawn from each member's own
random stream. The op count of a step does not depend on M, but for the random draws: one small
op per member and random layer (a member's mask must come from its own stream to equal its solo
run).

Layouts: MLP features are feature-major per member, `[M, F, B]`: a linear layer is one
`baddbmm(bias, W, x)` and batch norm one call over the `M*F` channels of the batch. CNN feature
maps are channel-stacked, `[B, M*C, H, W]`, where batch and group norm are again exactly each
member's per-channel statistics.

A network with no batched form (a user's own, resnet_small, a norm without a stacked form)
trains as a stack of one, through its own forward over row 0 of the leaves (`single_forward`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from normlab.models.blocks import HiddenBlock
from normlab.models.dropconnect import DropConnectLinear
from normlab.models.norms import stacked_form
from normlab.models.stacked_norms import NormRows

if TYPE_CHECKING:
    from normlab.models.members import MemberNetworks

Layer = Callable[[torch.Tensor, bool], torch.Tensor]  # (activations, shared input) -> next


class NotStackable(ValueError):
    """These networks have no batched form (the reason is the message)."""


def single_forward(networks: MemberNetworks) -> Layer:
    """The one member's own forward, over row 0 of the stacked leaves (so gradients, DDP's
    hooks and checkpoints see the leaves)."""

    def forward(x: torch.Tensor, shared: bool) -> torch.Tensor:
        arguments = networks.row_arguments(0)
        network = networks.networks[0]  # looked up now: a conversion may have replaced it
        return functional_call(network, arguments, (x if shared else x[0],)).unsqueeze(0)

    return forward


def batched_forward(networks: MemberNetworks) -> Layer:
    """One batched function per child of the members' nn.Sequential, in order."""
    plan = _plan(networks)

    def forward(x: torch.Tensor, shared: bool) -> torch.Tensor:
        for layer in plan:
            x = layer(x, shared)
            shared = False  # only the first layer sees the shared input
        return x

    return forward


def _plan(networks: MemberNetworks) -> list[Layer]:
    members = networks.networks
    count, first = len(members), members[0]
    if not all(isinstance(m, nn.Sequential) for m in members):
        raise NotStackable("only normlab's own mlp and cnn networks have a batched form")
    names = [name for name, _ in first.named_children()]
    for member in members[1:]:
        if [name for name, _ in member.named_children()] != names:
            raise NotStackable("members differ in their layers (model shape is a stack key)")
    maps = not isinstance(getattr(first, names[0]), nn.Flatten)  # CNN: channel-stacked maps

    def features_input(x: torch.Tensor, shared: bool) -> torch.Tensor:
        # the MLP's flatten, as [M, F, B] views (a shared evaluation batch: broadcast)
        if shared:
            return x.flatten(1).t().expand(count, -1, -1)
        return x.flatten(2).transpose(1, 2)

    def maps_input(x: torch.Tensor, shared: bool) -> torch.Tensor:
        if shared:
            return x.repeat(1, count, 1, 1)
        batch, channels = x.shape[1], x.shape[2]
        return x.transpose(0, 1).reshape(batch, count * channels, *x.shape[3:])

    def maps_to_features(x: torch.Tensor, shared: bool) -> torch.Tensor:
        return x.reshape(x.shape[0], count, -1).permute(1, 2, 0)

    plan: list[Layer] = [maps_input if maps else features_input]
    for name in names:
        layers = [getattr(member, name) for member in members]
        if isinstance(layers[0], nn.Flatten):
            if maps:  # the CNN's flatten before its head
                plan.append(maps_to_features)
                maps = False
        elif isinstance(layers[0], HiddenBlock):
            plan.append(_hidden_block(networks, name, layers, maps))
        elif type(layers[0]) is nn.Linear and not maps:
            linear = _batched_linear(networks, name, layers)
            plan.append(lambda x, shared, linear=linear: linear(x))
        elif isinstance(layers[0], nn.modules.batchnorm._BatchNorm):
            norm = _norm_runs(networks, name, layers, maps)
            plan.append(lambda x, shared, norm=norm: norm(x))
        else:
            raise NotStackable(f"layer {name} ({type(layers[0]).__name__}) has no batched form")
    # [M, classes, B] -> logits [M, B, classes], contiguous: softmax and argmax over classes
    # run several times faster along the innermost dimension
    plan.append(lambda x, shared: x.transpose(1, 2).contiguous())
    return plan


def _optional_leaf(networks: MemberNetworks, name: str) -> nn.Parameter | None:
    return networks.leaf(name) if networks.has_leaf(name) else None


def _batched_linear(networks: MemberNetworks, prefix: str, layers: Sequence[nn.Linear]):
    """Every member's linear layer in one call, `[M, in, B] -> [M, out, B]` (DropConnect: each
    drawing member's weight mask from its own stream)."""
    weight = networks.leaf(f"{prefix}.weight")
    bias = _optional_leaf(networks, f"{prefix}.bias")
    drop = [layer.p if isinstance(layer, DropConnectLinear) else 0.0 for layer in layers]
    drawing = [index for index, p in enumerate(drop) if p > 0]
    if drawing:
        drop_p = torch.tensor(drop).view(-1, 1, 1)

    def linear(x: torch.Tensor) -> torch.Tensor:
        w = weight
        if drawing and networks.training:
            # what DropConnectLinear draws: rand_like(weight) >= p, per member, own stream
            noise = torch.ones_like(weight.detach())
            rows = noise.unbind(0)
            generators = networks.randomness.generators(noise.device)
            for index in drawing:
                rows[index].uniform_(generator=generators[index])
            p = drop_p.to(noise.device, noise.dtype)
            w = weight * (noise >= p) / (1 - p)
        if bias is None:
            return torch.bmm(w, x)
        return torch.baddbmm(bias.unsqueeze(2), w, x)

    return linear


def _batched_conv(networks: MemberNetworks, prefix: str, layers: Sequence[nn.Conv2d]):
    """Channel-stacked maps through every member's conv: one grouped convolution."""
    conv, count = layers[0], len(layers)
    weight = networks.leaf(f"{prefix}.weight")
    bias = _optional_leaf(networks, f"{prefix}.bias")

    def convolve(x: torch.Tensor) -> torch.Tensor:
        stacked_bias = bias.flatten() if bias is not None else None
        return F.conv2d(
            x, weight.flatten(0, 1), stacked_bias, conv.stride, conv.padding, conv.dilation, count
        )

    return convolve


def _kind(module: nn.Module) -> tuple:
    """What must agree for members to share one batched norm or activation call."""
    settings = {
        key: value
        for key, value in vars(module).items()
        if not key.startswith("_") and key != "training"
    }
    return type(module), tuple(sorted((k, repr(v)) for k, v in settings.items()))


def _runs_by(kinds: Sequence[tuple]) -> list[tuple[int, int]]:
    """Contiguous [start, end) runs of members of one kind."""
    runs, start = [], 0
    for index in range(1, len(kinds) + 1):
        if index == len(kinds) or kinds[index] != kinds[start]:
            runs.append((start, index))
            start = index
    return runs


def _per_run(parts, maps: bool, count: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """Apply each run's function to its slice of the member axis, then join the slices."""
    if len(parts) == 1:
        return parts[0][2]

    def apply(x: torch.Tensor) -> torch.Tensor:
        if maps:
            width = x.shape[1] // count
            return torch.cat([f(x[:, s * width : e * width]) for s, e, f in parts], dim=1)
        return torch.cat([f(x[s:e]) for s, e, f in parts])

    return apply


def _norm_runs(networks: MemberNetworks, prefix: str, norms: Sequence[nn.Module], maps: bool):
    """Every member's norm: one call per run of members of one kind."""
    parts = [
        (start, end, _stacked_norm(networks, prefix, norms, start, end, maps))
        for start, end in _runs_by([_kind(n) for n in norms])
    ]
    return _per_run(parts, maps, len(norms))


def _stacked_norm(networks, prefix: str, norms, start: int, end: int, maps: bool):
    """One run of same-kind norms (members start..end) in its stacked form
    (normlab.models.stacked_norms), or one member's own layer when it has none."""
    first = norms[start]
    form = stacked_form(first)
    if form is not None:
        return form(first, NormRows(networks, prefix, start, end, maps))
    if len(norms) > 1:
        raise NotStackable(f"{prefix} ({type(first).__name__}) has no stacked form")
    return lambda x: _single_member(networks, f"{prefix}", first, x, maps)


def _single_member(networks, prefix: str, module: nn.Module, x: torch.Tensor, maps: bool):
    """The one member's own module over its rows of the leaves (a norm with no stacked form)."""
    arguments = {
        name.removeprefix(f"{prefix}."): value
        for name, value in networks.row_arguments(0).items()
        if name.startswith(f"{prefix}.")
    }
    if maps:
        return functional_call(module, arguments, (x,))
    return functional_call(module, arguments, (x[0].t(),)).t().unsqueeze(0)


def _hidden_block(networks, prefix: str, blocks: Sequence[HiddenBlock], maps: bool) -> Layer:
    """transform (batched) -> norm and activation per run of one kind -> pool -> dropout."""
    transforms = [block.transform for block in blocks]
    conv = isinstance(transforms[0], nn.Conv2d)
    if conv != maps or not all(
        type(t) in (nn.Linear, DropConnectLinear, nn.Conv2d) for t in transforms
    ):
        raise NotStackable("hidden blocks must be linear (mlp) or conv (cnn) in every member")
    count = len(blocks)
    norms, acts = [b.norm for b in blocks], [b.act for b in blocks]
    if len({b.norm_before_act for b in blocks}) == 1:
        # norms in runs of one norm kind, activations in runs of one activation kind
        norm = _norm_runs(networks, f"{prefix}.norm", norms, maps)
        act = _per_run(
            [(s, e, acts[s]) for s, e in _runs_by([_kind(a) for a in acts])], maps, count
        )
        norm_and_act = _norm_and_act(norm, act, blocks[0].norm_before_act)
    else:
        runs = []
        for start, end in _runs_by([_block_kind(b) for b in blocks]):
            norm = _stacked_norm(networks, f"{prefix}.norm", norms, start, end, maps)
            runs.append(
                (start, end, _norm_and_act(norm, acts[start], blocks[start].norm_before_act))
            )
        norm_and_act = _per_run(runs, maps, count)
    pool = blocks[0].pool
    dropouts = [b.dropout for b in blocks]
    transform = (
        _batched_conv(networks, f"{prefix}.transform", transforms)
        if conv
        else _batched_linear(networks, f"{prefix}.transform", transforms)
    )
    dropout = _Dropout(networks, dropouts, maps)

    def block(x: torch.Tensor, shared: bool) -> torch.Tensor:
        return dropout(pool(norm_and_act(transform(x))))

    return block


def _block_kind(block: HiddenBlock) -> tuple:
    """A hidden block's norm, activation and placement: what one batched call needs shared."""
    return _kind(block.norm), _kind(block.act), block.norm_before_act


def _norm_and_act(norm, act: nn.Module, norm_first: bool) -> Callable[[torch.Tensor], torch.Tensor]:
    if norm_first:
        return lambda x: act(norm(x))
    return lambda x: norm(act(x))


class _Dropout:
    """Each member's inverted dropout, its mask drawn from its own stream exactly as its solo
    run's nn.Dropout draws it: `empty_like(input).bernoulli_(1 - p)` over the member's
    `(B, ...)` activations, divided by `1 - p`. One draw per drawing member, one multiply."""

    def __init__(self, networks, dropouts: Sequence[nn.Module], maps: bool):
        self.networks, self.dropouts, self.maps = networks, list(dropouts), maps
        self.p = [d.p if isinstance(d, nn.Dropout) else 0.0 for d in dropouts]
        self.drawing = [index for index, p in enumerate(self.p) if p > 0]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if not self.drawing or not self.networks.training:
            return x
        count = len(self.p)
        if self.maps:  # [B, M*C, H, W] -> each member's (B, C, H, W)
            batch, channels = x.shape[0], x.shape[1] // count
            shape = (count, batch, channels, *x.shape[2:])
        else:  # [M, F, B] -> each member's (B, F)
            shape = (count, x.shape[2], x.shape[1])
        noise = torch.ones(shape, dtype=x.dtype, device=x.device)
        rows = noise.unbind(0)
        generators = self.networks.randomness.generators(x.device)
        for index in self.drawing:
            rows[index].bernoulli_(1 - self.p[index], generator=generators[index])
        keep = torch.tensor([1 - p for p in self.p], dtype=x.dtype, device=x.device)
        noise = noise / keep.view(-1, *[1] * (noise.dim() - 1))
        if self.maps:
            return x * noise.transpose(0, 1).reshape(x.shape)
        return x * noise.transpose(1, 2)
