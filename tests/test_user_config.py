"""A user's own config folder (`--config-dir` or `hydra.searchpath`) adds options to normlab's
groups without copying conf/: the example of docs/configuration.md, "Your own config folder"."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from normlab.config.errors import ConfigError
from normlab.config.precheck import compose_checked
from normlab.paths import CONFIG_DIR

# one new option per group, as a user would write it (docs/configuration.md shows this folder)
USER_OPTIONS = {
    "data/my_digits.yaml": "name: digits\nbatch_size: 30\nval_size: 200\ntest_size: 300\n",
    "model/wide_mlp.yaml": "_target_: normlab.models.mlp.MLP\ndepth: 2\nwidth: 64\n",
    "optimizer/adagrad.yaml": "_target_: torch.optim.Adagrad\n_partial_: true\nlr: 0.05\n",
    "scheduler/halve_every_10.yaml": (
        "schedule:\n  _target_: torch.optim.lr_scheduler.StepLR\n  _partial_: true\n"
        "  step_size: 10\n  gamma: 0.5\ninterval: step\n"
    ),
    "init/small_normal.yaml": (
        "weight:\n  _target_: torch.nn.init.normal_\n  _partial_: true\n  std: 0.05\nbias: null\n"
    ),
    "experiment/my_quick.yaml": (
        "# @package _global_\n"
        "defaults:\n"
        "  - override /data: my_digits\n"
        "  - override /model: wide_mlp\n"
        "  - override /optimizer: adagrad\n"
        "  - override /scheduler: halve_every_10\n"
        "  - override /init: small_normal\n"
        "name: my_quick\n"
        "trainer:\n  max_steps: 20\n  val_check_interval: 10\n"
    ),
}


@pytest.fixture
def user_conf(tmp_path) -> Path:
    """A config folder outside the repository holding USER_OPTIONS."""
    folder = tmp_path / "myconf"
    for relative, text in USER_OPTIONS.items():
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        (folder / relative).write_text(text)
    return folder


@pytest.mark.parametrize("option", sorted(USER_OPTIONS), ids=lambda o: o.split(".")[0])
def test_a_user_folder_adds_an_option_to_any_group(option, user_conf):
    group, name = option.removesuffix(".yaml").split("/")
    assert not (CONFIG_DIR / option).exists()  # a new option, not one of normlab's
    cfg = compose_checked(
        str(CONFIG_DIR), "train", [f"{group}={name}"], user_config_dir=str(user_conf)
    )
    if group == "experiment":
        assert cfg.name == "my_quick" and cfg.model.width == 64 and cfg.data.batch_size == 30
    else:
        assert cfg[group] is not None


def test_a_user_folder_that_does_not_exist_fails_in_one_line(tmp_path):
    with pytest.raises(ConfigError, match=r"^--config-dir .*nowhere: no such folder; [^\n]*$"):
        compose_checked(
            str(CONFIG_DIR), "train", ["data=digits"], user_config_dir=str(tmp_path / "nowhere")
        )


def test_an_unknown_option_lists_the_user_folders_options_too(user_conf):
    with pytest.raises(ConfigError, match=r"'data/my_digit'; available: .*, my_digits, "):
        compose_checked(str(CONFIG_DIR), "train", ["data=my_digit"], user_config_dir=str(user_conf))


@pytest.mark.parametrize("how", ["--config-dir", "hydra.searchpath"])
def test_the_command_line_trains_a_user_experiment(how, user_conf, train_cli, tmp_path):
    where = (
        ["--config-dir", str(user_conf)]
        if how == "--config-dir"
        else [f"hydra.searchpath=[file://{user_conf}]"]
    )
    done = train_cli(*where, "experiment=my_quick")  # main() parses the flag as from a shell
    assert done.returncode == 0, done.stderr
    [run_dir] = (tmp_path / "outputs" / "runs").iterdir()
    assert json.loads((run_dir / "result.json").read_text())["steps"] == 20
    config = (run_dir / "config.yaml").read_text()
    assert "torch.optim.Adagrad" in config and "width: 64" in config
