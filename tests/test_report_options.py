"""The ablation report's options and layout: --metric, --band, PDFs beside the PNGs, short
configuration labels with a table of the full overrides, no sections for instruments a sweep
did not turn on."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats

from normlab.analysis.report import build_report
from normlab.analysis.tables import band
from normlab.report import main

STEPS = [100, 200, 300, 400]  # steps done; metrics.csv holds the 0-based index
LRS = ("0.00022310905607443037", "0.1")


def write_cell(
    sweep: Path,
    number: int,
    overrides: list[str],
    test_acc: float,
    losses: list[float],
    instruments: bool = False,
) -> Path:
    """One completed cell as a normlab run writes it: val/acc and train/loss at four steps."""
    cell = sweep / str(number)
    (cell / ".hydra").mkdir(parents=True)
    (cell / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    values = dict(override.split("=", 1) for override in overrides)
    config = {
        "seed": int(values["seed"]),
        "norm": {"name": values.get("norm", "batch")},
        "optimizer": {"lr": float(values.get("optimizer.lr", 0.1))},
        # an instruments config as callbacks=instruments writes it, else off (null)
        "callbacks": {"instruments": {"every_n_steps": 100} if instruments else None},
    }
    (cell / "config.yaml").write_text(yaml.safe_dump(config))
    result = {"status": "completed", "test/acc": test_acc, "val/acc_best": test_acc + 0.01}
    (cell / "result.json").write_text(json.dumps(result))
    rows = []
    for step, loss in zip(STEPS, losses, strict=True):
        rows.append({"epoch": 0, "step": step - 1, "train/loss": loss})
        rows.append({"epoch": 0, "step": step - 1, "val/acc": 1 - loss})
    pd.DataFrame(rows).to_csv(cell / "metrics.csv", index=False)
    return cell


def write_multirun(sweep: Path, task: list[str]) -> None:
    """The part of Hydra's multirun.yaml the report reads."""
    sweeper = {"_target_": "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"}
    overrides = {"hydra": [], "task": task}
    (sweep / "multirun.yaml").write_text(
        yaml.safe_dump({"hydra": {"sweeper": sweeper, "overrides": overrides}})
    )


# per (lr, norm): three seeds' final test accuracies and train/loss curves
ACCURACIES = {
    (LRS[0], "batch"): [0.70, 0.72, 0.77],
    (LRS[0], "none"): [0.60, 0.61, 0.65],
    (LRS[1], "batch"): [0.90, 0.91, 0.95],
    (LRS[1], "none"): [0.85, 0.80, 0.86],
}


def losses(acc: float, seed: int) -> list[float]:
    return [1.0 - acc / 2, 1.0 - acc / 1.5, 1.0 - acc + 0.01 * seed, 1.0 - acc]


@pytest.fixture
def sweep(tmp_path) -> Path:
    """optimizer.lr x norm x seed=0,1,2, every cell completed."""
    root = tmp_path / "multirun" / "lr_norm" / "sweep-1"
    root.mkdir(parents=True)
    write_multirun(root, [f"optimizer.lr={','.join(LRS)}", "norm=batch,none", "seed=0,1,2"])
    number = 0
    for (lr, norm), accuracies in ACCURACIES.items():
        for seed, acc in enumerate(accuracies):
            overrides = [f"optimizer.lr={lr}", f"norm={norm}", f"seed={seed}"]
            write_cell(root, number, overrides, acc, losses(acc, seed))
            number += 1
    return root


def test_configurations_get_short_labels_and_a_table_of_full_overrides(sweep):
    report = build_report(sweep)
    labels = list(report.summary["configuration"])
    assert labels == ["lr=0.0002231, batch", "lr=0.0002231, none", "lr=0.1, batch", "lr=0.1, none"]
    markdown = (report.out_dir / "report.md").read_text()
    table = markdown.split("## Configurations")[1].split("\n## ")[0]
    assert f"| lr=0.0002231, batch | optimizer.lr={LRS[0]}, norm=batch | 3 | 0 |" in table
    assert "optimizer.lr=0.00022310905607443037" not in markdown.split("## Configurations")[0]


def test_labels_that_would_merge_two_configurations_stay_full(tmp_path):
    write_multirun(tmp_path, ["optimizer.lr=0.10001,0.100012", "seed=0"])
    for number, lr in enumerate(("0.10001", "0.100012")):
        write_cell(tmp_path, number, [f"optimizer.lr={lr}", "seed=0"], 0.9, losses(0.9, 0))
    labels = list(build_report(tmp_path).summary["configuration"])
    assert labels == ["optimizer.lr=0.10001", "optimizer.lr=0.100012"]  # both are lr=0.1


def test_metric_option_aggregates_the_last_logged_value_of_any_metric(sweep):
    report = build_report(sweep, metric="train/loss")
    row = report.summary.set_index("configuration").loc["lr=0.1, none"]
    last = np.array([losses(acc, seed)[-1] for seed, acc in enumerate(ACCURACIES[LRS[1], "none"])])
    assert row["train_loss_mean"] == pytest.approx(last.mean())
    assert row["train_loss_std"] == pytest.approx(last.std(ddof=1))
    markdown = (report.out_dir / "report.md").read_text()
    assert "## Final `train/loss`" in markdown and "train/loss mean" in markdown
    # a metric logged at several steps also gets its figure against steps
    assert report.figures["metric"] == report.out_dir / "curve_train_loss.png"
    assert "![`train/loss` against steps](curve_train_loss.png)" in markdown


def test_metric_option_reads_result_json_first(sweep):
    summary = build_report(sweep, metric="val/acc_best").summary.set_index("configuration")
    expected = np.mean(ACCURACIES[LRS[1], "batch"]) + 0.01
    assert summary.loc["lr=0.1, batch", "val_acc_best_mean"] == pytest.approx(expected)


def test_a_metric_no_cell_logged_is_one_line_and_exit_2(sweep, capsys):
    assert main([str(sweep), "--metric", "train/los"]) == 2
    error = capsys.readouterr().err.strip()
    assert error == (
        "normlab.report: --metric train/los: no completed cell logged it; did you mean train/loss?"
    )
    assert not (sweep / "report").exists()


def test_ci95_band_is_the_student_t_interval_of_the_mean_and_minmax_the_extremes():
    table = pd.DataFrame({"a": [0.1, 0.5], "b": [0.3, 0.6], "c": [0.8, np.nan]}, index=[10, 20])
    low, high = band(table, "ci95")
    values = np.array([0.1, 0.3, 0.8])
    half = stats.t.ppf(0.975, 2) * values.std(ddof=1) / np.sqrt(3)
    assert low[10] == pytest.approx(values.mean() - half)
    assert high[10] == pytest.approx(values.mean() + half)
    two = np.array([0.5, 0.6])  # a seed that logged nothing at step 20 leaves 2
    assert high[20] - low[20] == pytest.approx(2 * stats.t.ppf(0.975, 1) * two.std(ddof=1) / 2**0.5)
    low, high = band(table, "minmax")
    assert (low[10], high[10], low[20], high[20]) == (0.1, 0.8, 0.5, 0.6)


def test_band_choice_sets_the_tables_interval_column(sweep):
    markdown = (build_report(sweep, band="minmax").out_dir / "report.md").read_text()
    final = markdown.split("## Final `test/acc`")[1].split("\n## ")[0]
    assert "| min-max |" in final and "95% CI" not in final
    assert "| [0.9000, 0.9500] |" in final  # lr=0.1, batch: seeds 0.90, 0.91, 0.95
    assert "a mean over seeds: min-max." in markdown
    markdown = (build_report(sweep).out_dir / "report.md").read_text()  # the default: ci95
    assert "| 95% CI |" in markdown and "over seeds: 95% CI of the mean." in markdown


def test_every_figure_is_also_a_pdf(sweep):
    report = build_report(sweep)
    drawn = [path for path in report.figures.values() if path is not None]
    assert {path.name for path in drawn} == {"val_acc.png", "lr_range.png"}
    for path in drawn:
        assert path.read_bytes()[:4] == b"\x89PNG"
        assert path.with_suffix(".pdf").read_bytes()[:5] == b"%PDF-"


def test_no_section_for_instruments_a_sweep_did_not_turn_on(sweep):
    markdown = (build_report(sweep).out_dir / "report.md").read_text()
    assert "Skipped" not in markdown and "Not drawn" not in markdown
    for absent in ("Gradient norm", "percentiles", "covariate shift", "landscape"):
        assert absent not in markdown


def test_instruments_turned_on_without_their_columns_are_noted(tmp_path):
    write_multirun(tmp_path, ["seed=0"])
    write_cell(tmp_path, 0, ["seed=0"], 0.9, losses(0.9, 0), instruments=True)
    report = build_report(tmp_path)
    markdown = (report.out_dir / "report.md").read_text()
    assert markdown.count("Not drawn: the instruments were on, yet no `") == 2
    assert "covariate shift" not in markdown  # the landscape probes were off


def test_a_long_legend_of_configurations_stays_inside_the_figure():
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from normlab.analysis.figure_files import configuration_legend

    figure = Figure(figsize=(6.4, 4.4), layout="constrained")
    axis = figure.subplots()
    for index in range(12):
        axis.plot([0, 1], [index, index + 1], label=f"relu, group, lr=0.00{index}1, momentum=0.9")
    configuration_legend(figure, axis)
    renderer = FigureCanvasAgg(figure).get_renderer()
    figure.draw(renderer)
    [legend] = figure.legends
    inside = figure.bbox.padded(1)
    assert inside.contains(*legend.get_window_extent(renderer).p0)
    assert inside.contains(*legend.get_window_extent(renderer).p1)
    assert not axis.get_window_extent(renderer).overlaps(legend.get_window_extent(renderer))
