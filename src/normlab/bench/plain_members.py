"""The reference for the member-scaling case: a plain-PyTorch vectorized training step of M
MLPs (batch norm, ReLU, momentum SGD, label smoothing, clipping by norm, every member-wise
setting an `[M]` tensor), with no framework around it: what the arithmetic alone allows."""

from __future__ import annotations

import time
from typing import Any

import torch
import torch.nn.functional as F


def _linear(members: int, fan_in: int, fan_out: int, generator: torch.Generator):
    bound = 1 / fan_in**0.5
    weight = (torch.rand(members, fan_out, fan_in, generator=generator) * 2 - 1) * bound
    bias = (torch.rand(members, fan_out, 1, generator=generator) * 2 - 1) * bound
    return weight.requires_grad_(), bias.requires_grad_()


def plain_member_steps(
    x: torch.Tensor,
    y: torch.Tensor,
    members: int,
    widths: tuple[int, ...],
    classes: int,
    *,
    batch_size: int,
    steps: int,
    warmup: int = 0,
    lr: float = 0.05,
    momentum: float = 0.9,
    smoothing: float = 0.1,
    max_norm: float = 1.0,
) -> dict[str, Any]:
    """Train M members of the MLP `x.shape[1]`-`widths`-`classes` for `warmup` + `steps` steps
    on random batches of (x, y); the seconds and member-steps of the last `steps`."""
    generator = torch.Generator().manual_seed(0)
    device = x.device
    layers, fan_in = [], x.shape[1]
    for width in widths:
        weight, _ = _linear(members, fan_in, width, generator)  # no bias before batch norm
        gain = torch.ones(members * width, requires_grad=True)
        shift = torch.zeros(members * width, requires_grad=True)
        layers.append((weight, gain, shift))
        fan_in = width
    head_weight, head_bias = _linear(members, fan_in, classes, generator)
    parameters = [p for layer in layers for p in layer] + [head_weight, head_bias]
    parameters = [p.detach().to(device).requires_grad_() for p in parameters]
    layers = [tuple(parameters[3 * i : 3 * i + 3]) for i in range(len(widths))]
    head_weight, head_bias = parameters[-2:]
    buffers = [torch.zeros_like(p) for p in parameters]
    stats = [
        (torch.zeros(members * w, device=device), torch.ones(members * w, device=device))
        for w in widths
    ]
    # member-wise settings (here all equal, as tensors: the cost of a real member-wise step)
    rates = torch.full((members, 1), lr, device=device)
    momenta = torch.full((members, 1), momentum, device=device)
    smoothings = torch.full((members, 1), smoothing, device=device)
    norms_allowed = torch.full((members, 1), max_norm, device=device)
    total_steps = warmup + steps
    indices = torch.randint(0, len(y), (total_steps, members, batch_size), generator=generator)
    indices = indices.to(device)
    start = time.perf_counter()
    for step in range(total_steps):
        if step == warmup:
            synchronize(device)
            start = time.perf_counter()
        batch = indices[step]
        h = x[batch].transpose(1, 2)  # [M, F, B]
        for (weight, gain, shift), (mean, var) in zip(layers, stats, strict=True):
            h = torch.bmm(weight, h)
            shape = h.shape
            h = F.batch_norm(h.reshape(1, -1, shape[2]), mean, var, gain, shift, True, 0.1, 1e-5)
            h = torch.relu(h.reshape(shape))
        logits = torch.baddbmm(head_bias, head_weight, h).transpose(1, 2).contiguous()
        log_p = F.log_softmax(logits, dim=-1)
        nll = F.nll_loss(log_p.reshape(-1, classes), y[batch].reshape(-1), reduction="none")
        loss = torch.lerp(nll.view(members, -1), -log_p.mean(-1), smoothings).mean(1)
        for p in parameters:
            p.grad = None
        loss.sum().backward()
        with torch.no_grad():
            grads = [p.grad.view(members, -1) for p in parameters]
            squares = torch.stack([grad.pow(2).sum(1) for grad in grads])
            total = squares.sum(0).sqrt().unsqueeze(1)
            clip = (norms_allowed / (total + 1e-6)).clamp(max=1.0)
            for p, grad, buffer in zip(parameters, grads, buffers, strict=True):
                buffer.view(members, -1).mul_(momenta).add_(grad * clip)
                p.view(members, -1).sub_(buffer.view(members, -1) * rates)
    synchronize(device)
    seconds = time.perf_counter() - start
    return {"loop_s": seconds, "member_steps": steps * members}


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU kernels, so a timing holds its own steps' work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
