"""The terminal charts and the fleet summary: how much of each bucket was down."""

from __future__ import annotations

from pathlib import Path

import pytest

from healthmon.cli.demo import invocation, shown_path
from healthmon.model import HealthStatus
from healthmon.render import STATUS_LEGEND, render_fleet, render_report, status_mark, status_strip
from healthmon.store import Incident, LatencyStats, ServiceReport, StatusCounts, WindowStats

T0 = 1_700_000_000.0


def counts(
    healthy: int = 0, unknown: int = 0, degraded: int = 0, unhealthy: int = 0
) -> StatusCounts:
    return StatusCounts(healthy=healthy, unknown=unknown, degraded=degraded, unhealthy=unhealthy)


def bucket(i: int, c: StatusCounts, p95: float | None = None) -> WindowStats:
    latency = LatencyStats(count=c.total, p95=p95) if p95 is not None else LatencyStats()
    return WindowStats(T0 + 60 * i, T0 + 60 * (i + 1), c, latency)


@pytest.mark.parametrize(
    ("c", "mark"),
    [
        (counts(), " "),  # no results
        (counts(healthy=60), "_"),
        (counts(healthy=30, degraded=30), "~"),
        (counts(healthy=59, unknown=1), "?"),
        (counts(unhealthy=60), "X"),
        (counts(healthy=30, unhealthy=30), "5"),  # up half the time: no longer a solid X
        (counts(healthy=99, unhealthy=1), "1"),  # any failure shows
        (counts(healthy=1, unhealthy=99), "9"),  # not all: never X
        (counts(healthy=7, unhealthy=3), "3"),  # exact tenths stay exact (no float 3.0000004)
        (counts(healthy=6, unhealthy=4), "4"),
        (counts(healthy=59, unhealthy=41), "5"),  # rounded up
        (counts(degraded=50, unhealthy=50), "5"),  # unhealthy first; degraded counts as up
        (counts(unknown=5, unhealthy=5), "X"),  # a share of the known results, as uptime
    ],
)
def test_a_bucket_says_how_much_of_it_was_down(c: StatusCounts, mark: str) -> None:
    assert status_mark(c) == mark


def test_a_flapping_service_is_no_longer_a_solid_row_of_x() -> None:
    half = [bucket(i, counts(healthy=30, unhealthy=30)) for i in range(4)]
    assert status_strip(half) == "5555"
    outage = [
        bucket(0, counts(healthy=60)),
        bucket(1, counts(healthy=45, unhealthy=15)),
        bucket(2, counts(unhealthy=60)),
        bucket(3, counts()),
        bucket(4, counts(healthy=60, degraded=1)),
    ]
    assert status_strip(outage) == "_3X ~"
    for glyph in "_~?X":
        assert glyph in STATUS_LEGEND
    assert "1-9 tenths unhealthy" in STATUS_LEGEND


def report(
    name: str, c: StatusCounts, incidents: int = 0, p95: float | None = 2.0
) -> ServiceReport:
    spans = tuple(
        Incident(name, T0 + 10 * i, T0 + 10 * i + 4, HealthStatus.UNHEALTHY, 4.0, 8, False)
        for i in range(incidents)
    )
    latency = LatencyStats(count=c.total, p95=p95) if p95 is not None else LatencyStats()
    return ServiceReport(name, T0, T0 + 240, c, latency, spans, (), None, None)


def test_the_report_charts_the_share_and_keeps_the_legend() -> None:
    buckets = [bucket(i, counts(healthy=30, unhealthy=30), p95=1.0) for i in range(4)]
    text = render_report(
        report("checkout", counts(healthy=120, unhealthy=120), incidents=5),
        buckets,
        bucket=60,
        ascii=True,
        max_incidents=2,
    )
    lines = text.splitlines()
    status = next(line for line in lines if line.lstrip().startswith("status"))
    assert status == f"  status     |5555|  {STATUS_LEGEND}"
    assert "uptime     50.000 % (healthy 50.000 %) of 240 checks: 120 healthy" in lines[1]
    assert "    ... 3 earlier ones not shown" in lines
    assert len(lines) == 9  # header, uptime, latency, incidents (1 + 3), p95, status


def test_the_fleet_summary_is_a_line_per_service() -> None:
    fleet = [
        (report("api", counts(healthy=240)), [bucket(i, counts(healthy=60)) for i in range(4)]),
        (
            report("checkout", counts(healthy=120, unhealthy=120), incidents=19),
            [bucket(i, counts(healthy=30, unhealthy=30)) for i in range(4)],
        ),
        (report("idle", counts(), p95=None), [bucket(i, counts()) for i in range(4)]),
    ]
    header, api, checkout, idle = render_fleet(fleet, bucket=60)
    assert header.split() == [
        "SERVICE",
        "UPTIME",
        "HEALTHY",
        "CHECKS",
        "P95",
        "MS",
        "INCIDENTS",
        "STATUS",
        "(4",
        "x",
        "1m00s)",
    ]
    assert api.split() == ["api", "100.000", "%", "100.000", "%", "240", "2.0", "0", "|____|"]
    assert checkout.split() == [
        "checkout",
        "50.000",
        "%",
        "50.000",
        "%",
        "240",
        "2.0",
        "19,",
        "1m16s",
        "|5555|",
    ]
    assert idle.split() == ["idle", "-", "-", "0", "-", "0", "|", "|"]
    # Columns line up: each row's chart starts where the header's column does.
    column = header.index("STATUS")
    assert {api.index("|"), checkout.index("|"), idle.index("|")} == {column}


def test_the_demo_s_hints_name_the_healthmon_that_runs_from_here(tmp_path: Path) -> None:
    venv = tmp_path / "repo" / ".venv" / "bin"
    venv.mkdir(parents=True)
    script = venv / "healthmon"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    python = str(venv / "python")
    repo = tmp_path / "repo"
    # From the clone's root: the script's path below it.
    assert invocation(str(script), cwd=repo, python=python) == ".venv/bin/healthmon"
    # From elsewhere: its absolute path; a program in cwd itself gets ./ (PATH is not searched).
    assert invocation(str(script), cwd=tmp_path / "elsewhere", python=python) == str(script)
    assert invocation(str(script), cwd=venv, python=python) == "./healthmon"
    # python -m healthmon.cli
    main = "/usr/lib/python3/site-packages/healthmon/cli/__main__.py"
    assert invocation(main, cwd=repo, python=python) == ".venv/bin/python -m healthmon.cli"
    # Paths a shell would split are quoted; databases are shown below cwd without ./
    assert shown_path(Path("my demo.db"), cwd=repo) == "'my demo.db'"
    assert shown_path(Path("healthmon-demo.db"), cwd=repo) == "healthmon-demo.db"
    assert shown_path(Path("/var/tmp/x.db"), cwd=repo) == "/var/tmp/x.db"


def test_the_demo_s_hints_say_healthmon_when_it_is_on_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = tmp_path / "bin" / "healthmon"
    script.parent.mkdir()
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", str(script.parent))
    assert invocation(str(script), cwd=tmp_path, python="python3") == "healthmon"
    other = tmp_path / "other" / "healthmon"
    other.parent.mkdir()
    other.write_text("#!/bin/sh\n")
    other.chmod(0o755)
    # Another healthmon on PATH: name this one, not that one.
    assert invocation(str(other), cwd=tmp_path, python="python3") == "other/healthmon"
