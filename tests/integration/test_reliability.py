"""Faults that must not stop monitoring or lose data silently: misbehaving targets and
subscribers, removal mid-check, a killed process, and a short soak."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from healthmon import (
    CheckPolicy,
    HealthCheckResult,
    HealthMonitor,
    HealthStatus,
    HealthStore,
    ServiceDefinition,
)
from healthmon.targets import TargetServer
from tests.conftest import wait_for

DATA = Path(__file__).resolve().parents[1] / "data"
PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes() -> int:
    with Path("/proc/self/statm").open() as statm:
        return int(statm.read().split()[1]) * PAGE


def healthmon_tasks() -> list[str]:
    return sorted(n for t in asyncio.all_tasks() if (n := t.get_name()).startswith("healthmon"))


def open_fds() -> int:
    return sum(1 for _ in Path("/proc/self/fd").iterdir())


@pytest.mark.asyncio
@pytest.mark.timeout(60)
async def test_misbehaving_targets_fail_cleanly_and_disturb_nobody(
    targets: TargetServer, tls_targets: TargetServer
) -> None:
    bad = {
        "hangs": (targets.url("/hang"), "timeout after 1000 ms"),
        "drips": (targets.url("/drip?interval=0.3"), "timeout after 1000 ms"),
        "resets": (targets.url("/reset"), "connection closed mid-body"),
        "huge": (targets.url("/big?bytes=100000000"), "body over 65536 bytes"),
        "endless": (targets.url("/endless"), "body over 65536 bytes"),
        "bomb": (targets.url("/gzipbomb?mb=100"), "body over 65536 bytes"),
        "nodns": ("http://no-such-host.invalid/health", "DNS: host name does not resolve"),
        "badtls": (tls_targets.url("/healthy"), "TLS: certificate verify failed"),
        "loops": (targets.url("/redirect-loop"), "too many redirects"),
    }
    monitor = HealthMonitor(0.05, policy=CheckPolicy(timeout=1.0))
    for name, (url, _) in bad.items():
        monitor.add_service(
            ServiceDefinition(name, "http", "m", [], url, follow_redirects=name == "loops")
        )
    monitor.add_service(ServiceDefinition("ok", "http", "m", [], targets.url("/healthy")))
    health = monitor.get_cluster_health

    async with monitor:
        # warm-up: every misbehaving target has been checked at least twice
        await wait_for(lambda: len(health()) == len(bad) + 1, timeout=20)
        await wait_for(lambda: targets.hits("/hang") >= 2 and targets.hits("/gzipbomb") >= 2)
        baseline = rss_bytes()
        before, started = targets.hits("/healthy"), time.monotonic()
        await asyncio.sleep(2.0)
        checked = targets.hits("/healthy") - before
        elapsed = time.monotonic() - started
        growth = rss_bytes() - baseline

    for name, (_, error) in bad.items():
        assert (health()[name].status, health()[name].error) == (HealthStatus.UNHEALTHY, error)
    # the healthy service kept its 20 Hz schedule next to all of that
    assert checked >= 0.8 * elapsed / 0.05
    assert monitor.get_cluster_health()["ok"].status is HealthStatus.HEALTHY
    # 100 MB bodies and gzip bombs, checked 20 times a second, cost no memory
    assert growth < 20 * 1024 * 1024


@pytest.mark.asyncio
async def test_misbehaving_subscribers_do_not_disturb_monitoring(
    targets: TargetServer, db_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    heard: list[tuple[str, HealthStatus, float]] = []

    async def raises(result: HealthCheckResult) -> None:
        raise RuntimeError("subscriber bug")

    async def hangs(result: HealthCheckResult) -> None:
        await asyncio.Event().wait()

    async def leaves(result: HealthCheckResult) -> None:
        monitor.unsubscribe(leaves)

    async def records(result: HealthCheckResult) -> None:
        heard.append((result.service_name, result.effective_status, result.timestamp))

    async with HealthStore(db_path) as store:
        monitor = HealthMonitor(0.05, store=store, callback_timeout=0.5)
        monitor.add_service(
            ServiceDefinition("flappy", "http", "m", [], targets.url("/flip?period=0.3"))
        )
        for callback in (raises, hangs, leaves, records):
            monitor.subscribe(callback)
        async with monitor:
            started = time.monotonic()
            await wait_for(lambda: len(heard) >= 4)
            checks = targets.hits("/flip")
            elapsed = time.monotonic() - started
        transitions = await store.transitions("flappy")
    assert monitor.subscribers == [raises, hangs, records]
    # monitoring went on at its rate while callbacks raised and hung
    assert checks >= 0.8 * elapsed / 0.05
    # the well-behaved subscriber heard every change, in commit order: the hanging
    # one holds up only its own lane
    assert heard == [(t.service_name, t.to_status, t.timestamp) for t in transitions]
    logged = capsys.readouterr().out
    assert "health_callback_error" in logged
    assert "health_callback_timeout" in logged


@pytest.mark.asyncio
async def test_nothing_is_stored_for_a_service_after_its_removal(
    targets: TargetServer, db_path: Path
) -> None:
    async with HealthStore(db_path) as store:
        monitor = HealthMonitor(0.05, store=store, policy=CheckPolicy(timeout=30.0))
        monitor.add_service(ServiceDefinition("stuck", "http", "m", [], targets.url("/hang")))
        monitor.add_service(ServiceDefinition("ok", "http", "m", [], targets.url("/healthy")))
        async with monitor:
            await wait_for(lambda: targets.hits("/hang") == 1 and targets.hits("/healthy") >= 5)
            monitor.remove_service("stuck")  # its only check is in flight
            monitor.remove_service("ok")
            removed_at = time.time()
            hits_then = targets.hits("/healthy")
            await asyncio.sleep(0.3)
            assert targets.hits("/healthy") == hits_then  # no check after removal
            assert monitor.get_cluster_health() == {}
        assert await store.results("stuck") == []
        ok = await store.results("ok")
    assert ok  # what it had before its removal is kept
    assert max(r.timestamp for r in ok) <= removed_at


CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from healthmon import HealthMonitor, HealthStore, ServiceDefinition

    async def main(url, db):
        async with HealthStore(db) as store:
            monitor = HealthMonitor(0.05, store=store)
            monitor.add_service(ServiceDefinition("svc", "http", "m", [], url))
            async with monitor:
                await asyncio.sleep(60)  # until killed

    asyncio.run(main(sys.argv[1], sys.argv[2]))
    """
)


@pytest.mark.asyncio
async def test_sigkill_loses_at_most_the_last_flush(targets: TargetServer, db_path: Path) -> None:
    child = subprocess.Popen(  # noqa: ASYNC220 - started once; the loop waits on its hits
        [sys.executable, "-c", CHILD, targets.url("/healthy"), str(db_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        await wait_for(lambda: targets.hits("/healthy") >= 40, timeout=30)
        hits = targets.hits("/healthy")
        killed_at = time.time()
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        _, stderr = child.communicate(timeout=10)
    assert child.returncode == -signal.SIGKILL, stderr.decode()

    with sqlite3.connect(db_path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    conn.close()
    async with HealthStore(db_path, migrate=False) as store:
        results = await store.results("svc")
    # Lost: what was pending at the kill, i.e. at most one flush interval (0.1 s) of
    # results plus the check in flight, with a little slack for a loaded machine.
    assert results[-1].timestamp >= killed_at - 0.4
    assert len(results) >= hits - 8
    gaps = [b.timestamp - a.timestamp for a, b in itertools.pairwise(results)]
    assert max(gaps) < 0.5  # nothing missing in between


@pytest.mark.asyncio
@pytest.mark.timeout(60)
async def test_short_soak_has_no_growth(targets: TargetServer, db_path: Path) -> None:
    """Flapping and hanging targets at 20 Hz: tasks, file descriptors and memory stay
    flat while running, and go back to where they were after stop."""
    tasks_before, fds_before = len(asyncio.all_tasks()), open_fds()
    async with HealthStore(db_path) as store:
        await store.latest()  # (its thread's engine connects at its first use)
        fds_with_store = open_fds()
        monitor = HealthMonitor(0.05, store=store, policy=CheckPolicy(timeout=0.3))
        for i in range(10):
            url = targets.url(f"/flip?period=0.{i + 1}")
            monitor.add_service(ServiceDefinition(f"flap{i}", "http", "m", [], url))
        for i in range(3):
            monitor.add_service(
                ServiceDefinition(f"hang{i}", "http", "m", [], targets.url("/hang"))
            )
            monitor.add_service(
                ServiceDefinition(f"ok{i}", "http", "m", [], targets.url("/healthy"))
            )
        async with monitor:
            await asyncio.sleep(1.5)  # warm-up: connections, caches, first flushes
            ours, fds, rss = healthmon_tasks(), open_fds(), rss_bytes()
            tasks = len(asyncio.all_tasks())
            for _ in range(4):
                await asyncio.sleep(1.0)
                assert healthmon_tasks() == ours
                # anyio runs a short-lived task per connection attempt: the hanging
                # services reconnect after each timeout, at most one at a time each
                assert len(asyncio.all_tasks()) <= tasks + 3
                assert open_fds() <= fds + 3  # likewise their connections come and go
            growth = rss_bytes() - rss
            stats = monitor.store_stats
        assert stats is not None
        assert stats.dropped_results == 0
        assert stats.committed_results > 5 * 13 * 20 * 0.8
        # (the targets' side of the closed connections goes a moment later)
        await wait_for(lambda: open_fds() <= fds_with_store, timeout=3)
    assert growth < 8 * 1024 * 1024
    assert len(asyncio.all_tasks()) == tasks_before
    assert open_fds() <= fds_before
