"""The `healthmon` command end to end, as a user runs it: subprocesses, real config
files, real SQLite files and real local targets."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import shlex
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path

import pytest

from healthmon import HealthCheckResult, HealthStatus, HealthStore, StatusTransition
from healthmon.store.migrate import head_revision
from healthmon.targets import TargetServer

REPO = Path(__file__).resolve().parents[2]
H, U, D = HealthStatus.HEALTHY, HealthStatus.UNHEALTHY, HealthStatus.DEGRADED


def healthmon(
    *args: str | Path, cwd: Path | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    """Run the command as a user would (its output is never a terminal here)."""
    return subprocess.run(
        [sys.executable, "-W", "default", "-m", "healthmon.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env=_env(),
        check=False,
    )


def _env() -> dict[str, str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("HEALTHMON_DATABASE_URL", None)
    return env


def assert_clean(stderr: str) -> None:
    """No warning, no leaked task, no traceback in a subprocess's stderr."""
    for sign in ("Warning", "Task was destroyed", "Traceback", "Exception ignored", "Unclosed"):
        assert sign not in stderr, stderr


def service_toml(name: str, url: str, **extra: object) -> str:
    lines = [
        "[[services]]",
        f"name = {json.dumps(name)}",
        'service_type = "http"',
        f'module_path = "tests.{name}"',
        f"health_check_url = {json.dumps(url)}",
    ]
    lines += [f"{key} = {toml_value(value)}" for key, value in extra.items()]
    return "\n".join(lines) + "\n"


def toml_value(value: object) -> str:
    if isinstance(value, dict):  # an inline table
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    return json.dumps(value)


def rows_per_service(db: Path) -> dict[str, int]:
    with sqlite3.connect(db) as conn:
        found = conn.execute(
            "SELECT service, count(*) FROM results_view GROUP BY service"
        ).fetchall()
    conn.close()
    return dict(found)


def wait_until(condition: object, timeout: float = 10.0) -> None:
    """Poll `condition()` until it holds (a condition, not a blind sleep)."""
    assert callable(condition)
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(0.02)


def write_history(
    db: Path,
    results: Iterable[HealthCheckResult],
    transitions: Iterable[StatusTransition] = (),
) -> None:
    """Store results and transitions through the real write path."""

    async def write() -> None:
        async with HealthStore(db) as store:
            writer = store.writer()
            await writer.start()
            pending = {(t.service_name, t.timestamp): t for t in transitions}
            for result in results:
                writer.submit(result, pending.get((result.service_name, result.timestamp)))
            await writer.stop()

    asyncio.run(write())


def result(name: str, status: HealthStatus, ts: float, ms: float = 5.0) -> HealthCheckResult:
    error = None if status is H else "HTTP 503"
    return HealthCheckResult(name, status, ms, ts, {"status": "ok"} if status is H else None, error)


# -- run ------------------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_run_stops_on_sigterm_with_every_result_flushed(
    targets: TargetServer, tmp_path: Path
) -> None:
    db = tmp_path / "run.db"
    config = tmp_path / "services.toml"
    config.write_text(
        '[store]\ndatabase = "run.db"\n[monitor]\ncheck_interval = 0.05\ntimeout = 1.0\n\n'
        + service_toml("ok", targets.url("/healthy"))
        + service_toml("flappy", targets.url("/flip?period=0.2"))
        + service_toml("stuck", targets.url("/hang"))  # a check always in flight
    )
    process = subprocess.Popen(
        [sys.executable, "-W", "default", "-m", "healthmon.cli", "run", "--config", config],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    try:
        # Until a few results of each answering service and one timeout are stored.
        wait_until(lambda: db.exists() and targets.hits("/healthy") >= 30)
        wait_until(lambda: targets.hits("/hang") >= 2 and rows_per_service(db).get("stuck"))
        # Read while the monitor writes (WAL): the timeout makes the cluster unhealthy.
        live = healthmon("status", "--database", db, "--json")
        assert live.returncode == 5, live.stderr
        assert {s["name"]: s["status"] for s in json.loads(live.stdout)["services"]}["stuck"] == (
            "unhealthy"
        )
        process.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        _, stderr = process.communicate(timeout=10)
        elapsed = time.monotonic() - sent
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()

    assert process.returncode == 0, stderr
    assert elapsed < 2.0
    assert_clean(stderr)
    events = [json.loads(line)["event"] for line in stderr.splitlines()]  # JSON: not a TTY
    assert "monitor_started" in events
    assert events[-2:] == ["monitor_stopping", "monitor_stopped"]
    stored = rows_per_service(db)
    # Every completed check is stored; only the one in flight per service is not.
    for name, path in (("ok", "/healthy"), ("flappy", "/flip"), ("stuck", "/hang")):
        assert targets.hits(path) - 1 <= stored[name] <= targets.hits(path), (name, stored)


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        pytest.param(
            "[monitor]\ncheck_interval = 0.01\n" + service_toml("a", "http://127.0.0.1/"),
            ["[monitor]", "field 'check_interval'", "between 0.05 (20Hz) and 1.0 (1Hz)"],
            id="interval-out-of-range",
        ),
        pytest.param(
            "[monitor]\ncheck_intervall = 0.1\n" + service_toml("a", "http://127.0.0.1/"),
            ["[monitor]", "unknown key 'check_intervall'", "did you mean 'check_interval'"],
            id="unknown-monitor-key",
        ),
        pytest.param(
            service_toml("a", "http://127.0.0.1/", timout=1),
            ["service 'a' ([[services]] #1)", "unknown key 'timout'", "did you mean 'timeout'"],
            id="unknown-service-key",
        ),
        pytest.param(
            service_toml("a", "http://127.0.0.1/", timeout="fast"),
            ["service 'a'", "field 'timeout'", "must be a number, got a string 'fast'"],
            id="wrong-type",
        ),
        pytest.param(
            service_toml("a", "http://127.0.0.1/", interval=2),
            ["service 'a'", "field 'interval'", "between 0.05 (20Hz) and 1.0 (1Hz)"],
            id="service-interval-out-of-range",
        ),
        pytest.param(
            service_toml("a", "http://127.0.0.1/") + service_toml("a", "http://127.0.0.1/x"),
            ["service 'a' ([[services]] #2)", "field 'name'", "already used by [[services]] #1"],
            id="duplicate-name",
        ),
        pytest.param(
            service_toml("a", "ftp://admin:hunter2@example.com/health"),
            ["service 'a'", "field 'health_check_url'", "must use http or https"],
            id="bad-url",
        ),
        pytest.param(
            service_toml("a", "http://127.0.0.1/", headers={"Authorization": 42}),
            ["service 'a'", "field 'headers'", "a table of strings"],
            id="bad-headers",
        ),
        pytest.param(
            '[[services]]\nname = "a"\nservice_type = "http"\n',
            ["service 'a'", "field 'module_path'", "required"],
            id="missing-field",
        ),
        pytest.param(
            "[store.retention]\nraw = 100\nminute = 50\n" + service_toml("a", "http://x/"),
            ["[store.retention]", "field 'raw'", "raw <= minute <= hour"],
            id="retention-out-of-order",
        ),
        pytest.param(
            "[store.retention]\ndays = 7\n" + service_toml("a", "http://x/"),
            [
                "[store.retention]",
                "unknown key 'days'",
                "did you mean 'day'?",  # the day tier's key (migration 0006)
                "known keys: day, hour, minute, raw",
            ],
            id="unknown-retention-key",
        ),
        pytest.param(
            '[log]\nlevel = "loud"\n' + service_toml("a", "http://x/"),
            ["[log]", "field 'level'", "must be one of debug, info, warning, error, critical"],
            id="bad-log-level",
        ),
        pytest.param(
            "[[services]\n",
            ["not valid TOML", "line 1"],
            id="not-toml",
        ),
    ],
)
@pytest.mark.timeout(30)
def test_a_bad_config_is_refused_with_exit_2_naming_the_field(
    tmp_path: Path, config: str, expected: list[str]
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(config)
    done = healthmon("run", "--config", path, "--database", tmp_path / "never.db")
    assert done.returncode == 2
    message = done.stderr.strip()
    assert message.startswith(f"healthmon: config error: {path}: "), message
    for part in expected:
        assert part in message, message
    assert "hunter2" not in message
    assert not (tmp_path / "never.db").exists()  # refused before anything started


def test_the_sample_config_is_valid() -> None:
    from healthmon.config import load_config  # noqa: PLC0415 - the module under test

    config = load_config(REPO / "examples" / "services.toml")
    assert [s.name for s in config.services] == ["api", "search", "db"]
    search = config.services[1]
    assert (search.interval, search.degraded_after_ms, search.start_period) == (0.1, 200, 30)
    assert config.monitor["check_interval"] == 0.5
    assert config.monitor["policy"].failure_threshold == 2
    assert config.store["retention"].raw == 7 * 86400
    assert config.database == str(REPO / "examples" / "healthmon.db")


# -- status ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("statuses", "code", "cluster"),
    [
        ([H, H], 0, "healthy"),
        ([H, D], 4, "degraded"),
        ([D, U], 5, "unhealthy"),
    ],
)
@pytest.mark.timeout(30)
def test_status_exit_code_is_the_cluster_status(
    tmp_path: Path, statuses: list[HealthStatus], code: int, cluster: str
) -> None:
    db = tmp_path / "health.db"
    now = time.time()
    results = []
    transitions = []
    for i, status in enumerate(statuses):
        name = f"svc{i}"
        results += [result(name, H, now - 60 + i), result(name, status, now - 2 + i * 0.1)]
        transitions.append(StatusTransition(name, None, H, now - 60 + i))
        if status is not H:
            transitions.append(StatusTransition(name, H, status, now - 2 + i * 0.1, "HTTP 503"))
    write_history(db, results, transitions)

    done = healthmon("status", "--database", db, "--json")
    assert done.returncode == code, done.stderr
    report = json.loads(done.stdout)
    assert report["cluster_status"] == cluster
    assert report["exit_code"] == code
    by_name = {s["name"]: s for s in report["services"]}
    assert [by_name[f"svc{i}"]["status"] for i in range(len(statuses))] == [
        s.value for s in statuses
    ]
    # "since" comes from the newest transition.
    changed = 1 if statuses[1] is not H else 0
    assert abs(by_name["svc1"]["for_s"] - (60 - 1 if not changed else 2 - 0.1)) < 5
    assert by_name["svc0"]["last_checked_ago_s"] < 30

    text = healthmon("status", "--database", db)
    assert text.returncode == code
    assert text.stdout.startswith(f"cluster: {cluster.upper()}")
    assert "svc1" in text.stdout


@pytest.mark.timeout(30)
def test_status_of_a_stale_a_missing_and_an_old_database(tmp_path: Path) -> None:
    stale = tmp_path / "stale.db"
    long_ago = time.time() - 3600
    write_history(stale, [result("api", H, long_ago)], [StatusTransition("api", None, H, long_ago)])
    done = healthmon("status", "--database", stale)
    assert done.returncode == 6
    assert done.stdout.startswith("cluster: STALE - no service checked for 1h00m")
    assert json.loads(healthmon("status", "--database", stale, "--json").stdout)["stale"]
    # With a longer tolerance the same database is fresh enough.
    assert healthmon("status", "--database", stale, "--stale-after", "2h").returncode == 0

    missing = tmp_path / "missing.db"
    done = healthmon("status", "--database", missing)
    assert done.returncode == 1
    assert f"no database at {missing}" in done.stderr
    assert not missing.exists()  # reading never creates a database

    old = tmp_path / "old.db"
    sqlite3.connect(old).close()  # a database healthmon never upgraded
    done = healthmon("status", "--database", old)
    assert done.returncode == 1
    assert "run `healthmon db upgrade --database" in done.stderr

    empty = tmp_path / "empty.db"
    assert healthmon("db", "upgrade", "--database", empty).returncode == 0
    done = healthmon("status", "--database", empty)
    assert done.returncode == 3  # unknown: nothing checked yet
    assert "no results" in done.stdout


# -- export ---------------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_export_csv_and_jsonl_parse_back_to_what_was_stored(tmp_path: Path) -> None:
    db = tmp_path / "health.db"
    t0 = 1_700_000_000.0
    results = [result("api", H if i % 5 else U, t0 + i * 0.05, ms=i / 7) for i in range(2000)]
    results += [result("db", H, t0 + i * 0.2) for i in range(50)]
    transitions = [
        StatusTransition("api", None if i == 0 else H, U, t0 + i * 0.05, "HTTP 503")
        for i in range(0, 400, 5)
    ]
    write_history(db, results, transitions)

    as_csv = healthmon("export", "api", "--database", db, "--format", "csv")
    assert as_csv.returncode == 0, as_csv.stderr
    rows = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    api = [r for r in results if r.service_name == "api"]
    assert [float(row["ts"]) for row in rows] == [r.timestamp for r in api]
    assert [row["status"] for row in rows] == [r.status.value for r in api]
    assert [float(row["response_time_ms"]) for row in rows] == [r.response_time_ms for r in api]
    assert [row["error"] or None for row in rows] == [r.error for r in api]
    assert [json.loads(row["details"]) if row["details"] else None for row in rows] == [
        r.details for r in api
    ]
    assert "exported 2000 results of service 'api' as csv" in as_csv.stderr

    since = "2023-11-14T22:13:25+00:00"  # t0 + 5 s
    as_jsonl = healthmon("export", "--database", db, "--format", "jsonl", "--since", since)
    assert as_jsonl.returncode == 0, as_jsonl.stderr
    lines = [json.loads(line) for line in as_jsonl.stdout.splitlines()]
    expected = [r for r in results if r.timestamp >= t0 + 5]
    assert len(lines) == len(expected) > 0
    assert {(x["service"], x["ts"]) for x in lines} == {
        (r.service_name, r.timestamp) for r in expected
    }
    assert lines[0]["time"].endswith("Z")
    assert "of 2 services" in as_jsonl.stderr

    changes = healthmon("export", "--database", db, "--transitions", "--format", "jsonl")
    assert changes.returncode == 0
    got = [json.loads(line) for line in changes.stdout.splitlines()]
    assert [(x["ts"], x["from_status"], x["to_status"]) for x in got] == [
        (t.timestamp, t.from_status and t.from_status.value, t.to_status.value) for t in transitions
    ]

    # A reader that goes away early (`| head -1`) is no error, and leaves nothing open.
    reader = subprocess.Popen(
        [sys.executable, "-W", "default", "-m", "healthmon.cli", "export", "--database", db],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    assert reader.stdout is not None
    assert reader.stdout.readline().startswith("service,ts,time,status")
    reader.stdout.close()
    stderr = reader.stderr.read() if reader.stderr else ""
    assert reader.wait(timeout=20) == 0
    assert_clean(stderr)
    assert reader.stderr is not None
    reader.stderr.close()

    bad = healthmon("export", "--database", db, "--since", "yesterday")
    assert bad.returncode == 2
    assert "'yesterday' is neither a duration ago" in bad.stderr


# -- db -------------------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_db_upgrade_current_downgrade_history(tmp_path: Path) -> None:
    db = tmp_path / "fresh.db"
    head = head_revision()
    assert healthmon("db", "current", "--database", db).returncode == 1  # no file: said so
    up = healthmon("db", "upgrade", "--database", db)
    assert up.returncode == 0, up.stderr
    assert up.stdout.strip() == f"{db}: upgraded from base (no healthmon schema) to {head}"
    assert healthmon("db", "current", "--database", db).stdout.strip() == f"{db}: {head} (head)"
    listed = healthmon("db", "history", "--database", db).stdout
    assert f"{head} (head, current)" in listed
    down = healthmon("db", "downgrade", "base", "--database", db)
    assert down.returncode == 0, down.stderr
    assert down.stdout.strip().endswith(f"downgraded from {head} to base (no healthmon schema)")
    nowhere = healthmon("db", "downgrade", "nosuchrev", "--database", db)
    assert nowhere.returncode == 1
    assert "nosuchrev" in nowhere.stderr


@pytest.mark.timeout(120)
def test_db_upgrade_from_an_installed_wheel(tmp_path: Path) -> None:
    """The migrations ship inside the wheel: an installed healthmon, away from the
    checkout, creates and upgrades a database."""
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", wheels, REPO],
        check=True,
        capture_output=True,
        timeout=60,
    )
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", venv], check=True, timeout=60)
    (wheel,) = wheels.glob("healthmon-*.whl")
    subprocess.run(
        [
            venv / "bin" / "python",
            "-m",
            "pip",
            "install",
            "-q",
            "--disable-pip-version-check",
            wheel,
        ],
        check=True,
        capture_output=True,
        timeout=90,
    )
    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    env = _env()
    env.pop("PYTHONPATH", None)

    def installed(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [venv / "bin" / "healthmon", *args],
            cwd=workdir,
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )

    up = installed("db", "upgrade", "--database", "fresh.db")
    assert up.returncode == 0, up.stderr
    # the relative path is resolved once, against the working directory
    assert up.stdout.strip() == (
        f"{workdir / 'fresh.db'}: upgraded from base (no healthmon schema) to {head_revision()}"
    )
    where = subprocess.run(
        [venv / "bin" / "python", "-c", "import healthmon; print(healthmon.__file__)"],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert where.stdout.startswith(str(venv))  # the wheel's copy, not the checkout
    assert installed("status", "--database", "fresh.db").returncode == 3  # readable, empty


# -- history --------------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_history_report_text_and_json(tmp_path: Path) -> None:
    db = tmp_path / "health.db"
    t0 = 1_700_000_000.0  # a whole minute (and hour)
    # 10 minutes at 1 Hz; unhealthy from 120 s to 180 s, then healthy again.
    statuses = [U if 120 <= i < 180 else H for i in range(600)]
    results = [result("api", status, t0 + i, ms=1.0 + i % 10) for i, status in enumerate(statuses)]
    transitions = [
        StatusTransition("api", None, H, t0),
        StatusTransition("api", H, U, t0 + 120, "HTTP 503"),
        StatusTransition("api", U, H, t0 + 180),
    ]
    write_history(db, results, transitions)
    window = ("--since", "2023-11-14T22:13:20Z", "--until", "2023-11-14T22:23:20Z")  # t0, t0+600

    done = healthmon("history", "api", "--database", db, *window, "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert (report["since"], report["until"]) == (t0, t0 + 600)
    assert report["counts"] == {"healthy": 540, "unknown": 0, "degraded": 0, "unhealthy": 60}
    assert report["uptime"] == pytest.approx(540 / 600)
    latency = report["latency"]
    assert (latency["count"], latency["min"], latency["max"]) == (600, 1.0, 10.0)  # 503s answer
    (incident,) = report["incidents"]
    assert (incident["start"], incident["end"], incident["worst_status"]) == (
        t0 + 120,
        t0 + 180,
        "unhealthy",
    )
    assert report["series"]["bucket_s"] == 10.0  # 600 s in at most 60 round buckets
    buckets = report["series"]["buckets"]
    assert sum(b["counts"]["unhealthy"] for b in buckets) == 60
    assert sum(b["counts"]["healthy"] for b in buckets) == 540

    text = healthmon("history", "api", "--database", db, *window)
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert lines[0] == "api: 2023-11-14T22:13:20.000Z to 2023-11-14T22:23:20.000Z (10m00s)"
    assert "uptime     90.000 %" in text.stdout
    assert "incidents  1, 1m00s in all" in text.stdout
    strip = next(line for line in lines if line.lstrip().startswith("status"))
    assert strip.split("|")[1] == "_" * 12 + "X" * 6 + "_" * 42  # 60 buckets of 10 s

    unknown = healthmon("history", "nope", "--database", db)
    assert unknown.returncode == 2
    assert "unknown service 'nope'" in unknown.stderr


# -- demo -----------------------------------------------------------------------------


@pytest.mark.timeout(90)
def test_demo_reports_and_leaves_a_database_that_status_reads(tmp_path: Path) -> None:
    # As a user runs it: the installed command, in a directory of their own.
    command = Path(sys.executable).parent / "healthmon"
    env = {**_env(), "PYTHONWARNINGS": "default"}
    done = subprocess.run(
        [str(command), "demo", "--seconds", "5"],
        capture_output=True,
        text=True,
        timeout=45,
        cwd=tmp_path,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert_clean(done.stderr)
    db = tmp_path / "healthmon-demo.db"
    out = done.stdout
    report = "Over the run" + out.split("\nOver the run", 1)[1]
    # The report fits a 50-line terminal (with the prompt after it), the fleet first.
    assert len(report.splitlines()) < 50, report
    lines = report.splitlines()
    assert lines[1].split()[:3] == ["SERVICE", "UPTIME", "HEALTHY"]
    assert [line.split()[0] for line in lines[2:6]] == ["api", "search", "checkout", "payments"]
    reports = {
        block.split(":", 1)[0]: block
        for block in report.split("\n\n")
        if block.split(":", 1)[0] in ("api", "search", "checkout", "payments")
    }
    assert set(reports) == {"api", "search", "checkout", "payments"}
    assert "incidents  0" in reports["api"]
    assert " 0 degraded" not in reports["search"]  # it crossed its degraded threshold
    assert "incidents  0" not in reports["checkout"]
    assert "incidents  0" not in reports["payments"]
    assert f"Everything is in {db}" in out

    # Every command it prints runs as printed, from where the demo ran.
    hints = [line.strip() for line in report.split("Explore it from here:\n", 1)[1].splitlines()]
    assert len(hints) == 4, hints
    ran = {}
    for hint in hints:
        words = shlex.split(hint, comments=True)
        word = next(w for w in words if w in ("status", "history", "export", "sqlite3"))
        if word == "sqlite3" and shutil.which("sqlite3") is None:
            query = words[2]  # no sqlite3 shell here: the same query
            with sqlite3.connect(db) as conn:
                assert {row[0] for row in conn.execute(query)} == set(reports)
            conn.close()
            continue
        ran[word] = subprocess.run(
            ["bash", "-o", "pipefail", "-c", hint],
            capture_output=True,
            text=True,
            timeout=30,
            cwd=tmp_path,
            env=env,
            check=False,
        )
        assert_clean(ran[word].stderr)
    assert ran["status"].returncode in (0, 4, 5), ran["status"].stderr
    assert ran["status"].stdout.startswith("cluster:")
    assert ran["history"].returncode == 0, ran["history"].stderr
    assert ran["history"].stdout.startswith("checkout: ")
    assert ran["export"].returncode == 0, ran["export"].stderr
    exported = [json.loads(line) for line in ran["export"].stdout.splitlines()]
    assert len(exported) == 10
    assert {row["service"] for row in exported} == {"checkout"}
    if "sqlite3" in ran:
        assert ran["sqlite3"].returncode == 0, ran["sqlite3"].stderr
        assert {row.split("|")[0] for row in ran["sqlite3"].stdout.splitlines()} == set(reports)

    status = healthmon("status", "--database", db, "--json")
    assert status.returncode in (0, 4, 5), status.stderr
    state = json.loads(status.stdout)
    assert not state["stale"]
    assert {s["name"] for s in state["services"]} == set(reports)
