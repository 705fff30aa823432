"""model=vgg: VGG-16's layout on CIFAR-sized images, its norms from the factory, members of a
stack that train as their solo runs, and one-line errors for a layout it cannot build."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from torch import nn

from normlab.config.errors import ConfigError
from normlab.models.build import build_model
from normlab.models.vgg import VGG
from normlab.pipeline import train, train_members

SMALL = ["data=digits", "model=vgg", "model.width=4", "model.convs_per_stage=[1,2]"]


def test_vgg16_turns_a_cifar_image_into_one_pixel_of_512_channels(compose_cfg):
    network = build_model(compose_cfg("model=vgg", "norm=batch"), (3, 32, 32), 10)
    modules = list(network.modules())
    convs = [m for m in modules if isinstance(m, nn.Conv2d)]
    norms = [m for m in modules if isinstance(m, nn.BatchNorm2d)]
    assert len(convs) == 13 and len([m for m in modules if isinstance(m, nn.MaxPool2d)]) == 5
    assert [n.num_features for n in norms] == VGG.norm_widths()
    assert network.head.in_features == 512 and network.head.out_features == 10


def test_vgg_pools_only_while_the_map_is_at_least_two_pixels(compose_cfg):
    network = build_model(compose_cfg("model=vgg", "model.width=4"), (1, 8, 8), 10)
    pools = [m for m in network.modules() if isinstance(m, nn.MaxPool2d)]
    assert len(pools) == 3 and network.head.in_features == 32  # 8x8 -> 1x1, 8 x width


@pytest.mark.parametrize("layout", ["[]", "[2,0]", "[1,1,1,1,1,1]"])
def test_a_layout_vgg_cannot_build_fails_in_one_line(layout, compose_cfg):
    with pytest.raises(ConfigError, match=r"model\.convs_per_stage=.*VGG-16\)$"):
        build_model(compose_cfg("model=vgg", f"model.convs_per_stage={layout}"), (3, 32, 32), 10)


def step_losses(run_dir: Path) -> list[float]:
    with (run_dir / "metrics.csv").open() as handle:
        return [float(row["train/loss"]) for row in csv.DictReader(handle) if row["train/loss"]]


def test_vgg_members_of_a_stack_train_as_their_solo_runs(compose_cfg, tmp_path):
    every_step = ["trainer=debug", "trainer.log_every_n_steps=1", "threads=1"]
    cfgs = [
        compose_cfg(*SMALL, *every_step, "norm=batch", "optimizer.lr=0.1", "seed=0"),
        compose_cfg(*SMALL, *every_step, "norm=none", "optimizer.lr=0.5", "seed=1"),
    ]
    members = [tmp_path / "member0", tmp_path / "member1"]
    results = train_members(cfgs, members, tmp_path / "stack")
    assert [r["status"] for r in results] == ["completed"] * 2
    for cfg, member, solo in zip(cfgs, members, ("solo0", "solo1"), strict=True):
        train(cfg, tmp_path / solo)
        expected, got = step_losses(tmp_path / solo), step_losses(member)
        assert len(got) == len(expected) == 20
        for a, b in zip(expected, got, strict=True):
            assert abs(a - b) <= 1e-5 * abs(a)
