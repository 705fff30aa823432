"""docs/extending.md, "A new norm, activation or regularizer", followed to the letter: the
module and the three YAML files are the doc's own code blocks, written out as a user would;
each new option trains solo and as members of a stack, each member equal to its solo run, and
the doc's two commands run as written (plus a test budget). If the doc and the code disagree,
these tests fail."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from normlab.config.precheck import with_user_config_dir
from normlab.paths import REPO_DIR
from normlab.pipeline import train, train_members
from normlab.stack.plan import solo_reason

SECTION = "## A new norm, activation or regularizer"
# every step logged, so each member's loss curve is compared step by step
BUDGET = [
    "data=synthetic",
    "trainer=debug",
    "trainer.max_steps=30",
    "trainer.log_every_n_steps=1",
    "trainer.val_check_interval=15",
    "threads=1",
]
RELATIVE = 1e-5  # stacked members against their solo runs, at every step (as test_stacked)


def doc_section() -> str:
    text = (REPO_DIR / "docs" / "extending.md").read_text()
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    return text[start : end if end >= 0 else len(text)]


def code_blocks(kind: str) -> list[str]:
    return re.findall(rf"```{kind}\n(.*?)```", doc_section(), flags=re.S)


@pytest.fixture(scope="module")
def user_files(tmp_path_factory) -> Path:
    """The doc's module and YAML files, each written to the path its first line names, in a
    folder of the user's; the folder is importable, as the doc asks."""
    folder = tmp_path_factory.mktemp("user")
    written = []
    for block in code_blocks("python") + code_blocks("yaml"):
        first = block.splitlines()[0]
        assert first.startswith("# "), f"a doc block without its file name: {first}"
        path = folder / first[2:].split()[0]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(block)
        written.append(path.relative_to(folder).as_posix())
    assert sorted(written) == [
        "myconf/activation/swish.yaml",
        "myconf/norm/rms.yaml",
        "myconf/regularizer/max_norm.yaml",
        "mypackage/extensions.py",
    ]
    sys.path.insert(0, str(folder))
    yield folder
    sys.path.remove(str(folder))
    for name in [m for m in sys.modules if m.split(".")[0] == "mypackage"]:
        del sys.modules[name]


@pytest.mark.parametrize(
    "addition",
    [
        ["norm=rms"],
        ["norm=rms", "model=cnn", "data=digits", "model.width=4", "norm.eps=1e-5"],
        ["activation=swish", "activation.beta=2.0"],
        ["regularizer=[max_norm]", "regularizer.extra.max_norm.value=0.5"],
    ],
    ids=["norm", "norm-2d", "activation", "regularizer"],
)
def test_each_addition_trains_solo_and_as_members_of_a_stack(
    user_files, compose_cfg, tmp_path, addition
):
    search = with_user_config_dir(addition, str(user_files / "myconf"))
    cfgs = [
        compose_cfg(*BUDGET, *search, f"seed={seed}", f"optimizer.lr={lr}")
        for seed, lr in ((0, 0.1), (1, 0.3))
    ]
    for cfg in cfgs:  # the stacked launcher would stack them
        assert solo_reason(cfg, tmp_path / "nowhere") is None
    members = [tmp_path / f"member{i}" for i in range(2)]
    results = train_members(cfgs, members, tmp_path / "stack")
    assert [r["status"] for r in results] == ["completed", "completed"]
    for i, cfg in enumerate(cfgs):
        solo = train(cfg, tmp_path / f"solo{i}")
        assert solo["status"] == "completed"
        expected, got = losses(tmp_path / f"solo{i}"), losses(members[i])
        assert len(got) == len(expected) == 30
        for step, (a, b) in enumerate(zip(expected, got, strict=True)):
            assert abs(a - b) <= RELATIVE * abs(a), f"step {step}: solo {a}, stacked {b}"
    written = OmegaConf.load(members[0] / "config.yaml")  # the run folder names the option
    for group, name in {"norm": "rms", "activation": "swish"}.items():
        if f"{group}={name}" in addition:
            assert written[group]["name"] == name


def test_the_max_norm_constraint_holds_after_every_step(user_files, compose_cfg, tmp_path):
    """The regularizer acts: every unit's incoming weights end within the limit (the first
    layer's rows grow past it without the constraint at this learning rate)."""
    import pytorch_lightning as pl
    import torch

    class FinalWeights(pl.Callback):
        def on_train_end(self, trainer, pl_module):
            leaves = [pl_module.model.leaf(name) for name in pl_module.weight_names]
            self.norms = torch.cat([w.detach().flatten(2).norm(dim=2).flatten() for w in leaves])

    def row_norms(cfg, run_dir: Path) -> torch.Tensor:
        final = FinalWeights()
        train_members([cfg], [run_dir], run_dir, extra_callbacks=[final])  # M = 1: a solo run
        return final.norms

    limit = 0.5
    free = compose_cfg(*BUDGET, "optimizer.lr=1.0")
    constrained = compose_cfg(
        *BUDGET,
        "optimizer.lr=1.0",
        *with_user_config_dir(
            ["regularizer=[max_norm]", f"regularizer.extra.max_norm.value={limit}"],
            str(user_files / "myconf"),
        ),
    )
    assert row_norms(free, tmp_path / "free").max() > limit
    assert row_norms(constrained, tmp_path / "constrained").max() <= limit * (1 + 1e-5)


def test_a_settings_key_the_schema_lacks_is_refused_in_one_line(user_files, compose_cfg):
    from normlab.config.errors import ConfigError
    from normlab.config.validate import validate

    search = with_user_config_dir(["norm=rms", "+norm.epsilon=1e-5"], str(user_files / "myconf"))
    with pytest.raises(ConfigError, match=r"norm\.epsilon: no such key; norm takes: .*\beps\b"):
        validate(compose_cfg(*BUDGET, *search))


def test_the_docs_commands_run_as_written(user_files, tmp_path, cli_env):
    commands = [
        shlex.split(line)
        for block in code_blocks("bash")
        for line in block.splitlines()
        if line.startswith("normlab-train")
    ]
    assert len(commands) == 2
    env = dict(cli_env, PYTHONPATH=os.pathsep.join([cli_env["PYTHONPATH"], str(user_files)]))
    for command in commands:
        # a test budget; one launcher process, so that the two cells make one stack
        budget = [*BUDGET[:3], *(["hydra.launcher.n_jobs=1"] if "-m" in command else [])]
        done = subprocess.run(
            [sys.executable, "-m", "normlab.train", *command[1:], *budget],
            cwd=user_files,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        if "-m" in command:
            assert "stack of 2" in done.stdout + done.stderr, done.stdout + done.stderr
    results = sorted(tmp_path.rglob("result.json"))
    assert [json.loads(r.read_text())["status"] for r in results] == ["completed"] * 3


def losses(run_dir: Path) -> list[float]:
    import csv

    with (run_dir / "metrics.csv").open() as handle:
        return [float(row["train/loss"]) for row in csv.DictReader(handle) if row["train/loss"]]
