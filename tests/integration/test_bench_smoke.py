"""The benchmark harness still runs: its smallest configuration, a few seconds.

Not a performance test (nothing here is timed or compared with a target): it keeps
bench/ from rotting as the library changes under it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(60)
def test_smallest_capacity_run_commits_everything_and_prints_its_table(tmp_path: Path) -> None:
    figures_path = tmp_path / "figures.json"
    completed = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--only", "capacity", "--json", figures_path],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=45,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "## Capacity at 20 Hz" in completed.stdout
    assert "## Targets (issue 4)" in completed.stdout

    run = json.loads(figures_path.read_text())["capacity"]["runs"]["5"]
    assert run["checks"] > 0
    assert run["committed_results"] > 0
    assert run["dropped_results"] == 0
    assert run["all_committed"] is True  # every completed check is a row in the file
    assert run["storage"]["rows"] == run["committed_results"]
    assert run["lateness"]["scheduled"] > 0
    assert run["lateness"]["started"] > 0


@pytest.mark.timeout(90)
def test_the_status_page_bench_runs_on_a_small_fleet(tmp_path: Path) -> None:
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.page",
            "--services",
            "3",
            "--repeat",
            "2",
            "--keep",
            tmp_path / "fleet.db",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=80,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "service page's 90-day data" in completed.stdout
    assert "Page weight" in completed.stdout


@pytest.mark.timeout(90)
def test_the_store_write_bench_and_the_scenario_table_still_run(tmp_path: Path) -> None:
    writes = tmp_path / "writes.json"
    completed = subprocess.run(
        [
            *(sys.executable, "-m", "bench.writes", "--only", "100x1", "--window", "1"),
            *("--prefill", "2", "--variants", "healthmon", "--json", writes),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=40,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    (row,) = json.loads(writes.read_text())
    assert row["page_size"] == 512
    assert row["results"] > 0
    assert row["written_per_result"] is not None

    scenarios = tmp_path / "scenarios.json"
    completed = subprocess.run(
        [
            *(sys.executable, "-m", "bench.scenarios", "--only", "100x1", "--window", "2"),
            *("--warmup", "2", "--prefill", "2", "--no-bare", "--json", scenarios),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=40,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "| scenario | kept |" in completed.stdout
    run = json.loads(scenarios.read_text())["100x1"]["healthmon"]
    assert run["results"] > 0
    assert run["cpu_per_check_us"] is not None
