"""Gradient check: back-propagation matches centred finite differences for every norm option,
and a deliberately wrong backward is caught."""

import subprocess
import sys

import pytest
import torch
from torch import nn

from normlab.gradcheck import check_gradients, run_gradcheck

CONFIGS = {
    "batch": ["norm=batch"],
    "batch_after_activation": ["norm=batch", "norm.placement=after_activation"],
    "layer": ["norm=layer"],
    "group": ["norm=group"],
    "none": ["norm=none"],
    "cnn_batch": ["data=digits", "model=cnn", "model.width=4", "model.depth=2", "norm=batch"],
    "dropout_and_dropconnect_off": ["regularizer=[dropout,dropconnect]"],
}


class SquareWithWrongBackward(torch.autograd.Function):
    """x**2 whose backward forgets the factor 2."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        return grad_output * x


class Square(nn.Module):
    def __init__(self, wrong_backward: bool):
        super().__init__()
        self.wrong_backward = wrong_backward

    def forward(self, x):
        return SquareWithWrongBackward.apply(x) if self.wrong_backward else x * x


def small_net(wrong_backward: bool) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 5), Square(wrong_backward), nn.Linear(5, 3)).double()


@pytest.mark.parametrize("name", list(CONFIGS))
def test_gradcheck_passes_for_every_norm_option(compose_cfg, name):
    cfg = compose_cfg("data=synthetic", *CONFIGS[name])
    checks = run_gradcheck(cfg)
    assert len(checks) == len(list(dict.fromkeys(c.name for c in checks)))
    worst = max(check.worst for check in checks)
    assert worst <= cfg.gradcheck.tolerance, checks


def test_gradcheck_fails_for_a_wrong_custom_backward():
    x = torch.randn(8, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    right = check_gradients(small_net(False), x, y, epsilon=1e-5, max_entries=None)
    wrong = check_gradients(small_net(True), x, y, epsilon=1e-5, max_entries=None)
    assert max(check.worst for check in right) < 1e-6
    by_name = {check.name: check.worst for check in wrong}
    assert by_name["0.weight"] > 0.1 and by_name["0.bias"] > 0.1  # below the wrong backward
    assert by_name["2.weight"] < 1e-6  # above it, gradients do not pass through it


def run_command(cli_env, *overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "normlab.gradcheck", "data=synthetic", *overrides],
        capture_output=True,
        text=True,
        env=cli_env,
        timeout=120,
    )


def test_gradcheck_command_prints_a_table_and_exits_zero(cli_env, in_process):
    from normlab.gradcheck import main

    done = in_process(main, "data=synthetic", env=cli_env)  # the failing one below: a process
    assert done.returncode == 0, done.stderr
    assert "layer1.transform.weight" in done.stdout and "gradients match" in done.stdout


def test_gradcheck_command_exits_nonzero_above_the_tolerance(cli_env):
    done = run_command(cli_env, "gradcheck.tolerance=1e-15")
    assert done.returncode == 1, done.stderr
    assert "FAIL" in done.stdout and "GRADIENTS DIFFER" in done.stdout
