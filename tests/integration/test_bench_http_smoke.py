"""The HTTP face's benchmark harness still runs (its smallest configuration). Nothing
here is timed or compared with a target: it keeps bench/http from rotting."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(120)
def test_the_http_bench_runs_and_measures_something(tmp_path: Path) -> None:
    figures_path = tmp_path / "figures.json"
    completed = subprocess.run(
        [sys.executable, "-m", "bench.http", "--smoke", "--json", figures_path],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "services at 20 Hz with a store" in completed.stdout
    figures = json.loads(figures_path.read_text())
    baseline, loaded, baseline_workers, loaded_workers = figures["checks"]
    assert baseline["scheduled"] > 0
    assert "load" not in baseline
    assert loaded["load"]["cluster_status"]["n"] > 0
    assert loaded["load"]["errors"] == {}
    # With check workers, the slots are counted from the workers' own logs.
    assert baseline_workers["check_workers"] == loaded_workers["check_workers"] == 2
    assert baseline_workers["started"] > 0
    assert baseline_workers["workers_cpu_share"] > 0
    assert loaded_workers["load"]["errors"] == {}
    fleet = figures["fleet"]
    assert fleet["transitions_committed"] > 0
    assert fleet["sse"]["n"] > 0
    assert fleet["errors"] == []  # no client of the fleet part failed
    assert fleet["probes"]["/api/v1/cluster/status"]["n"] > 0


@pytest.mark.timeout(60)
def test_the_render_bench_runs(tmp_path: Path) -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "bench.http.render", "--services", "20", "--rounds", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "MetricsPage.render (now), none changed" in completed.stdout
    assert "/metrics page:" in completed.stdout
