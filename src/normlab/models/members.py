"""MemberNetworks: M networks of one structure, trained as one module with a leading member axis.

A run trains M members (a solo run: M = 1). Their parameters live in one flat `[M, P]` tensor,
their gradients in another of the same shape, so that the optimizer, clipping and weight decay
(normlab.lit.optimizers) act on every member at once, in a number of ops that does not grow with
M. Each parameter name of the members' structure (`layer1.transform.weight`) is a registered
leaf `[M, *shape]` whose data and gradient are views of those two tensors: the batched forward
(normlab.models.member_layers) reads it, autograd accumulates into it in place, checkpoints save
it. Buffers (batch-norm running statistics) are stacked the same way, one `[M, *shape]` tensor
per name.

Each member also keeps the ordinary network its solo run would build, whose parameters, gradients
and buffers are views of its row: instruments, probes and results read a normal nn.Module, and
what they read is what trains.

Members of a mixed stack may lack a parameter the others have (a linear layer before batch norm
drops its bias): its row is zero, and `present` masks the gradients that land there.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import nn

from normlab.models.member_layers import NotStackable, batched_forward, single_forward
from normlab.models.member_randomness import MemberRandomness

# A leaf's gradient is a strided view of the flat gradient on purpose (one optimizer update for
# all leaves); autograd accumulates into it in place and warns once that it is not contiguous.
warnings.filterwarnings("ignore", message=".*gradient layout contract.*")


class _Slot:
    """Where one parameter name lives in the flat storage: columns [start, end) of each row."""

    def __init__(self, name: str, shape: torch.Size, start: int):
        self.name, self.shape = name, tuple(shape)
        self.start, self.end = start, start + math.prod(shape)


def _union(named: Sequence[Iterator[tuple[str, torch.Tensor]]], what: str) -> dict[str, tuple]:
    """Every name any member has, in the members' order, with its shape (which must agree)."""
    shapes: dict[str, tuple] = {}
    for items in named:
        for name, tensor in items:
            if shapes.setdefault(name, tuple(tensor.shape)) != tuple(tensor.shape):
                raise NotStackable(f"members differ in the shape of {what} {name}")
    return shapes


def _container(root: nn.Module, dotted: str) -> tuple[nn.Module, str]:
    """The module holding `dotted` under `root` (created on the way), and the last name."""
    *path, leaf = dotted.split(".")
    module = root
    for part in path:
        if part not in module._modules:
            module.add_module(part, nn.Module())
        module = module._modules[part]
    return module, leaf


def _owner(network: nn.Module, dotted: str) -> tuple[nn.Module, str]:
    *path, leaf = dotted.split(".")
    module = network
    for part in path:
        module = getattr(module, part)
    return module, leaf


class MemberNetworks(nn.Module):
    """M networks of one structure; `forward` maps `[M, B, ...]` inputs (or one `[B, ...]` batch
    shared by all, `shared=True`) to `[M, B, classes]` logits."""

    def __init__(self, networks: Sequence[nn.Module], randomness: MemberRandomness | None = None):
        super().__init__()
        if not networks:
            raise ValueError("MemberNetworks needs at least one network")
        count = len(networks)
        # plain attributes: the members are views of the stacked tensors, not modules to register
        self.networks: list[nn.Module] = list(networks)
        self.randomness = randomness or MemberRandomness([0] * count)
        self.count = count
        shapes = _union([n.named_parameters() for n in networks], "parameter")
        self.slots: dict[str, _Slot] = {}
        start = 0
        for name, shape in shapes.items():
            self.slots[name] = _Slot(name, shape, start)
            start = self.slots[name].end
        reference = next(networks[0].parameters())
        flat = reference.new_zeros(count, start)
        present = torch.zeros(count, start, dtype=torch.bool)
        with torch.no_grad():
            for member, network in enumerate(networks):
                own = dict(network.named_parameters())
                for slot in self.slots.values():
                    if slot.name in own:
                        flat[member, slot.start : slot.end] = own[slot.name].flatten()
                        present[member, slot.start : slot.end] = True
        self.flat, self.flat_grad = flat, torch.zeros_like(flat)
        # None when every member has every parameter (the usual case: nothing to mask)
        self.present: torch.Tensor | None = None if bool(present.all()) else present.to(flat.dtype)
        self.stacked = nn.Module()  # the registered leaves, by the members' own names
        for slot in self.slots.values():
            owner, leaf = _container(self.stacked, slot.name)
            owner.register_parameter(leaf, nn.Parameter(self._rows(flat, slot)))
        buffer_shapes = _union([n.named_buffers() for n in networks], "buffer")
        for name in buffer_shapes:
            rows = []
            for network in networks:
                own = dict(network.named_buffers()).get(name)
                rows.append(own.detach().clone() if own is not None else None)
            like = next(r for r in rows if r is not None)
            stacked = torch.stack([r if r is not None else torch.zeros_like(like) for r in rows])
            owner, leaf = _container(self.stacked, name)
            owner.register_buffer(leaf, stacked)
        self._bind()
        self.sync_batch_norm = False  # set by normlab.lit.ddp.BatchNormSync under DDP
        try:
            self._forward: Callable = batched_forward(self)
            self.batched = True
        except NotStackable as reason:
            if count > 1:
                raise
            self.not_batched_because = str(reason)
            self._forward = single_forward(self)
            self.batched = False

    def __len__(self) -> int:
        return self.count

    # --- storage ---

    @staticmethod
    def _rows(flat: torch.Tensor, slot: _Slot) -> torch.Tensor:
        return flat[:, slot.start : slot.end].view(flat.shape[0], *slot.shape)

    def leaf(self, name: str) -> nn.Parameter:
        """The stacked `[M, *shape]` parameter of `name` (e.g. `layer1.transform.weight`)."""
        owner, leaf = _owner(self.stacked, name)
        return owner._parameters[leaf]

    def has_leaf(self, name: str) -> bool:
        """Whether any member has the parameter `name`."""
        return name in self.slots

    def stacked_buffer(self, name: str) -> torch.Tensor:
        """The stacked `[M, *shape]` buffer of `name` (e.g. `layer1.norm.running_mean`)."""
        owner, leaf = _owner(self.stacked, name)
        return owner._buffers[leaf]

    def stacked_buffers(self) -> Iterator[tuple[str, torch.Tensor]]:
        """Every stacked buffer with its member-side name."""
        yield from self.stacked.named_buffers()

    def _bind(self) -> None:
        """Point every leaf, every member parameter and buffer (and their gradients) at the
        stacked storage: after construction and whenever the storage was replaced."""
        flat, grad = self.flat, self.flat_grad
        for slot in self.slots.values():
            leaf = self.leaf(slot.name)
            leaf.data = self._rows(flat, slot)
            leaf.grad = self._rows(grad, slot)
        for network, row, row_grad in zip(self.networks, flat, grad, strict=True):
            for name, parameter in network.named_parameters():
                slot = self.slots[name]
                parameter.data = row[slot.start : slot.end].view(slot.shape)
                parameter.grad = row_grad[slot.start : slot.end].view(slot.shape)
        for name, stacked in self.stacked_buffers():
            for member, network in enumerate(self.networks):
                owner, leaf = _owner(network, name)
                if leaf in owner._buffers and owner._buffers[leaf] is not None:
                    owner._buffers[leaf] = stacked[member]

    def bound(self) -> bool:
        """Whether the leaves' gradients are still views of the flat gradient (something that
        set them to None, e.g. a module-wide `zero_grad`, unbinds them)."""
        slot = next(iter(self.slots.values()))
        grad = self.leaf(slot.name).grad
        return grad is not None and grad.data_ptr() == (
            self.flat_grad.data_ptr() + slot.start * self.flat_grad.element_size()
        )

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Zero the gradients in place (they stay views of the flat gradient)."""
        self.flat_grad.zero_()
        if not self.bound():
            self._bind()

    def _apply(self, fn, recurse: bool = True):
        # .to(device), .double(), ...: convert the storage, then re-make the views
        self.flat = fn(self.flat)
        self.flat_grad = fn(self.flat_grad)
        if self.present is not None:
            self.present = fn(self.present)
        for name, stacked in list(self.stacked_buffers()):
            owner, leaf = _owner(self.stacked, name)
            owner._buffers[leaf] = fn(stacked)
        self._bind()
        return self

    def train(self, mode: bool = True):
        super().train(mode)
        for network in self.networks:
            network.train(mode)
        return self

    def member_state(self, member: int) -> dict[str, torch.Tensor]:
        """Member `member`'s parameters and buffers under its network's own names (views)."""
        network = self.networks[member]
        return {**dict(network.named_parameters()), **dict(network.named_buffers())}

    def row_arguments(self, member: int) -> dict[str, torch.Tensor]:
        """Member `member`'s parameters as rows of the leaves (autograd reaches the leaves) and
        its buffers as views: for `torch.func.functional_call` on its network."""
        network = self.networks[member]
        rows = {name: self.leaf(name)[member] for name, _ in network.named_parameters()}
        buffers = {name: self.stacked_buffer(name)[member] for name, _ in network.named_buffers()}
        return {**rows, **buffers}

    def apply_to_networks(self, convert: Callable[[nn.Module], nn.Module]) -> None:
        """Replace every member network by `convert(network)` (a conversion that keeps the
        parameter and buffer objects, e.g. to synchronized batch norm)."""
        self.networks = [convert(network) for network in self.networks]
        self._bind()

    # --- forward ---

    def compile_forward(self) -> None:
        """torch.compile the forward (compile=true)."""
        self._forward = torch.compile(self._forward)

    def forward(self, x: torch.Tensor, shared: bool = False) -> torch.Tensor:
        """Logits of every member: x is `[M, B, ...]`, or `[B, ...]` for all when `shared`."""
        if self.networks[0].training != self.training:
            # Lightning restores modes module by module after an evaluation: the members (not
            # registered modules) follow this module's mode here
            self.train(self.training)
        return self._forward(x, shared)
