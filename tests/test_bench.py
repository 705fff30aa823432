"""`python -m normlab.bench` on a tiny budget: every case and sweep runs and is reported.

No timing assertions: the figures depend on the machine. The thread policy is checked where it
matters, inside the parallel launcher's joblib workers (read back from provenance.json).
"""

import json
import os
import subprocess
import sys

import pytest

from normlab.bench.cases import LABELS, STACKED, STACKED_MEMORY
from normlab.bench.summary import summarize_cases
from normlab.utils.threads import available_cores


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    """One tiny benchmark run: (stdout, the JSON report)."""
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "normlab.bench",
            "--steps",
            "20",
            "--repeats",
            "1",
            "--sweep-steps",
            "5",
            "--sweep-seeds",
            "1",
            # the two studies at a token size: every table and target, not their measurements
            "--scaling-budget",
            "2000",
            "--scaling-repeats",
            "1",
            "--grid-seeds",
            "2",
            "--grid-steps",
            "20",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
        # without the suite's one-thread setting, so the policy itself decides every job's threads
        env={key: value for key, value in os.environ.items() if key != "OMP_NUM_THREADS"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout, json.loads(out.read_text())


@pytest.mark.slow  # a real (tiny) benchmark with a 12-cell sweep: ~80 s
def test_bench_prints_one_row_per_case_and_per_sweep(bench):
    stdout, _ = bench
    assert "| case | steps/s (median) |" in stdout
    assert "| sweep | cells x steps |" in stdout
    assert "| target | measured | bound | met |" in stdout
    for label in LABELS.values():
        assert f"| {label} |" in stdout


@pytest.mark.slow  # a real (tiny) benchmark with a 12-cell sweep: ~80 s
def test_bench_json_holds_every_run_and_the_machine(bench):
    _, report = bench
    assert {"cpu", "cores", "torch", "load_average"} <= set(report["machine"])
    # stacked cases count member-steps; the 48-member stack trains max(100, steps / 10) steps
    member_steps = {"stacked": 20 * STACKED, "stacked48": 100 * STACKED_MEMORY}
    assert sorted(run["steps"] for run in report["runs"]) == sorted(
        member_steps.get(case, 20) for case in LABELS
    )
    rows = {row["case"]: row for row in report["cases"]}
    assert set(rows) == set(LABELS)
    assert rows["raw"]["ratio_to_raw"] == 1.0
    for row in rows.values():
        assert row["steps_per_s"] > 0 and row["startup_s"] > 0 and row["peak_rss_mib"] > 0
        assert row["loop_peak_rss_mib"] > 0
        one_thread = row["case"] in ("solo_1t", "raw_1t", "stacked", "stacked48")
        # a lone run gets every core; the 1-thread cases and each stack process one
        assert row["torch_threads"] == (1 if one_thread else available_cores())
    assert rows["normlab"]["service_peak_rss_mib"] > 0  # the W&B service process
    # eight for the cases and sweeps, one each for the member-scaling and grid studies
    assert len(report["targets"]) == 10 and all("met" in check for check in report["targets"])
    targets = [check["target"] for check in report["targets"]]
    assert any(t.startswith("member scaling") for t in targets)
    assert any(t.startswith("8-cell grid") for t in targets)  # 2 seeds x 4 learning rates


@pytest.mark.slow  # a real (tiny) benchmark with a 12-cell sweep: ~80 s
def test_parallel_sweep_jobs_share_the_cores(bench):
    _, report = bench
    serial, parallel, stacked = report["sweeps"]
    assert serial["cells"] == parallel["cells"] == stacked["cells"] == 4
    assert serial["threads"] == str(available_cores())
    assert parallel["threads"] == str(max(1, available_cores() // 2))  # n_jobs=2
    assert stacked["threads"] == "1"  # a stack per core


def test_ratio_pairs_repetitions_and_spread_spans_them():
    def run(case, repeat, seconds):
        return {
            "case": case,
            "repeat": repeat,
            "steps": 100,
            "loop_s": seconds,
            "loop_cpu_s": seconds,
            "startup_s": 1.0,
            "peak_rss_kib": 1024,
            "loop_peak_rss_kib": 1024,
            "loop_start_rss_kib": 1024,
            "service_peak_rss_kib": 0,
            "val_acc": None,
        }

    # repetition 1 ran on a busier machine: both cases slowed down alike
    runs = [run("raw", 0, 1.0), run("b", 0, 2.0), run("raw", 1, 2.0), run("b", 1, 4.0)]
    rows = {row["case"]: row for row in summarize_cases(runs)}
    assert rows["b"]["ratio_to_raw"] == pytest.approx(0.5)
    assert rows["b"]["steps_per_s_min"] == 25 and rows["b"]["steps_per_s_max"] == 50
    assert rows["b"]["spread_pct"] == pytest.approx(100 * 25 / 37.5)
