"""`python -m normlab.results`: docs/results.md and the README's results tables come from the
latest finished sweep of each experiment, with when and where it ran."""

from __future__ import annotations

import json
from pathlib import Path

from normlab.results import main
from test_report import BATCH_ACC, BATCH_CURVES, NONE_CURVE, completed, write_cell, write_multirun

NONE_ACC = {0: 0.80, 1: 0.84, 2: 0.82}


def finished_sweep(root: Path, name: str, started: str, shift: float = 0.0) -> Path:
    """seed=0,1,2 x norm=batch,none, every cell completed, started at `started`."""
    sweep = root / "multirun" / "ablation" / name
    sweep.mkdir(parents=True)
    write_multirun(sweep, ["seed=0,1,2", "norm=batch,none"])
    for seed in range(3):
        for offset, (norm, acc, curve) in enumerate(
            [("batch", BATCH_ACC[seed], BATCH_CURVES[seed]), ("none", NONE_ACC[seed], NONE_CURVE)]
        ):
            cell = write_cell(sweep, 2 * seed + offset, seed, norm, completed(acc + shift), curve)
            provenance = {
                "started": started,
                "git_commit": "0123456789abcdef",
                "git_dirty": False,
                "cpu_kernels": "AVX512",
                "device": "cpu (2 threads)",
                "packages": {"torch": "2.13.0"},
            }
            (cell / "provenance.json").write_text(json.dumps(provenance))
    return sweep


def test_the_page_and_the_readme_block_show_the_latest_finished_sweep(tmp_path, capsys):
    finished_sweep(tmp_path, "old", "2026-12-01T10:00:00+0000", shift=-0.5)
    finished_sweep(tmp_path, "new", "2026-12-05T09:30:00+0000")
    unfinished = finished_sweep(tmp_path, "newest", "2026-12-06T08:00:00+0000", shift=-0.4)
    (unfinished / "5" / "result.json").write_text(json.dumps({"status": "failed", "error": "x"}))
    readme = tmp_path / "README.md"
    readme.write_text(
        "intro\n<!-- results:ablation -->\nold table\n<!-- /results -->\n"
        "<!-- results:bn_cnn -->\nkept\n<!-- /results -->\nend\n"
    )
    page = tmp_path / "docs" / "results.md"
    page.parent.mkdir()
    main([str(tmp_path / "multirun"), "--page", str(page), "--readme", str(readme)])
    text = page.read_text()
    # the 2026-12-05 sweep: finished 10 s after it started (each cell's wall time)
    line = "`normlab-train -m experiment=ablation`: 6 cells, 10 s, finished 2026-12-05 09:30"
    assert f"{line} UTC" in text
    assert "commit 0123456789, torch 2.13.0, cpu_kernels AVX512, cpu (2 threads)" in text
    batch_mean = sum(BATCH_ACC.values()) / 3
    assert f"| {batch_mean:.4f} |" in text  # the new sweep's numbers, not the old one's
    figures = sorted((page.parent / "results").glob("ablation_*.png"))
    assert figures and all(f"results/{f.name}" in text for f in figures)
    updated = readme.read_text()
    assert "old table" not in updated and f"| {batch_mean:.4f} |" in updated
    assert "<!-- results:bn_cnn -->\nkept\n<!-- /results -->" in updated
    assert "no finished sweep of bn_cnn" in capsys.readouterr().out
