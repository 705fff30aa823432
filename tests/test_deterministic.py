"""trainer.deterministic=true with the instruments: the sort-based order statistics and
histogram (the way off the CPU, where kthvalue and histc have no deterministic kernels) give the
fast path's numbers."""

import csv

import pytest
import torch

from conftest import TINY
from normlab.callbacks import activation_stats, probe
from normlab.callbacks.activation_stats import histc_by_sort, percentiles, sorting_needed


@pytest.fixture
def deterministic_algorithms():
    """torch.use_deterministic_algorithms(True) for one test (it is process-wide)."""
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    yield
    torch.use_deterministic_algorithms(before)


def samples() -> list[torch.Tensor]:
    """Wide and narrow ranges, ties, a constant tensor, values on bin edges, odd sizes."""
    generator = torch.Generator().manual_seed(0)
    edges = torch.linspace(-1.5, 2.0, probe.HISTOGRAM_BINS + 1)
    return [
        torch.randn(500, 100, generator=generator),
        torch.randn(7, 3, 5, 5, generator=generator) * 1e-4 + 3.0,
        torch.randint(-20, 20, (1001,), generator=generator).float() / 3,
        torch.full((40,), 0.25),
        torch.cat([edges, edges.nextafter(edges + 1), edges.nextafter(edges - 1)]),
        torch.rand(1, generator=generator),
    ]


def test_sorting_is_needed_only_off_the_cpu_in_deterministic_mode(deterministic_algorithms):
    assert not sorting_needed(torch.zeros(3))
    assert sorting_needed(torch.zeros(3, device="meta"))
    torch.use_deterministic_algorithms(False)
    assert not sorting_needed(torch.zeros(3, device="meta"))


@pytest.mark.parametrize("index", range(len(samples())))
def test_sorted_percentiles_equal_the_fast_ones(index, deterministic_algorithms):
    values = samples()[index]
    qs = (0, 15, 50, 85, 99.9, 100)
    assert torch.equal(
        percentiles(values, qs, by_sort=True), percentiles(values, qs, by_sort=False)
    )


@pytest.mark.parametrize("index", range(len(samples())))
def test_sorted_histogram_equals_histc(index, deterministic_algorithms):
    values = samples()[index]
    sorted_counts, sorted_edges = probe.histogram(values, by_sort=True)
    fast_counts, fast_edges = probe.histogram(values, by_sort=False)
    assert torch.equal(sorted_counts, fast_counts) and torch.equal(sorted_edges, fast_edges)
    assert sorted_counts.sum() == values.numel()


def test_sorted_histogram_leaves_out_values_outside_the_range_like_histc():
    values = torch.tensor([-3.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0, float("nan")])
    assert torch.equal(histc_by_sort(values, 4, -1.0, 1.0), torch.histc(values[:-1], 4, -1, 1))


def metrics_rows(run_dir) -> list[dict[str, str]]:
    with (run_dir / "metrics.csv").open() as handle:
        return [row for row in csv.DictReader(handle) if row.get("act/layer1/p50")]


def test_deterministic_run_with_instruments_logs_the_fast_paths_numbers(
    run_training, tmp_path, monkeypatch
):
    """A tiny deterministic run with the instruments works; forcing the sorted paths (as a GPU
    would take them; W&B on, so the histograms are drawn too) logs the very same statistics."""
    overrides = (*TINY, "trainer.deterministic=true", "callbacks=instruments")
    modes_seen = []

    def sorting_forced(values: torch.Tensor) -> bool:
        modes_seen.append(torch.are_deterministic_algorithms_enabled())
        return True

    before = torch.are_deterministic_algorithms_enabled()
    try:
        result, fast_dir = run_training(*overrides, run_dir=tmp_path / "fast")
        assert result["status"] == "completed"
        monkeypatch.setattr(activation_stats, "sorting_needed", sorting_forced)
        monkeypatch.setattr(probe, "sorting_needed", sorting_forced)
        result, sorted_dir = run_training(*overrides, "logger=wandb", run_dir=tmp_path / "sorted")
        assert result["status"] == "completed"
    finally:
        torch.use_deterministic_algorithms(before)
    assert modes_seen and all(modes_seen)  # the probe ran under deterministic algorithms
    fast, by_sort = metrics_rows(fast_dir), metrics_rows(sorted_dir)
    assert fast and len(fast) == len(by_sort)
    for fast_row, sorted_row in zip(fast, by_sort, strict=True):
        for key in fast_row:
            if key.startswith("act/") and "/p" in key:
                assert fast_row[key] == sorted_row[key], key
