"""MemberStack: M networks of one structure, trained as one with a leading member axis.

Each member stays the network its solo run would build (its own parameters, buffers, init), so
the optimizer, the instruments, checkpoints and a member's results all see an ordinary
network. Only the forward pass is batched: per layer, one `baddbmm` (linear) or one grouped
convolution (conv) over all members, then norm and activation per run of members of one kind
(the launcher sorts members so each kind is a contiguous slice), dropout per member from the
member's own random stream. A stack of one is the member's own forward, unchanged.

Layouts: MLP features are feature-major per member, `[M, F, B]`: a linear layer is one
`baddbmm(bias, W, x)` whose weight gradient lands in the members' own rows without a copy,
and batch norm is one call over `M*F` channels of the batch. CNN feature maps are
channel-stacked, `[B, M*C, H, W]`, where batch and group norm are again exactly the solo
per-channel statistics.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from normlab.models.blocks import HiddenBlock
from normlab.models.dropconnect import DropConnectLinear


class NotStackable(ValueError):
    """These networks cannot train as one stack (the reason is the message)."""


class MemberRandomness:
    """Each member's own random stream for dropout, dropconnect and augmentation draws.

    A solo run draws from the process's global generator after seeding it with its data seed;
    a member gets exactly that stream, swapped in around its draws. A stack of one keeps
    using the global generator itself (nothing to swap).
    """

    def __init__(self, data_seeds: Sequence[int]):
        self.seeds = list(data_seeds)
        self.states: list[torch.Tensor] | None = None
        if len(self.seeds) > 1:
            self.states = [torch.Generator().manual_seed(s).get_state() for s in self.seeds]
        self.cuda_states: list[torch.Tensor] | None = None

    @contextmanager
    def member(self, index: int, device: torch.device):
        """Draws inside come from member `index`'s stream."""
        if self.states is None:
            yield
            return
        cuda = device.type == "cuda"
        if cuda and self.cuda_states is None:
            self.cuda_states = [_cuda_seed_state(seed, device) for seed in self.seeds]
        torch.set_rng_state(self.states[index])
        if cuda:
            torch.cuda.set_rng_state(self.cuda_states[index], device)
        try:
            yield
        finally:
            self.states[index] = torch.get_rng_state()
            if cuda:
                self.cuda_states[index] = torch.cuda.get_rng_state(device)

    def state_dict(self) -> dict:
        """Every stream's position (for checkpoints); the global one for a stack of one."""
        states = self.states if self.states is not None else [torch.get_rng_state()]
        cuda = self.cuda_states
        if cuda is None and self.states is None and cuda_in_use():
            cuda = [torch.cuda.get_rng_state()]  # this process's device (each DDP rank's own)
        return {"cpu": [s.clone() for s in states], "cuda": cuda}

    def load_state_dict(self, state: dict) -> None:
        """Continue every stream where the checkpoint left it."""
        cpu, cuda = state["cpu"], state.get("cuda")
        if self.states is None:
            # a copy: set_rng_state on a view with a storage offset crashes the process
            torch.set_rng_state(cpu[0].clone())
            if cuda and torch.cuda.is_available():  # applied when CUDA starts, if not yet
                torch.cuda.set_rng_state(cuda[0].clone())
            return
        self.states = [s.clone() for s in cpu]
        self.cuda_states = [s.clone() for s in cuda] if cuda else None


def cuda_in_use() -> bool:
    """Whether this process has started CUDA (a CPU run on a GPU machine has not: asking for
    its generator state would start a CUDA context just to save an unused stream)."""
    return torch.cuda.is_available() and torch.cuda.is_initialized()


def _cuda_seed_state(seed: int, device: torch.device) -> torch.Tensor:
    """The CUDA generator state right after seeding it with `seed` (as seed_everything does)."""
    saved = torch.cuda.get_rng_state(device)
    torch.cuda.manual_seed(seed)
    state = torch.cuda.get_rng_state(device)
    torch.cuda.set_rng_state(saved, device)
    return state


Layer = Callable[[torch.Tensor, bool], torch.Tensor]  # (activations, shared input) -> next


class _Rows(torch.autograd.Function):
    """The stacked tensor whose rows are the members' parameters, as the members' own storage:
    forward hands it on as it is, backward gives each member its row of the gradient (views,
    so no copy either way)."""

    @staticmethod
    def forward(ctx, stacked: torch.Tensor, rows: tuple[int, ...], *parameters) -> torch.Tensor:
        ctx.rows = rows  # the row of each parameter (members without one have a zero row)
        return stacked.view_as(stacked)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return None, None, *(grad[row] for row in ctx.rows)


class MemberParameters:
    """One `[M, ...]` tensor whose rows ARE the members' parameters of one layer (a member
    without that parameter, e.g. a linear layer without bias, gets a constant zero row).

    Every member keeps its own leaf parameter (its optimizer groups, its checkpoint), but the
    leaves share this tensor's storage, so a batched op reads them without stacking copies.
    Re-made when the leaves were moved (module.to) or replaced.
    """

    def __init__(self, parameters: Sequence[nn.Parameter | None]):
        self.parameters = list(parameters)
        self.live = [p for p in self.parameters if p is not None]
        self.live_rows = tuple(i for i, p in enumerate(self.parameters) if p is not None)
        self.rows: torch.Tensor | None = None

    def _bound(self) -> bool:
        # module.to / load replace all leaves at once: the first and the last tell
        rows, live = self.rows, self.live_rows
        if rows is None:
            return False
        size = rows[0].numel() * rows.element_size()
        start = rows.data_ptr()
        return all(self.parameters[i].data_ptr() == start + i * size for i in (live[0], live[-1]))

    def get(self) -> torch.Tensor:
        """The stacked rows, connected to every member's leaf for autograd."""
        if not self._bound():
            reference = self.live[0].detach()
            self.rows = torch.stack(
                [
                    p.detach() if p is not None else torch.zeros_like(reference)
                    for p in self.parameters
                ]
            )
            with torch.no_grad():
                for index, parameter in enumerate(self.parameters):
                    if parameter is not None:
                        parameter.data = self.rows[index]
        return _Rows.apply(self.rows, self.live_rows, *self.live)


def _rows(modules: Sequence[nn.Module], name: str) -> MemberParameters | None:
    """The members' `name` parameters as shared rows; None when no member has one."""
    parameters = [getattr(m, name, None) for m in modules]
    return MemberParameters(parameters) if any(p is not None for p in parameters) else None


class MemberStack(nn.Module):
    """M networks of one structure; `forward` maps `[M, B, ...]` inputs (or one shared
    `[B, ...]` batch) to `[M, B, classes]` logits."""

    def __init__(self, members: Sequence[nn.Module], randomness: MemberRandomness | None = None):
        super().__init__()
        self.members = nn.ModuleList(members)
        self.randomness = randomness or MemberRandomness([0] * len(members))
        # plain Python objects, so the members are not registered twice
        self._plan: list[Layer] = _plan(self) if len(members) > 1 else []

    def __len__(self) -> int:
        return len(self.members)

    def forward(self, x: torch.Tensor, shared: bool = False) -> torch.Tensor:
        """Logits of every member: x is `[M, B, ...]`, or `[B, ...]` for all when `shared`."""
        if len(self.members) == 1:
            return self.members[0](x if shared else x[0]).unsqueeze(0)
        for layer in self._plan:
            x = layer(x, shared)
            shared = False  # only the first layer sees the shared input
        return x


def _plan(stack: MemberStack) -> list[Layer]:
    """One batched function per child of the members' nn.Sequential, in order."""
    members = list(stack.members)
    count, first = len(members), members[0]
    if not all(isinstance(m, nn.Sequential) for m in members):
        raise NotStackable("only normlab's own mlp and cnn networks can be stacked")
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
            plan.append(_hidden_block(stack, layers, maps))
        elif type(layers[0]) is nn.Linear and not maps:
            linear = _batched_linear(layers, None)
            plan.append(lambda x, shared, linear=linear: linear(x))
        elif isinstance(layers[0], nn.modules.batchnorm._BatchNorm):
            norm = _norm_runs(layers, maps)
            plan.append(lambda x, shared, norm=norm: norm(x))
        else:
            raise NotStackable(f"layer {name} ({type(layers[0]).__name__}) has no stacked form")
    plan.append(lambda x, shared: x.transpose(1, 2))  # [M, classes, B] -> logits [M, B, classes]
    return plan


def _batched_linear(layers, randomness: MemberRandomness | None):
    """Every member's linear layer in one call, `[M, in, B] -> [M, out, B]`: over shared rows
    of their weights, or (with dropconnect, whose masked weights are new tensors each step)
    over a stacked copy."""
    if any(isinstance(layer, DropConnectLinear) and layer.p > 0 for layer in layers):
        return lambda x: _dropconnect_linear(layers, x, randomness)
    weights, biases = _rows(layers, "weight"), _rows(layers, "bias")

    def linear(x: torch.Tensor) -> torch.Tensor:
        if biases is None:
            return torch.bmm(weights.get(), x)
        return torch.baddbmm(biases.get().unsqueeze(2), weights.get(), x)

    return linear


def _dropconnect_linear(layers, x: torch.Tensor, randomness: MemberRandomness) -> torch.Tensor:
    weights = []
    for index, layer in enumerate(layers):
        weight = layer.weight
        if isinstance(layer, DropConnectLinear) and layer.training and layer.p > 0:
            with randomness.member(index, weight.device):  # the draw DropConnectLinear makes
                keep = torch.rand_like(weight) >= layer.p
            weight = weight * keep / (1 - layer.p)
        weights.append(weight)
    stacked = torch.stack(weights)
    if all(layer.bias is None for layer in layers):
        return torch.bmm(stacked, x)
    biases = [
        layer.bias if layer.bias is not None else layer.weight.new_zeros(layer.out_features)
        for layer in layers
    ]
    return torch.baddbmm(torch.stack(biases).unsqueeze(2), stacked, x)


def _batched_conv(layers: Sequence[nn.Conv2d]):
    """Channel-stacked maps through every member's conv: one grouped convolution."""
    conv, count = layers[0], len(layers)
    weights, biases = _rows(layers, "weight"), _rows(layers, "bias")

    def convolve(x: torch.Tensor) -> torch.Tensor:
        weight = weights.get().flatten(0, 1)
        bias = biases.get().flatten() if biases is not None else None
        return F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, count)

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


def _norm_runs(norms: Sequence[nn.Module], maps: bool) -> Callable[[torch.Tensor], torch.Tensor]:
    """Every member's norm: one call per run of members of one kind."""
    parts = [
        (start, end, _stacked_norm(norms[start:end], maps))
        for start, end in _runs_by([_kind(n) for n in norms])
    ]
    return _per_run(parts, maps, len(norms))


def _per_run(parts, maps: bool, count: int) -> Callable[[torch.Tensor], torch.Tensor]:
    if len(parts) == 1:
        return parts[0][2]

    def apply(x: torch.Tensor) -> torch.Tensor:
        if maps:
            width = x.shape[1] // count
            return torch.cat([f(x[:, s * width : e * width]) for s, e, f in parts], dim=1)
        return torch.cat([f(x[s:e]) for s, e, f in parts])

    return apply


def _stacked_norm(norms: Sequence[nn.Module], maps: bool) -> Callable[[torch.Tensor], torch.Tensor]:
    """One run of same-kind norms over members-first features or channel-stacked maps."""
    first = norms[0]
    if isinstance(first, nn.Identity):
        return lambda x: x
    if type(first) in (nn.BatchNorm1d, nn.BatchNorm2d):  # not ghost or synced subclasses
        return _StackedBatchNorm(norms, maps)
    if isinstance(first, nn.GroupNorm):
        affine = _Affine(norms)
        return lambda x: _group_norm(first, affine, len(norms), x, maps)
    if isinstance(first, nn.LayerNorm) and not maps:
        affine = _Affine(norms)

        def layer_norm(x: torch.Tensor) -> torch.Tensor:  # over each example's features
            out = F.layer_norm(x.transpose(1, 2), first.normalized_shape, None, None, first.eps)
            return affine(out).transpose(1, 2)

        return layer_norm
    return lambda x: _each_member(norms, x, maps)  # e.g. ghost batch norm: exact, slower


def _each_member(modules: Sequence[nn.Module], x: torch.Tensor, maps: bool) -> torch.Tensor:
    if maps:
        return torch.cat(
            [m(part) for m, part in zip(modules, x.chunk(len(modules), 1), strict=True)], 1
        )
    # [M, F, B]: each member's module sees its [B, F]
    return torch.stack([m(part.t()).t() for m, part in zip(modules, x, strict=True)])


class _Affine:
    """The members' norm gains and shifts (None without `affine`), as shared rows."""

    def __init__(self, norms: Sequence[nn.Module]):
        self.weight, self.bias = _rows(norms, "weight"), _rows(norms, "bias")

    def flat(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Gains and shifts of all members back to back (`[M*F]`), for one fused call."""
        if self.weight is None:
            return None, None
        return self.weight.get().flatten(), self.bias.get().flatten()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """`x` (`[M, B, F]`) scaled and shifted by each member's own gain and shift."""
        if self.weight is None:
            return x
        return x * self.weight.get().unsqueeze(1) + self.bias.get().unsqueeze(1)


def _group_norm(first: nn.GroupNorm, affine: _Affine, count: int, x, maps: bool):
    if maps:  # [B, M*C, H, W]: M*G groups are exactly each member's G groups
        weight, bias = affine.flat()
        return F.group_norm(x, count * first.num_groups, weight, bias, first.eps)
    members, features, batch = x.shape  # groups of each example's features
    rows = x.transpose(1, 2).reshape(members * batch, features)
    out = F.group_norm(rows, first.num_groups, None, None, first.eps)
    return affine(out.reshape(members, batch, features)).transpose(1, 2)


class _StackedBatchNorm:
    """Batch norm of several members in one call: member m's feature f is column m*F + f, so
    the statistics are exactly each member's own. The members' running statistics are views
    of one stacked buffer, so the call updates them in place."""

    def __init__(self, norms: Sequence[nn.modules.batchnorm._BatchNorm], maps: bool):
        self.norms, self.maps = list(norms), maps
        self.first = norms[0]
        self.affine = _Affine(norms)
        self.mean = self.var = self.tracked = None

    def _stacked_buffers(self) -> None:
        # re-made whenever the members' buffers were replaced (module.to(device), a load)
        norms = self.norms
        if self.mean is not None and norms[0].running_mean.data_ptr() == self.mean.data_ptr():
            return
        self.mean = torch.cat([n.running_mean for n in norms])
        self.var = torch.cat([n.running_var for n in norms])
        self.tracked = torch.stack([n.num_batches_tracked for n in norms])
        width = norms[0].num_features
        for index, norm in enumerate(norms):
            norm.running_mean = self.mean[index * width : (index + 1) * width]
            norm.running_var = self.var[index * width : (index + 1) * width]
            norm.num_batches_tracked = self.tracked[index]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        first = self.first
        training = first.training
        if first.track_running_stats:
            self._stacked_buffers()
        if training and first.track_running_stats:
            self.tracked.add_(1)
        weight, bias = self.affine.flat()
        use_batch = training or not first.track_running_stats
        if self.maps:
            return F.batch_norm(
                x, self.mean, self.var, weight, bias, use_batch, first.momentum, first.eps
            )
        members, features, batch = x.shape  # [M, F, B]: M*F channels of one batch
        out = F.batch_norm(
            x.reshape(1, members * features, batch),
            self.mean,
            self.var,
            weight,
            bias,
            use_batch,
            first.momentum,
            first.eps,
        )
        return out.reshape(members, features, batch)


def _hidden_block(stack: MemberStack, blocks: Sequence[HiddenBlock], maps: bool) -> Layer:
    """transform (batched) -> norm and activation per run of one kind -> pool -> dropout."""
    transforms = [block.transform for block in blocks]
    conv = isinstance(transforms[0], nn.Conv2d)
    if conv != maps or not all(
        type(t) in (nn.Linear, DropConnectLinear, nn.Conv2d) for t in transforms
    ):
        raise NotStackable("hidden blocks must be linear (mlp) or conv (cnn) in every member")
    count = len(blocks)
    if len({b.norm_before_act for b in blocks}) == 1:
        # norms in runs of one norm kind, activations in runs of one activation kind
        norms, acts = [b.norm for b in blocks], [b.act for b in blocks]
        norm = _norm_runs(norms, maps)
        act = _per_run(
            [(s, e, acts[s]) for s, e in _runs_by([_kind(a) for a in acts])], maps, count
        )
        norm_and_act = _norm_and_act(norm, act, blocks[0].norm_before_act)
    else:
        runs = []
        for start, end in _runs_by([_block_kind(b) for b in blocks]):
            part = blocks[start:end]
            norm = _stacked_norm([b.norm for b in part], maps)
            runs.append((start, end, _norm_and_act(norm, part[0].act, part[0].norm_before_act)))
        norm_and_act = _per_run(runs, maps, count)
    pool = blocks[0].pool
    dropouts = [b.dropout for b in blocks]
    randomness = stack.randomness
    transform = _batched_conv(transforms) if conv else _batched_linear(transforms, randomness)

    def block(x: torch.Tensor, shared: bool) -> torch.Tensor:
        x = pool(norm_and_act(transform(x)))
        return _dropout(dropouts, x, maps, randomness)

    return block


def _block_kind(block: HiddenBlock) -> tuple:
    """A hidden block's norm, activation and placement: what one batched call needs shared."""
    return _kind(block.norm), _kind(block.act), block.norm_before_act


def _norm_and_act(norm, act: nn.Module, norm_first: bool) -> Callable[[torch.Tensor], torch.Tensor]:
    if norm_first:
        return lambda x: act(norm(x))
    return lambda x: norm(act(x))


def _dropout(dropouts, x: torch.Tensor, maps: bool, randomness: MemberRandomness) -> torch.Tensor:
    """Each member's dropout, drawn from its own stream exactly as its solo run's nn.Dropout."""
    active = [
        index
        for index, d in enumerate(dropouts)
        if isinstance(d, nn.Dropout) and d.training and d.p > 0
    ]
    if not active:
        return x
    parts = list(x.chunk(len(dropouts), 1) if maps else x.unbind(0))
    for index in active:
        part, p = parts[index], dropouts[index].p
        # the noise nn.Dropout draws on CPU for the solo run's (B, ...) activations, in its
        # element order: empty_like(input).bernoulli_(1 - p), divided by 1 - p
        shape = part.shape if maps else part.t().shape
        with randomness.member(index, x.device):
            noise = torch.empty(shape, dtype=part.dtype, device=part.device).bernoulli_(1 - p)
        noise.div_(1 - p)
        parts[index] = part * (noise if maps else noise.t())
    return torch.cat(parts, 1) if maps else torch.stack(parts)
