"""Config composition: every option composes, mistakes fail early with the key's name."""

import itertools
import shutil
import subprocess
import sys

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from conftest import TINY
from helpers import INVALID, OUTSIDE_THE_PRECHECK, options
from normlab.config.errors import ConfigError
from normlab.config.precheck import compose_checked, first_cell
from normlab.config.validate import validate
from normlab.models.build import build_model
from normlab.paths import CONFIG_DIR, REPO_DIR


def test_every_group_has_the_documented_options():
    assert options("norm") == ["batch", "group", "group4", "layer", "noisy_batch", "none"]
    assert options("activation") == [
        "elu",
        "gelu",
        "identity",
        "leaky_relu",
        "relu",
        "sigmoid",
        "tanh",
    ]
    assert set(options("init")) >= {
        "default",
        "zeros",
        "constant",
        "normal",
        "uniform",
        "xavier_uniform",
        "xavier_normal",
        "lecun_normal",
        "he_uniform",
        "he_normal",
        "orthogonal",
    }
    assert set(options("optimizer")) >= {"sgd", "momentum", "nesterov", "rmsprop", "adam", "adamw"}
    assert set(options("scheduler")) >= {
        "none",
        "inverse_time",
        "exponential",
        "inverse_sqrt",
        "step",
        "cosine",
    }
    assert set(options("data")) == {
        "fashion_mnist",
        "mnist",
        "cifar10",
        "cifar100",
        "digits",
        "mnist1d",
        "synthetic",
        "custom",
    }


def test_every_norm_activation_init_combination_composes_and_builds():
    """Hydra composes each norm x activation pair and each init once; a combination is the
    pair's config with the init's node put in, which equals Hydra's own composition of the
    three overrides (checked on a spread of combinations): composing all ~400 combinations
    would take minutes."""
    norms, activations, inits = options("norm"), options("activation"), options("init")
    combos = list(itertools.product(norms, activations, inits))
    assert len(combos) >= 4 * 7 * 11
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        pairs = {
            (norm, activation): compose(
                "train", overrides=[f"norm={norm}", f"activation={activation}"]
            )
            for norm, activation in itertools.product(norms, activations)
        }
        init_nodes = {init: compose("train", overrides=[f"init={init}"]).init for init in inits}
        for index, (norm, activation, init) in enumerate(combos):
            cfg = pairs[norm, activation].copy()
            cfg.init = init_nodes[init]
            if index % 37 == 0:  # ~11 combinations, every norm and every init among them
                composed = compose(
                    "train", overrides=[f"norm={norm}", f"activation={activation}", f"init={init}"]
                )
                assert OmegaConf.to_container(cfg) == OmegaConf.to_container(composed)
            validate(cfg)
            # group4 is group norm with 4 groups: its name is the option it extends
            assert (cfg.norm.name, cfg.activation.name) == (norm.rstrip("4"), activation)
            model = build_model(cfg, (1, 28, 28), 10)
            assert sum(p.numel() for p in model.parameters()) > 0


def test_seed_zero_is_a_seed(compose_cfg):
    from normlab.utils.seeding import run_seeds

    zero, one = run_seeds(compose_cfg("seed=0")), run_seeds(compose_cfg("seed=1"))
    assert zero != one and zero.init != zero.data
    assert run_seeds(compose_cfg("seed=5", "seed_init=0")).init == 0


# the table's lines that the precheck decides alone (no Hydra flags, Hydra keys or folders)
IN_PROCESS = [
    (args, key)
    for args, key in INVALID
    if not any(arg.startswith(OUTSIDE_THE_PRECHECK) for arg in args)
]


@pytest.mark.parametrize(("override", "key"), IN_PROCESS, ids=[" ".join(a) for a, _ in IN_PROCESS])
def test_invalid_config_fails_naming_the_key(override, key):
    with pytest.raises(ConfigError) as caught:
        compose_checked(str(CONFIG_DIR), "train", override)
    message = str(caught.value)
    assert key in message and "\n" not in message


def test_multirun_is_checked_on_its_first_cell():
    assert first_cell(["seed=0,1,2", "norm=batch,none", "hydra/launcher=basic", "+x=1"]) == [
        "seed=0",
        "norm=batch",
        "+x=1",
    ]
    with pytest.raises(ConfigError, match=r"norm\.num_groups"):
        compose_checked(str(CONFIG_DIR), "train", ["norm=group", "norm.num_groups=7,10"])


def test_new_optimizer_is_one_yaml_file(tmp_path, run_training):
    config_dir = tmp_path / "conf"
    shutil.copytree(CONFIG_DIR, config_dir)
    (config_dir / "optimizer" / "adagrad.yaml").write_text(
        "_target_: torch.optim.Adagrad\n_partial_: true\nlr: 0.05\n"
    )
    result, run_dir = run_training(*TINY, "optimizer=adagrad", config_dir=config_dir)
    assert result["status"] == "completed"
    assert "torch.optim.Adagrad" in (run_dir / "config.yaml").read_text()


def test_missing_fashion_mnist_says_how_to_get_it(run_training, tmp_path):
    from normlab.data.errors import DataError

    with pytest.raises(DataError, match="make data"):
        run_training("trainer=debug", f"data.root={tmp_path / 'empty'}")


@pytest.mark.parametrize(
    ("document", "row_start"),
    [("README.md", "| `{group}` |"), ("docs/configuration.md", "| {group} |")],
)
def test_the_option_tables_match_conf(document, row_start):
    text = (REPO_DIR / document).read_text()
    for group in (
        "data",
        "model",
        "norm",
        "activation",
        "init",
        "optimizer",
        "scheduler",
        "regularizer",
        "trainer",
        "logger",
        "callbacks",
    ):
        start = row_start.format(group=group)
        row = next((line for line in text.splitlines() if line.startswith(start)), None)
        assert row is not None, f"{document} lacks a table row for {group}"
        listed = {cell.strip(" `") for cell in row.split("|")[3].split(",")}
        assert listed == set(options(group)), (document, group)


def test_a_key_added_after_composition_is_refused_before_training(compose_cfg):
    """What reaches training without the command line's precheck (a sweeper's parameters, a
    config edited in code) is checked too: a closed node keeps its keys."""
    cfg = compose_cfg(*TINY, "norm=group")
    OmegaConf.update(cfg, "norm.num_group", 5, force_add=True)  # what Hydra's + does
    with pytest.raises(ConfigError, match=r"^norm\.num_group: no such key; did you mean"):
        validate(cfg)
    # each norm option has its own schema: batch norm has no groups
    cfg = compose_cfg(*TINY, "norm=batch")
    OmegaConf.update(cfg, "norm.num_groups", 5, force_add=True)
    with pytest.raises(ConfigError, match=r"^norm\.num_groups: no such key; norm takes: name"):
        validate(cfg)
    cfg = compose_cfg(*TINY, "+model.dropout_rate=0.1", "model=custom", "model._target_=x.Net")
    assert "dropout_rate" in cfg.model  # model is open: its keys are the network's arguments


needs_no_gpu = pytest.mark.skipif(
    __import__("torch").cuda.is_available(), reason="this machine has a GPU"
)


@needs_no_gpu
@pytest.mark.parametrize(
    "overrides",
    [["trainer=gpu"], ["trainer=ddp"], ["experiment=bn_sigmoid_vs_relu", "trainer=gpu"]],
)
def test_an_explicit_gpu_request_without_a_gpu_fails_in_one_line(overrides, tmp_path):
    where = f"paths.output_dir={tmp_path}"
    for multirun in (False, True):
        with pytest.raises(ConfigError) as caught:
            compose_checked(str(CONFIG_DIR), "train", [*overrides, where], multirun=multirun)
        assert str(caught.value).startswith("trainer.accelerator=gpu: no usable GPU here (torch ")


@needs_no_gpu
def test_a_sweep_submitted_to_slurm_is_not_checked_for_this_machines_gpus(tmp_path):
    where = f"paths.output_dir={tmp_path}"
    for launcher in ("slurm", "stacked_slurm"):
        overrides = [f"hydra/launcher={launcher}", "trainer=gpu", where]
        compose_checked(str(CONFIG_DIR), "train", overrides, multirun=True)


def test_presets_take_a_gpu_where_there_is_one_and_keep_an_explicit_trainer(compose_cfg):
    preset = "experiment=bn_sigmoid_vs_relu"
    assert compose_cfg(preset).trainer.accelerator == "auto"
    assert compose_cfg(preset, "trainer=gpu").trainer.accelerator == "gpu"
    assert compose_cfg(preset, "trainer=cpu").trainer.accelerator == "cpu"


def test_importing_the_config_checks_loads_no_torch():
    # the CLI's precheck and a sweep's parent import these before anything heavy
    code = (
        "import sys, normlab.config.precheck, normlab.config.validate, normlab.config.schema; "
        "print('torch' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.strip() == "False", done.stderr
