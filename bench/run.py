"""The benchmark suite of issue 4: `python -m bench [--only NAME,...] [--long] [--json FILE]`.

This process only orchestrates: it starts the target server (a separate process),
runs each measurement in a fresh worker process against it (`bench.worker`), and
prints the tables. Every run is bounded in time; the server and any worker are
killed on the way out, on Ctrl-C and on errors too.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.server import TargetProcess

__all__ = ["BENCHMARKS", "main"]

ROOT = Path(__file__).resolve().parent.parent

CAPACITY_SERVICES = [10, 25, 50, 100, 150, 200]
CAPACITY_TARGET = 100
ON_TIME_TARGET = 0.99
LOAD_SERVICES = 50  # the fixed load of the CPU and latency figures: 50 services at 20 Hz
MEMORY_SERVICES = 100  # 2,000 checks/s
HZ = 20.0
STACK_CONCURRENCY = 50
CLIENT_COST_GETS = 20_000
CLUSTER_SERVICES = 1_000
CLUSTER_HEALTH_SIZES = [100, 1_000, 10_000]


@dataclass
class Settings:
    warmup: float = 3.0
    duration: float = 10.0
    capacity_services: list[int] = field(default_factory=lambda: list(CAPACITY_SERVICES))
    capacity_all: bool = False
    capacity_duration: float = 8.0
    stack_seconds: float = 3.0
    memory_warmup: float = 20.0
    memory_duration: float = 40.0
    profile_seconds: float = 15.0
    profile_dir: Path | None = None
    cluster_health_sizes: list[int] = field(default_factory=lambda: list(CLUSTER_HEALTH_SIZES))
    what_if: list[str] = field(default_factory=list)


@dataclass
class Suite:
    """What every benchmark gets: the settings, the targets, a place for files, output."""

    settings: Settings
    targets: TargetProcess
    folder: Path
    figures: dict[str, Any] = field(default_factory=dict)
    verdicts: list[tuple[str, str, str, bool | None]] = field(default_factory=list)

    def run(self, scenario: str, params: dict[str, Any], limit: float) -> dict[str, Any]:
        """Run one measurement in a worker process; its figures, plus the server's CPU."""
        out = self.folder / f"{scenario}-{time.monotonic_ns()}.json"
        log = self.folder / "worker.log"
        cpu0, wall0 = self.targets.cpu_seconds(), time.monotonic()
        with log.open("a") as stderr:
            completed = subprocess.run(  # noqa: S603 - our own interpreter and module
                [
                    sys.executable,
                    "-m",
                    "bench.worker",
                    scenario,
                    json.dumps(params),
                    str(out),
                    str(limit),
                ],
                cwd=ROOT,
                stdout=stderr,
                stderr=stderr,
                timeout=limit + 10,  # the worker's own alarm fires first; this is the backstop
                check=False,
            )
        if completed.returncode != 0 or not out.exists():
            tail = log.read_text().splitlines()[-20:]
            shown = {key: value for key, value in params.items() if key != "ports"}
            raise RuntimeError(
                f"worker {scenario} {shown} failed (exit {completed.returncode}):\n"
                + "\n".join(tail)
            )
        figures: dict[str, Any] = json.loads(out.read_text())
        cpu1, wall1 = self.targets.cpu_seconds(), time.monotonic()
        if cpu0 is not None and cpu1 is not None:
            figures["server_cpu_share"] = (cpu1 - cpu0) / (wall1 - wall0)
        return figures

    def verdict(self, what: str, measured: str, target: str, met: bool | None) -> None:
        self.verdicts.append((what, measured, target, met))

    def open_loop(
        self, services: int, *, stagger: bool = False, duration: float | None = None
    ) -> dict[str, Any]:
        """The bare aiohttp baseline on the monitor's schedule (see bench/clients.py)."""
        settings = self.settings
        seconds = settings.duration if duration is None else duration
        params = {
            "ports": self.targets.ports,
            "services": services,
            "hz": HZ,
            "warmup": settings.warmup,
            "duration": seconds,
            "stagger": stagger,
        }
        return self.run("open-loop", params, limit=settings.warmup + seconds + 30)

    def monitor(self, limit_extra: float = 30.0, **params: Any) -> dict[str, Any]:
        params.setdefault("warmup", self.settings.warmup)
        params.setdefault("duration", self.settings.duration)
        params.setdefault("what_if", self.settings.what_if)
        params["ports"] = self.targets.ports
        limit = params["warmup"] + params["duration"] + limit_extra
        return self.run("monitor", params, limit)


def have_bench_extra() -> bool:
    """Whether the `bench` extra (aiohttp, httpx-aiohttp) is installed: the baselines need it."""
    return all(importlib.util.find_spec(name) for name in ("aiohttp", "httpx_aiohttp"))


_NO_EXTRA = "(skipped: the bare baselines need the bench extra: pip install -e '.[bench]')"


# -- printing ----------------------------------------------------------------------------


def table(title: str, header: list[str], rows: list[list[str]], text_last: bool = False) -> None:
    """Print a table: the first column (and the last, if `text_last`) left-aligned."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]
    print(f"\n## {title}\n")
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip())
    print("  ".join("-" * w for w in widths))
    for row in rows:
        # The first column names the row (left), the others are figures (right).
        cells = [str(row[0]).ljust(widths[0])]
        cells += [str(c).rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)]
        if text_last:
            cells[-1] = str(row[-1]).ljust(widths[-1])
        print("  ".join(cells).rstrip())
    sys.stdout.flush()


def fmt(value: float | None, digits: int = 1, suffix: str = "") -> str:
    if value is None:
        return "n/a"
    return f"{value:,.{digits}f}{suffix}"


def pct(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value * 100:.{digits}f} %"


def yes_no(met: bool | None) -> str:
    return {True: "met", False: "MISSED", None: "n/a"}[met]


# -- the benchmarks ----------------------------------------------------------------------


def bench_stacks(suite: Suite) -> None:
    """HTTP stacks, closed loop, 50 workers (worker i on port i), a few seconds each."""
    if not have_bench_extra():
        print(f"\n## HTTP stacks {_NO_EXTRA}")
        return
    from bench.clients import STACKS  # noqa: PLC0415 - needs the bench extra only here

    rows = []
    results = {}
    for name in STACKS:
        figures = suite.run(
            "closed-loop",
            {
                "stack": name,
                "ports": suite.targets.ports,
                "concurrency": STACK_CONCURRENCY,
                "warmup": 0.5,
                "duration": suite.settings.stack_seconds,
            },
            limit=suite.settings.stack_seconds + 30,
        )
        results[name] = figures
        rows.append(
            [
                name,
                fmt(figures["requests_per_s"], 0),
                fmt(figures["cpu_per_request_us"], 0),
                pct(figures["cpu_share"], 0),
                pct(figures["ok_fraction"], 2),
                pct(figures.get("server_cpu_share"), 0),
                figures["label"],
            ]
        )
    suite.figures["stacks"] = results
    table(
        f"HTTP stacks: closed loop, {STACK_CONCURRENCY} concurrent, "
        f"{suite.settings.stack_seconds:g} s each",
        ["stack", "req/s", "CPU µs/req", "client CPU", "200 OK", "server CPU", "what"],
        rows,
        text_last=True,
    )
    cost = suite.run("client-cost", {"gets": CLIENT_COST_GETS}, limit=60)
    suite.figures["client_cost"] = cost
    table(
        "httpx's client by itself: CPU per get() over a transport answering from memory",
        ["client", "CPU µs/get"],
        [[name, fmt(us, 1)] for name, us in cost["cpu_per_get_us"].items()],
    )


def _capacity_row(label: str, figures: dict[str, Any]) -> list[str]:
    late = figures["lateness"]
    return [
        label,
        fmt(figures.get("scheduled_per_s"), 0) if "scheduled_per_s" in figures else "",
        fmt(figures.get("checks_per_s", figures.get("requests_per_s")), 0),
        pct(late["on_time_fraction"], 2),
        fmt(late["lateness_p50_ms"], 1),
        fmt(late["lateness_p99_ms"], 1),
        fmt(figures["gc_max_pause_ms"], 1) if "gc_max_pause_ms" in figures else "-",
        str(late["scheduled"] - late["started"]),
        pct(figures.get("healthy_fraction", figures.get("ok_fraction")), 2),
        {True: "yes", False: "NO", None: "-"}[figures.get("all_committed")],
        fmt(figures.get("backlog_max"), 0) if "backlog_max" in figures else "-",
        fmt(figures.get("flush_p99_ms"), 1) if "flush_p99_ms" in figures else "-",
        pct(figures["cpu_s"] / figures["window_s"], 0),
        pct(figures.get("server_cpu_share"), 0),
    ]


def bench_capacity(suite: Suite) -> None:
    """Largest service count at 20 Hz with >= 99 % on time and every result committed.

    The counts are tried in ascending order, stopping at the first that fails (more
    services only add load) except that the target, 100, is always measured; an
    explicit `--services` list is measured whole.
    """
    rows = []
    best = 0
    runs = {}
    failed = False
    for services in suite.settings.capacity_services:
        if failed and not suite.settings.capacity_all and services != CAPACITY_TARGET:
            continue
        figures = suite.monitor(
            services=services,
            hz=HZ,
            store=True,
            lateness=True,
            duration=suite.settings.capacity_duration,
        )
        runs[services] = figures
        on_time = figures["lateness"]["on_time_fraction"] or 0.0
        passed = on_time >= ON_TIME_TARGET and bool(figures["all_committed"])
        if passed and not failed:
            best = services
        failed = failed or not passed
        rows.append(_capacity_row(f"monitor {services}", figures))
    top = max(runs)
    bare: dict[str, Any] = {}
    if have_bench_extra():
        for stagger in (False, True):
            figures = suite.open_loop(
                top, stagger=stagger, duration=suite.settings.capacity_duration
            )
            figures["scheduled_per_s"] = top * HZ
            bare["staggered" if stagger else "aligned"] = figures
            label = f"bare aiohttp {top}" + (", staggered" if stagger else "")
            rows.append(_capacity_row(label, figures))
    suite.figures["capacity"] = {"runs": runs, "bare": bare, "capacity": best}
    table(
        f"Capacity at {HZ:g} Hz with a store ({suite.settings.capacity_duration:g} s after "
        f"{suite.settings.warmup:g} s warm-up)",
        [
            "run",
            "sched/s",
            "done/s",
            "on time",
            "late p50 ms",
            "late p99 ms",
            "GC max ms",
            "missed",
            "healthy",
            "all committed",
            "max backlog",
            "flush p99 ms",
            "client CPU",
            "server CPU",
        ],
        rows,
    )
    print(
        f"\ncapacity: {best} services "
        f"(>= {ON_TIME_TARGET:.0%} of checks within 10 ms of their slot, every result committed)"
    )
    suite.verdict("1. capacity at 20 Hz", f"{best} services", ">= 100", best >= 100)


def bench_cpu(suite: Suite) -> None:
    """CPU per check with and without a store, and per bare aiohttp request, same schedule."""
    common = {"services": LOAD_SERVICES, "hz": HZ}
    with_store = suite.monitor(store=True, **common)
    without = suite.monitor(store=False, **common)
    bare = suite.open_loop(LOAD_SERVICES) if have_bench_extra() else None
    per_persisted = with_store["cpu_per_persisted_us"]
    per_check = without["cpu_per_check_us"]
    per_request = None if bare is None else bare["cpu_per_request_us"]
    ratio = per_persisted / per_request if per_persisted and per_request else None
    # Per check, so that a run that fell behind its schedule does not look cheaper.
    per_check_stored = with_store["cpu_per_check_us"]
    overhead = per_check_stored / per_check if per_check_stored and per_check else None
    suite.figures["cpu"] = {"store": with_store, "no_store": without, "bare": bare}
    rows = [
        [
            "monitor + store",
            fmt(with_store["checks_per_s"], 0),
            fmt(with_store["cpu_s"] / with_store["window_s"] * 100, 1, " %"),
            fmt(per_persisted, 0) + " /persisted",
            pct(with_store["healthy_fraction"], 2),
        ],
        [
            "monitor, no store",
            fmt(without["checks_per_s"], 0),
            fmt(without["cpu_s"] / without["window_s"] * 100, 1, " %"),
            fmt(per_check, 0) + " /check",
            pct(without["healthy_fraction"], 2),
        ],
    ]
    if bare is not None:
        rows.append(
            [
                "bare aiohttp",
                fmt(bare["requests_per_s"], 0),
                fmt(bare["cpu_s"] / bare["window_s"] * 100, 1, " %"),
                fmt(per_request, 0) + " /request",
                pct(bare["ok_fraction"], 2),
            ]
        )
    table(
        f"CPU at {LOAD_SERVICES} services x {HZ:g} Hz, open loop on the same schedule "
        f"({suite.settings.duration:g} s)",
        ["run", "done/s", "CPU of a core", "CPU µs", "healthy"],
        rows,
    )
    print(
        f"\nCPU per persisted check / CPU per bare aiohttp request = {fmt(ratio, 2)}"
        f"\nCPU with store / CPU without store = {fmt(overhead, 3)}"
    )
    suite.verdict(
        "2. CPU per persisted check / bare aiohttp",
        fmt(ratio, 2),
        "<= 2.5",
        None if ratio is None else ratio <= 2.5,
    )
    suite.verdict(
        "3. CPU with store / without",
        fmt(overhead, 3),
        "<= 1.15",
        None if overhead is None else overhead <= 1.15,
    )


def bench_latency(suite: Suite) -> None:
    """result -> COMMIT and COMMIT -> subscriber, with some targets flipping."""
    flip = 5
    figures = suite.monitor(services=LOAD_SERVICES, hz=HZ, store=True, latency=True, flip=flip)
    suite.figures["latency"] = figures
    to_commit, to_callback = (
        figures["result_to_commit_p99_ms"],
        figures["commit_to_callback_p99_ms"],
    )
    table(
        f"Latency inside the monitor: {LOAD_SERVICES} services x {HZ:g} Hz, "
        f"{flip} of them flipping 200/503, with a store",
        ["span", "p50 ms", "p99 ms", "samples", "target p99"],
        [
            [
                "check done -> committed",
                fmt(figures["result_to_commit_p50_ms"], 1),
                fmt(to_commit, 1),
                str(figures["result_to_commit_n"]),
                "< 150 ms",
            ],
            [
                "one flush, BEGIN .. COMMIT",
                fmt(figures["flush_p50_ms"], 1),
                fmt(figures["flush_p99_ms"], 1),
                f"{figures['flush_n']} ({fmt(figures['results_per_flush'], 0)} results each)",
                "",
            ],
            [
                "committed -> subscriber called",
                fmt(figures["commit_to_callback_p50_ms"], 2),
                fmt(to_callback, 2),
                str(figures["commit_to_callback_n"]),
                "< 5 ms",
            ],
        ],
    )
    suite.verdict(
        "4a. check done -> committed p99",
        fmt(to_commit, 1, " ms"),
        "< 150 ms",
        None if to_commit is None else to_commit < 150,
    )
    suite.verdict(
        "4b. committed -> subscriber p99",
        fmt(to_callback, 2, " ms"),
        "< 5 ms",
        None if to_callback is None else to_callback < 5,
    )


def bench_cluster(suite: Suite) -> None:
    """In-process timeit of the cluster queries."""
    figures = suite.run(
        "cluster",
        {
            "status_services": CLUSTER_SERVICES,
            "health_sizes": suite.settings.cluster_health_sizes,
        },
        limit=120,
    )
    suite.figures["cluster"] = figures
    rows = [
        ["get_cluster_status()", str(CLUSTER_SERVICES), fmt(figures["status_us"], 2), ""],
        [
            "  after one result replaced",
            str(CLUSTER_SERVICES),
            fmt(figures["update_then_status_us"], 2),
            "",
        ],
        [
            "  bare: worst_status() scan",
            str(CLUSTER_SERVICES),
            fmt(figures["status_scan_us"], 2),
            "",
        ],
    ]
    base = figures["health"][0]
    for entry in figures["health"]:
        scale = entry["monitor_us"] / base["monitor_us"] / (entry["entries"] / base["entries"])
        rows.append(
            [
                "get_cluster_health()",
                f"{entry['entries']:,}",
                fmt(entry["monitor_us"], 2),
                f"{scale:.2f} x linear; bare dict.copy() {fmt(entry['dict_copy_us'], 2)} µs",
            ]
        )
    table(
        "Cluster queries (timeit, best of 5, in one process)",
        ["query", "entries", "µs/call", "note"],
        rows,
        text_last=True,
    )
    status_us = figures["status_us"]
    suite.verdict(
        "5. get_cluster_status(), 1,000 services",
        fmt(status_us, 2, " µs"),
        "< 20 µs",
        status_us < 20,
    )
    largest = figures["health"][-1]
    ratio = largest["monitor_us"] / largest["dict_copy_us"]
    suite.verdict(
        f"5. get_cluster_health(), {largest['entries']:,} / dict.copy()",
        fmt(ratio, 2, " x"),
        "linear (~1 x copy)",
        ratio < 2,
    )


def bench_memory(suite: Suite) -> None:
    """RSS over a run at 2,000 checks/s with a store; then bytes per stored result."""
    settings = suite.settings
    figures = suite.monitor(
        services=MEMORY_SERVICES,
        hz=HZ,
        store=True,
        warmup=settings.memory_warmup,
        duration=settings.memory_duration,
        sample_every=1.0,
        limit_extra=60.0,
    )
    suite.figures["memory"] = figures
    growth = figures.get("rss_growth_mb")
    table(
        f"Memory: {MEMORY_SERVICES} services x {HZ:g} Hz with a store, "
        f"{settings.memory_duration:g} s after {settings.memory_warmup:g} s warm-up",
        ["done/s", "RSS after warm-up", "RSS at end", "max", "growth", "slope"],
        [
            [
                fmt(figures["checks_per_s"], 0),
                fmt(figures.get("rss_after_warmup_mb"), 1, " MB"),
                fmt(figures.get("rss_end_mb"), 1, " MB"),
                fmt(figures.get("rss_max_mb"), 1, " MB"),
                fmt(growth, 2, " MB"),
                fmt(figures.get("rss_slope_mb_per_min"), 2, " MB/min"),
            ]
        ],
    )
    suite.verdict(
        f"6. RSS growth after warm-up ({settings.memory_duration:g} s)",
        fmt(growth, 2, " MB"),
        "< 5 MB",
        None if growth is None else growth < 5,
    )
    storage = figures["storage"]
    table(
        "Storage: the same run's database, WAL checkpointed",
        ["rows", "healthy", "file bytes", "bytes/row (file)", "bytes/row (dbstat)"],
        [
            [
                f"{storage['rows']:,}",
                pct(storage["healthy_rows"] / storage["rows"] if storage["rows"] else None, 2),
                f"{storage['file_bytes']:,}",
                fmt(storage["bytes_per_row_file"], 1),
                fmt(storage["bytes_per_row_table"], 1),
            ]
        ],
    )
    per_row = storage["bytes_per_row_file"]
    suite.verdict(
        "7. bytes on disk per healthy result",
        fmt(per_row, 1),
        "<= 40",
        None if per_row is None else per_row <= 40,
    )


_PROFILE_RATE = 250  # samples per second


def bench_profile(suite: Suite) -> None:
    """py-spy on a worker at 50 services x 20 Hz with a store: where the CPU goes."""
    settings = suite.settings
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(py_spy).exists():
        print("\nprofile: py-spy not found (pip install -e '.[bench]')")
        return
    folder = settings.profile_dir or suite.folder
    folder.mkdir(parents=True, exist_ok=True)
    raw = folder / "profile.txt"
    warmup = settings.warmup
    params = {
        "ports": suite.targets.ports,
        "services": LOAD_SERVICES,
        "hz": HZ,
        "store": True,
        "warmup": warmup,
        "duration": settings.profile_seconds + 2,
    }
    out = suite.folder / "profile-figures.json"
    limit = warmup + settings.profile_seconds + 40
    with (suite.folder / "worker.log").open("a") as log:
        worker = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [
                sys.executable,
                "-m",
                "bench.worker",
                "monitor",
                json.dumps(params),
                str(out),
                str(limit),
            ],
            cwd=ROOT,
            stdout=log,
            stderr=log,
        )
        try:
            time.sleep(warmup + 1.0)  # imports, migrations, warm-up
            spy = subprocess.run(  # noqa: S603 - py-spy from the bench extra
                [
                    py_spy,
                    "record",
                    "--pid",
                    str(worker.pid),
                    "--duration",
                    str(int(settings.profile_seconds)),
                    "--rate",
                    str(_PROFILE_RATE),
                    "--format",
                    "raw",
                    "--threads",
                    # Only samples of the thread holding the GIL: the monitor's CPU
                    # ceiling is one GIL, and idle threads (aiosqlite's waiting on its
                    # queue) would otherwise be counted as busy.
                    "--gil",
                    "--output",
                    str(raw),
                ],
                stdout=log,
                stderr=log,
                timeout=settings.profile_seconds + 30,
                check=False,
            )
            if spy.returncode != 0 or worker.poll() not in (None, 0):
                tail = (suite.folder / "worker.log").read_text().splitlines()[-15:]
                raise RuntimeError(
                    f"profile failed: py-spy exit {spy.returncode}, worker exit "
                    f"{worker.poll()} (py-spy needs ptrace rights: root or "
                    "CAP_SYS_PTRACE):\n" + "\n".join(tail)
                )
            worker.wait(timeout=limit)
        finally:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
    summary = summarize_profile(raw)
    suite.figures["profile"] = summary
    total = summary["samples"]
    held = total / (_PROFILE_RATE * int(settings.profile_seconds))
    figures = json.loads(out.read_text()) if out.exists() else {}
    print(
        f"\nprofiled run: {fmt(figures.get('checks_per_s'), 0)} checks/s, "
        f"{fmt(figures.get('cpu_per_persisted_us'), 0)} µs CPU per persisted check; "
        f"the GIL was held {held:.0%} of the time; threads: {summary['threads']}"
    )
    table(
        f"Profile: py-spy --gil, {LOAD_SERVICES} services x {HZ:g} Hz with a store, "
        f"{settings.profile_seconds:g} s at {_PROFILE_RATE} Hz ({total:,} samples); raw: {raw}",
        ["part (inclusive: any frame in it)", "share of CPU samples"],
        [[name, pct(count / total)] for name, count in summary["areas"]],
    )
    table(
        "Profile: top functions by own time (self)",
        ["function", "self"],
        [[name, pct(count / total)] for name, count in summary["self"][:25]],
    )
    table(
        "Profile: top functions by inclusive time",
        ["function", "inclusive"],
        [[name, pct(count / total)] for name, count in summary["inclusive"][:30]],
    )


# Where a frame's file lives says which part of the stack it belongs to (py-spy
# prints paths relative to their sys.path entry: "httpx/_client.py").
_AREAS: list[tuple[str, str | tuple[str, ...]]] = [
    ("healthmon (all of it)", "healthmon/"),
    ("healthmon.probe + transport", ("healthmon/probe.py", "healthmon/transport.py")),
    ("healthmon.monitor", "healthmon/monitor.py"),
    ("healthmon.schedule", "healthmon/schedule.py"),
    ("healthmon.store (writer)", "healthmon/store/"),
    ("healthmon.notify", "healthmon/notify.py"),
    ("httpx", "httpx/"),
    ("httpcore", "httpcore/"),
    ("h11", "h11/"),
    ("anyio", "anyio/"),
    ("httpx_aiohttp (transport)", "httpx_aiohttp/"),
    ("aiohttp", "aiohttp/"),
    ("yarl, multidict", ("yarl/", "multidict/")),
    ("importlib (failed imports)", "<frozen importlib"),
    ("sqlalchemy", "sqlalchemy/"),
    ("aiosqlite", "aiosqlite/"),
    ("sqlite3", "sqlite3/"),
    ("structlog", "structlog/"),
    ("logging", "logging/"),
    ("json", "json/"),
    ("asyncio", "asyncio/"),
    ("selectors (epoll)", "selectors.py"),
    ("gc", "<gc>"),
]


def _frame_path(frame: str) -> str:
    """The file of a py-spy frame 'function (path:line)', relative to its sys.path entry."""
    path = frame.rpartition(" (")[2].rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", "/src/", "/lib/python3."):
        if marker in path:
            path = path.split(marker, 1)[1]
            if marker == "/lib/python3.":  # "11/asyncio/x.py" -> "asyncio/x.py"
                path = path.split("/", 1)[1] if "/" in path else path
            break
    return path


def summarize_profile(raw: Path) -> dict[str, Any]:
    """Shares of samples per library (inclusive) and per function (self, inclusive)."""
    self_counts: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    areas: Counter[str] = Counter()
    threads: defaultdict[str, int] = defaultdict(int)
    total = 0
    for line in raw.read_text().splitlines():
        # py-spy raw lines: "thread;frame;frame;... count", root first.
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        thread, *frames = stack.split(";")
        threads[thread] += count
        if not frames:
            continue
        names = [_short(frame) for frame in frames]
        self_counts[names[-1]] += count
        for name in set(names):
            inclusive[name] += count
        paths = [_frame_path(frame) for frame in frames]
        for area, prefixes in _AREAS:
            if any(path.startswith(prefixes) for path in paths):
                areas[area] += count
    return {
        "samples": total,
        "threads": dict(threads),
        "areas": sorted(areas.items(), key=lambda item: -item[1]),
        "self": self_counts.most_common(40),
        "inclusive": inclusive.most_common(80),
    }


def _short(frame: str) -> str:
    """'get (httpx/_client.py)': the function and its file, without the line (a
    function's samples are spread over its lines)."""
    return f"{frame.partition(' (')[0]} ({_frame_path(frame)})"


def _postgres(suite: Suite) -> None:
    from bench.postgres import bench_postgres  # noqa: PLC0415 - it imports this module

    bench_postgres(suite)


BENCHMARKS: dict[str, Callable[[Suite], None]] = {
    "stacks": bench_stacks,
    "capacity": bench_capacity,
    "cpu": bench_cpu,
    "latency": bench_latency,
    "cluster": bench_cluster,
    "memory": bench_memory,
    "profile": bench_profile,
    "postgres": _postgres,
}
DEFAULT = ["stacks", "capacity", "cpu", "latency", "cluster", "memory", "postgres"]


def _load() -> str:
    """The machine's load averages: other work on the two cores skews every figure."""
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:
        return "load average n/a"
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} (1/5/15 min)"


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="healthmon's benchmark suite (issue 4). See bench/README.md.",
    )
    parser.add_argument(
        "--only",
        default=",".join(DEFAULT),
        help=f"comma-separated benchmarks from {', '.join(BENCHMARKS)} (default: all but profile)",
    )
    parser.add_argument(
        "--long", action="store_true", help="the 10-minute memory run (60 s warm-up + 540 s)"
    )
    parser.add_argument("--warmup", type=float, help="warm-up seconds of each monitor run")
    parser.add_argument("--duration", type=float, help="measured seconds of each monitor run")
    parser.add_argument(
        "--services", help="capacity: comma-separated service counts (default 25,50,100,150,200)"
    )
    parser.add_argument("--memory-seconds", type=float, help="memory: measured seconds")
    parser.add_argument("--profile-dir", type=Path, help="profile: keep py-spy's output here")
    parser.add_argument(
        "--what-if",
        default="",
        help="experiments applied to every monitor run (off by default; see bench/README.md): "
        "stagger, gc-freeze",
    )
    parser.add_argument("--json", type=Path, help="also write every figure to this JSON file")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="the smallest configuration (a few seconds): for the smoke test",
    )
    return parser.parse_args(argv)


def _settings(args: argparse.Namespace) -> Settings:
    settings = Settings()
    if args.smoke:
        settings = Settings(
            warmup=0.5,
            duration=1.5,
            capacity_services=[5],
            capacity_duration=1.5,
            stack_seconds=1.0,
            memory_warmup=1.0,
            memory_duration=3.0,
            profile_seconds=2.0,
            cluster_health_sizes=[10, 100],
        )
    if args.long:
        settings.memory_warmup, settings.memory_duration = 60.0, 540.0
    if args.warmup is not None:
        settings.warmup = args.warmup
    if args.duration is not None:
        settings.duration = settings.capacity_duration = args.duration
    if args.services:
        settings.capacity_services = [int(n) for n in args.services.split(",")]
        settings.capacity_all = True
    if args.memory_seconds is not None:
        settings.memory_duration = args.memory_seconds
    settings.profile_dir = args.profile_dir
    settings.what_if = [name.strip() for name in args.what_if.split(",") if name.strip()]
    return settings


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    names = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = [name for name in names if name not in BENCHMARKS]
    if unknown:
        print(f"unknown benchmark(s) {unknown}; choose from {list(BENCHMARKS)}", file=sys.stderr)
        return 2
    settings = _settings(args)
    ports = max([*settings.capacity_services, LOAD_SERVICES, MEMORY_SERVICES, STACK_CONCURRENCY])
    # The server's own limit: longer than any run of the suite, so it never outlives one.
    lifetime = 3600.0
    started = time.monotonic()
    print(
        f"healthmon benchmarks: {', '.join(names)}; {os.cpu_count()} CPUs, "
        f"Python {sys.version.split()[0]}, {time.strftime('%Y-%m-%d %H:%M:%S %Z')}; {_load()}"
    )
    with tempfile.TemporaryDirectory(prefix="healthmon-bench-") as tmp:
        folder = Path(tmp)
        with TargetProcess(ports, lifetime) as targets:
            if settings.what_if:
                print(f"WHAT-IF experiments on every monitor run: {', '.join(settings.what_if)}")
            print(f"target server: pid {targets.pid}, {len(targets.ports)} ports on 127.0.0.1")
            suite = Suite(settings, targets, folder)
            try:
                for name in names:
                    BENCHMARKS[name](suite)
            finally:
                if suite.verdicts:
                    table(
                        "Targets (issue 4)",
                        ["target", "measured", "goal", "verdict"],
                        [[w, m, g, yes_no(ok)] for w, m, g, ok in suite.verdicts],
                    )
                if args.json is not None:
                    args.json.write_text(json.dumps(suite.figures, indent=2))
    print(f"\ndone in {time.monotonic() - started:.0f} s; {_load()}")
    return 0
