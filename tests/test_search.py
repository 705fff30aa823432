"""Hyperparameter search: the Optuna presets run real trials through the CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml
from hydra import compose, initialize_config_dir

from normlab.config.errors import ConfigError
from normlab.config.validate import validate
from normlab.paths import CONFIG_DIR


def test_four_trial_search_completes_and_scores_failed_trials_zero(cli_env, tmp_path):
    # data.batch_size=5000 exceeds the synthetic training set: those trials fail (DataError)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "normlab.train",
            "-m",
            "hparams_search=sgd_tpe",
            "hydra.sweeper.n_trials=4",
            "data=synthetic",
            "trainer=debug",
            "data.batch_size=choice(32,5000)",
        ],
        capture_output=True,
        text=True,
        env=cli_env,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    [sweep] = (tmp_path / "outputs" / "multirun" / "default").iterdir()
    results = [json.loads(path.read_text()) for path in sweep.glob("*/result.json")]
    assert len(results) == 4
    statuses = sorted(result["status"] for result in results)
    assert "completed" in statuses and "failed" in statuses, statuses
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    completed = [r["val/acc_best"] for r in results if r["status"] == "completed"]
    assert best["best_value"] == pytest.approx(max(completed))
    assert set(best["best_params"]) == {
        "optimizer.lr",
        "search.one_minus_momentum",
        "regularizer.weight_decay.value",
        "data.batch_size",
    }


@pytest.mark.parametrize(
    ("preset", "sampler"), [("sgd_tpe", "TPESampler"), ("sgd_random", "RandomSampler")]
)
def test_search_presets_sample_log_scale_spaces(preset, sampler):
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[f"hparams_search={preset}", "search.one_minus_momentum=0.01"],
            return_hydra_config=True,
        )
    sweeper = cfg.hydra.sweeper
    assert sweeper.sampler._target_.endswith(sampler) and sweeper.direction == "maximize"
    assert sweeper.params["optimizer.lr"] == "tag(log, interval(1e-4, 1))"
    assert sweeper.params["search.one_minus_momentum"] == "tag(log, interval(1e-3, 1e-1))"
    assert sweeper.params["regularizer.weight_decay.value"].startswith("tag(log,")
    assert cfg.optimizer.momentum == pytest.approx(0.99)  # momentum = 1 - the searched gap


def test_searched_momentum_is_checked_like_any_momentum(compose_cfg):
    with pytest.raises(ConfigError, match=r"optimizer\.momentum"):
        validate(compose_cfg("hparams_search=sgd_tpe", "search.one_minus_momentum=2"))
