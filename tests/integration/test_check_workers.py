"""Check workers (healthmon/workers/): the scheduled checks in processes of their own,
against real targets on 127.0.0.1, results stored in a real SQLite file."""

from __future__ import annotations

import asyncio
import functools
import os
import signal
import sys
import time
from pathlib import Path

import httpx
import pytest
import structlog

from healthmon import HealthCheckResult, HealthMonitor, HealthStatus, HealthStore
from healthmon.model import ServiceDefinition
from healthmon.targets import TargetServer
from healthmon.workers import CheckWorkers
from tests.conftest import http_service, wait_for

pytestmark = pytest.mark.asyncio


def _alive(pid: int) -> bool:
    """A process that runs (a zombie waiting for its parent to reap it does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _workers(monitor: HealthMonitor) -> CheckWorkers:
    assert monitor._workers is not None
    return monitor._workers


async def test_workers_check_and_the_monitor_records_stores_and_notifies(
    targets: TargetServer, db_path: Path
) -> None:
    heard: list[tuple[HealthCheckResult, int]] = []
    async with HealthStore(db_path) as store:
        monitor = HealthMonitor(0.05, store=store, check_workers=2)
        monitor.add_service(http_service("ok", targets.url("/healthy")))
        monitor.add_service(http_service("down", targets.url("/fail")))
        monitor.add_service(
            ServiceDefinition(
                "auth",
                "http",
                "tests.auth",
                health_check_url=targets.url("/auth"),
                headers={"Authorization": "Bearer letmein"},
            )
        )
        monitor.add_service(
            ServiceDefinition(
                "teapot",
                "http",
                "tests.teapot",
                health_check_url=targets.url("/status/418"),
                success_codes="418",
                failure_threshold=2,
            )
        )

        async def subscriber(result: HealthCheckResult) -> None:
            # Notified after commit: the transition is in the database already.
            stored = await store.transitions(result.service_name)
            heard.append((result, len(stored)))

        monitor.subscribe(subscriber)
        async with monitor:
            pids = _workers(monitor).pids
            assert len(pids) == 2
            assert all(_alive(pid) for pid in pids)
            await wait_for(lambda: _least(monitor, 4) >= 20)
            cache = monitor.get_cluster_health()
            assert cache["ok"].status is HealthStatus.HEALTHY
            assert cache["auth"].status is HealthStatus.HEALTHY  # the header went along
            assert cache["teapot"].status is HealthStatus.HEALTHY  # its policy applied
            assert cache["down"].status is HealthStatus.UNHEALTHY
            assert cache["down"].error == "HTTP 500"
            assert cache["ok"].answered is True
            assert set(monitor.missed_checks) == {"ok", "down", "auth", "teapot"}
            await wait_for(lambda: len(heard) == 4)
        # Stopped: every worker has exited, and what they sent is stored.
        assert not any(_alive(pid) for pid in pids)
        assert monitor._workers is None
        for name, counts in monitor.check_counts.items():
            stored = await store.results(name, since=0, limit=100_000)
            assert len(stored) == sum(counts.values()), name
        assert sorted(r.service_name for r, _ in heard) == ["auth", "down", "ok", "teapot"]
        assert all(found >= 1 for _, found in heard)


def _totals(monitor: HealthMonitor) -> dict[str, int]:
    return {name: sum(counts.values()) for name, counts in monitor.check_counts.items()}


def _least(monitor: HealthMonitor, services: int) -> int:
    """The fewest results of any service, 0 until `services` services have some."""
    totals = _totals(monitor)
    return min(totals.values()) if len(totals) == services else 0


async def test_checks_are_spread_and_keep_their_rate(targets: TargetServer) -> None:
    monitor = HealthMonitor(0.05, check_workers=2)
    for i in range(6):
        monitor.add_service(http_service(f"s{i}", targets.url("/healthy")))
    async with monitor:
        workers = _workers(monitor)
        shares = [len(worker.schedules) for worker in workers._workers]
        assert shares == [3, 3]
        await wait_for(lambda: _least(monitor, 6) >= 1)
        before = _totals(monitor)
        started = time.monotonic()
        await asyncio.sleep(1.0)
        rate = (sum(_totals(monitor).values()) - sum(before.values())) / (
            time.monotonic() - started
        )
    # 6 services at 20 Hz: 120 a second (a shared machine may lose a few).
    assert 90 <= rate <= 130, rate


async def test_a_removed_service_is_no_longer_checked(targets: TargetServer) -> None:
    monitor = HealthMonitor(0.05, check_workers=1)
    monitor.add_service(http_service("gone", targets.url("/healthy")))
    monitor.add_service(http_service("kept", targets.url("/healthy")))
    async with monitor:
        await wait_for(lambda: len(_totals(monitor)) == 2)
        monitor.remove_service("gone")
        assert not _workers(monitor).attached("gone")
        await asyncio.sleep(0.3)  # results of it already on their way are dropped
        hits = targets.hits("/healthy")
        kept = _totals(monitor)["kept"]
        await asyncio.sleep(0.5)
        assert "gone" not in monitor.get_cluster_health()
        assert "gone" not in monitor.check_counts
        # Only "kept" is checked now: ~10 checks in 0.5 s, not ~20.
        assert targets.hits("/healthy") - hits <= _totals(monitor)["kept"] - kept + 2
        # Added again, it is checked again.
        monitor.add_service(http_service("gone", targets.url("/healthy")))
        await wait_for(lambda: "gone" in monitor.get_cluster_health())


async def test_a_killed_worker_is_replaced_and_its_checks_resume(targets: TargetServer) -> None:
    monitor = HealthMonitor(0.05, check_workers=2)
    for i in range(4):
        # s2 (on the first worker, with s0) takes 120 ms: it skips slots all along.
        monitor.add_service(
            http_service(f"s{i}", targets.url("/slow?ms=120" if i == 2 else "/healthy"))
        )
    went_back: list[dict[str, int]] = []

    async def watch_missed() -> None:  # a counter (Prometheus') never goes back
        last = monitor.missed_checks
        while True:
            await asyncio.sleep(0.005)
            now = monitor.missed_checks
            if any(now[n] < last[n] for n in now.keys() & last.keys()):
                went_back.append(now)
            last = now

    with structlog.testing.capture_logs() as events:
        async with monitor:
            workers = _workers(monitor)
            await wait_for(lambda: len(_totals(monitor)) == 4 and monitor.missed_checks["s2"] > 20)
            watching = asyncio.create_task(watch_missed())
            victim = workers._workers[0]
            names = {schedule.name for schedule in victim.schedules.values()}
            assert names == {"s0", "s2"}
            missed = monitor.missed_checks
            os.kill(victim.process.pid, signal.SIGKILL)
            await wait_for(lambda: workers.restarts == 1)
            assert not _alive(victim.process.pid)
            replacement = workers._workers[0]
            assert replacement.process.pid != victim.process.pid
            assert {s.name for s in replacement.schedules.values()} == names
            counts = _totals(monitor)
            await wait_for(lambda: all(_totals(monitor)[n] > counts[n] + 5 for n in names))
            # The slots while no worker ran them are missed, and counted (>= 0.3 s at
            # 20 Hz: a new worker takes that long to start); the others' are not.
            after = monitor.missed_checks
            assert all(after[n] >= missed[n] + 6 for n in names), (missed, after)
            assert all(after[n] == missed[n] for n in after.keys() - names), (missed, after)
            watching.cancel()
            assert went_back == []
            pids = workers.pids
        assert not any(_alive(pid) for pid in pids)
    exited = [e for e in events if e["event"] == "check_worker_exited"]
    assert len(exited) == 1
    assert exited[0]["returncode"] == -signal.SIGKILL
    assert exited[0]["services"] == len(names)


async def test_a_service_added_while_running_goes_to_the_least_busy_worker(
    targets: TargetServer,
) -> None:
    monitor = HealthMonitor(0.05, check_workers=2)
    monitor.add_service(http_service("a", targets.url("/healthy")))
    async with monitor:
        monitor.add_service(http_service("b", targets.url("/healthy")))
        workers = _workers(monitor)
        assert [len(worker.schedules) for worker in workers._workers] == [1, 1]
        await wait_for(lambda: set(_totals(monitor)) == {"a", "b"})


async def test_one_off_checks_still_run_in_the_monitor(targets: TargetServer) -> None:
    monitor = HealthMonitor(0.05, check_workers=1)
    monitor.add_service(http_service("svc", targets.url("/healthy")))
    result = await monitor.check_health("svc")  # not running: no worker at all
    assert result.status is HealthStatus.HEALTHY
    assert monitor._workers is None


async def test_workers_and_a_client_of_ones_own_do_not_mix() -> None:
    async with httpx.AsyncClient() as client:
        with pytest.raises(ValueError, match="http_client"):
            HealthMonitor(http_client=client, check_workers=1)


_MONITOR = """
import asyncio, sys
from healthmon import HealthMonitor, ServiceDefinition
from healthmon.log import configure_logging

async def main() -> None:
    configure_logging("error", "json")  # stdout carries the worker's pid only
    monitor = HealthMonitor(0.05, check_workers=1)
    monitor.add_service(ServiceDefinition("svc", "http", "x", health_check_url=sys.argv[1]))
    await monitor.start_monitoring()
    print(monitor._workers.pids[0], flush=True)
    await asyncio.sleep(60)

asyncio.run(main())
"""


async def test_workers_end_when_their_monitor_dies(targets: TargetServer) -> None:
    monitor = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _MONITOR, targets.url("/healthy"), stdout=asyncio.subprocess.PIPE
    )
    assert monitor.stdout is not None
    worker = int(await asyncio.wait_for(monitor.stdout.readline(), 30))
    await wait_for(lambda: targets.hits("/healthy") > 0)
    monitor.kill()  # no stop: the worker sees its input close
    await monitor.wait()
    await wait_for(lambda: not _alive(worker))


async def test_a_hung_worker_is_killed_and_replaced(targets: TargetServer) -> None:
    monitor = HealthMonitor(0.05, check_workers=1)
    monitor.add_service(http_service("svc", targets.url("/healthy")))
    with structlog.testing.capture_logs() as events:
        async with monitor:
            workers = _workers(monitor)
            await wait_for(lambda: "svc" in monitor.check_counts)
            hung = workers.pids[0]
            os.kill(hung, signal.SIGSTOP)  # alive, and silent
            await wait_for(lambda: workers.restarts == 1, timeout=20)
            assert not _alive(hung)
            counts = _totals(monitor)["svc"]
            await wait_for(lambda: _totals(monitor)["svc"] > counts + 5)
    assert [e["pid"] for e in events if e["event"] == "check_worker_unresponsive"] == [hung]


async def test_a_service_removed_during_the_stop_is_not_recorded_again(
    targets: TargetServer,
) -> None:
    for _ in range(3):
        monitor = HealthMonitor(0.05, check_workers=1)
        for i in range(40):
            monitor.add_service(http_service(f"s{i}", targets.url("/slow?ms=3")))
        await monitor.start_monitoring()
        await wait_for(functools.partial(lambda m: _least(m, 40) >= 1, monitor))
        stopping = asyncio.create_task(monitor.stop_monitoring())
        await asyncio.sleep(0.001)  # the workers are stopping: their last results to come
        for i in range(40):
            monitor.remove_service(f"s{i}")
        await stopping
        assert monitor.get_cluster_health() == {}
        assert monitor.check_counts == {}


_SHADOWED = """
import asyncio, sys
from healthmon import HealthMonitor, ServiceDefinition

async def main() -> None:
    monitor = HealthMonitor(0.05, check_workers=1)
    monitor.add_service(ServiceDefinition("svc", "http", "x", health_check_url=sys.argv[1]))
    async with monitor:
        for _ in range(500):
            if monitor.check_counts:
                print("checked")
                return
            await asyncio.sleep(0.01)
    print("never checked")

asyncio.run(main())
"""


async def test_a_module_in_the_current_folder_shadows_nothing_in_a_worker(
    targets: TargetServer, tmp_path: Path
) -> None:
    (tmp_path / "program").mkdir()
    (tmp_path / "program" / "run.py").write_text(_SHADOWED)
    (tmp_path / "here").mkdir()
    (tmp_path / "here" / "structlog.py").write_text("raise ImportError('the wrong structlog')\n")
    ran = await asyncio.create_subprocess_exec(
        sys.executable,
        str(tmp_path / "program" / "run.py"),
        targets.url("/healthy"),
        cwd=tmp_path / "here",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(ran.communicate(), 60)
    assert out.decode().splitlines()[-1:] == ["checked"], err.decode()[-2000:]


async def test_a_held_monitor_loop_is_not_taken_for_hung_workers(targets: TargetServer) -> None:
    monitor = HealthMonitor(0.05, check_workers=1)
    monitor.add_service(http_service("svc", targets.url("/healthy")))
    async with monitor:
        workers = _workers(monitor)
        await wait_for(lambda: "svc" in monitor.check_counts)
        time.sleep(6)  # noqa: ASYNC251 - the point: the loop held, the workers unread
        await asyncio.sleep(2.5)
        assert workers.restarts == 0
