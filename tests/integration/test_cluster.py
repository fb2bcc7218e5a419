"""Cluster mode in one process: monitors sharing one real PostgreSQL database.

The multi-process story (kills, pauses, restarts) is in test_cluster_processes.py;
here each guarantee is shown on its own: the fair split and `healthmon status`, the
feed heard once and in order on every node (across a killed LISTEN connection),
confirmed status and streaks carried over, fencing of a lost lease, and the refusal
of cluster mode on SQLite.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text

from healthmon import HealthMonitor
from healthmon.cli.status import read_status
from healthmon.cluster import ClusterSettings
from healthmon.model import HealthCheckResult, HealthStatus, ServiceDefinition
from healthmon.policy import CheckPolicy
from healthmon.store import HealthStore
from healthmon.targets import TargetServer
from tests.conftest import wait_for

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(60)]

LEASE = 2.0


def service(name: str, url: str) -> ServiceDefinition:
    return ServiceDefinition(name, "http", f"tests.{name}", [], url)


class Heard:
    """A subscriber that keeps what it hears."""

    def __init__(self) -> None:
        self.results: list[HealthCheckResult] = []

    async def __call__(self, result: HealthCheckResult) -> None:
        self.results.append(result)

    def heard(self) -> list[tuple[str, float]]:
        return [(r.service_name, r.timestamp) for r in self.results]


@contextlib.asynccontextmanager
async def node(
    url: str,
    name: str,
    services: list[ServiceDefinition],
    *,
    interval: float = 0.1,
    policy: CheckPolicy | None = None,
    check_workers: int = 0,
) -> AsyncIterator[tuple[HealthMonitor, Heard]]:
    async with HealthStore(url) as store:
        monitor = HealthMonitor(
            interval,
            store=store,
            policy=policy,
            cluster=ClusterSettings(node=name, lease=LEASE, feed_poll=0.2),
            check_workers=check_workers,
        )
        for s in services:
            monitor.add_service(s)
        heard = Heard()
        monitor.subscribe(heard)
        async with monitor:
            yield monitor, heard


async def stored_transitions(store: HealthStore) -> list[tuple[int, str, float, int]]:
    async with store.engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT t.seq, s.name, t.ts, t.node_id FROM status_transitions t "
                "JOIN services s ON s.id = t.service_id ORDER BY t.seq"
            )
        )
        return [(seq, name, ts, node_id) for seq, name, ts, node_id in rows]


async def test_two_nodes_split_the_fleet_and_hear_every_transition_once_in_order(
    pg_url: str, targets: TargetServer
) -> None:
    services = [
        # The flipping ones last: the ones a hands b when b joins.
        service(f"s{i}", targets.url(f"/flip?period=0.{i - 1}" if i > 3 else "/healthy"))
        for i in range(7)
    ]
    async with (
        node(pg_url, "a", services) as (a, heard_a),
        node(pg_url, "b", services) as (
            b,
            heard_b,
        ),
    ):
        assert a.cluster is not None
        assert b.cluster is not None

        def split() -> bool:
            owned = [set(m.cluster.held) for m in (a, b) if m.cluster is not None]
            return sorted(map(len, owned)) == [3, 4] and set.union(*owned) == {
                s.name for s in services
            }

        await wait_for(split, 15)
        await wait_for(lambda: len(heard_a.results) > 20 and len(heard_b.results) > 20, 15)
        # Each cache answers for the whole fleet.
        assert (
            set(a.get_cluster_health()) == set(b.get_cluster_health()) == {s.name for s in services}
        )
        async with HealthStore(pg_url) as reader:
            report = await read_status(reader, "db")
            assert report.cluster is not None
            assert {s.node for s in report.services} == {"a", "b"}
            assert sorted(n.services for n in report.cluster.nodes if n.alive) == [3, 4]
        shown = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "healthmon.cli", "status", "--database", pg_url],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert "SERVICE  NODE  STATUS" in shown.stdout
        assert "NODE  ID  ALIVE  SERVICES  HEARTBEAT" in shown.stdout
    async with HealthStore(pg_url) as store:
        stored = await stored_transitions(store)
        report = await read_status(store, "db")
    assert report.cluster is not None
    assert not any(n.alive for n in report.cluster.nodes)
    by_key = {(name, ts): seq for seq, name, ts, _ in stored}
    for heard in (heard_a, heard_b):
        seqs = [by_key[key] for key in heard.heard()]  # every one heard is stored
        assert seqs == list(range(seqs[0], seqs[-1] + 1))  # once each, in commit order
    # a started first and stopped last: it heard every one of them.
    assert heard_a.heard() == [(name, ts) for _, name, ts, _ in stored]
    assert len(heard_b.results) > 20
    # Transitions of both nodes are among them, each stored with its node.
    assert len({node_id for *_, node_id in stored}) == 2


async def test_the_feed_catches_up_after_its_listen_connection_is_killed(
    pg_url: str, targets: TargetServer
) -> None:
    services = [service("flip", targets.url("/flip?period=0.2"))]
    async with node(pg_url, "a", services) as (a, heard):
        assert a.cluster is not None
        assert a.cluster.feed is not None
        feed = a.cluster.feed
        await wait_for(lambda: len(heard.results) >= 2, 10)
        connects = feed.connects
        async with HealthStore(pg_url) as store, store.engine.connect() as conn:
            pid = feed._listener.get_server_pid()  # the LISTEN connection's backend
            await conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            await conn.commit()
        # Transitions go on meanwhile; their notifications to the dead connection are lost.
        await wait_for(lambda: feed.connects > connects, 10)
        count = len(heard.results)
        await wait_for(lambda: len(heard.results) >= count + 4, 10)
    async with HealthStore(pg_url) as store:
        stored = await stored_transitions(store)
    assert heard.heard() == [(name, ts) for _, name, ts, _ in stored]


async def test_check_workers_check_what_their_node_leases(
    pg_url: str, targets: TargetServer
) -> None:
    services = [service(f"s{i}", targets.url("/healthy")) for i in range(4)]
    names = {s.name for s in services}

    def checked(monitor: HealthMonitor) -> set[str]:
        workers = monitor._workers
        return set() if workers is None else {n for n in names if workers.attached(n)}

    def held(monitor: HealthMonitor) -> set[str]:
        return set() if monitor.cluster is None else set(monitor.cluster.held) & names

    async with node(pg_url, "a", services, check_workers=1) as (a, _):
        async with node(pg_url, "b", services, check_workers=1) as (b, _):
            await wait_for(lambda: sorted(len(held(m)) for m in (a, b)) == [2, 2], 15)
            await wait_for(lambda: all(checked(m) == held(m) for m in (a, b)), 15)
            theirs = held(b)
            counts = a.check_counts
            await asyncio.sleep(0.5)
            # a records none of b's services' checks: their lease is b's.
            assert all(a.check_counts.get(n) == counts.get(n) for n in theirs)
        # b has stopped and handed its leases back: a checks the whole fleet.
        await wait_for(lambda: held(a) == names, 15)
        await wait_for(lambda: checked(a) == names, 15)
        counts = a.check_counts
        await wait_for(lambda: all(a.check_counts.get(n) != counts.get(n) for n in theirs), 15)


async def test_a_service_moving_to_another_node_keeps_its_status_and_streak(
    pg_url: str, targets: TargetServer
) -> None:
    """failure_threshold 3: two failures on a, then a stops; b's first failure is the
    third, and confirms UNHEALTHY. No transition is recorded for the move itself."""
    policy = CheckPolicy(failure_threshold=3)
    services = [service("api", targets.url("/scripted"))]
    async with node(pg_url, "a", services, interval=1.0, policy=policy) as (a, heard_a):
        await wait_for(lambda: len(heard_a.results) == 1, 10)  # HEALTHY confirmed
        hits = targets.hits("/scripted")
        targets.script(503, 503)
        await wait_for(lambda: targets.hits("/scripted") == hits + 2, 10)
        await asyncio.sleep(0.05)  # the second failure recorded before we stop
    assert a.get_cluster_health()["api"].confirmed_status is HealthStatus.HEALTHY
    targets.script(503)
    async with node(pg_url, "b", services, interval=1.0, policy=policy) as (_, heard_b):
        await wait_for(lambda: len(heard_b.results) == 1, 10)
        assert heard_b.results[0].effective_status is HealthStatus.UNHEALTHY
        assert targets.hits("/scripted") == hits + 3  # confirmed at b's first failure
    async with HealthStore(pg_url) as store:
        transitions = await store.transitions("api")
    assert [t.to_status for t in transitions] == [HealthStatus.HEALTHY, HealthStatus.UNHEALTHY]


async def test_results_of_a_lost_lease_are_fenced_counted_and_not_written(
    pg_url: str, targets: TargetServer
) -> None:
    services = [service("api", targets.url("/healthy"))]
    async with node(pg_url, "a", services) as (a, _):
        assert a.cluster is not None
        await wait_for(lambda: "api" in a.cluster.held if a.cluster else False, 10)
        await wait_for(lambda: (a.store_stats.committed_results if a.store_stats else 0) > 3)
        async with HealthStore(pg_url) as store, store.engine.begin() as conn:
            # Another node (one that is not alive, so a cannot take it back) claims it.
            await conn.execute(
                text(
                    "INSERT INTO cluster_nodes (id, name, started_at, heartbeat_at) "
                    "VALUES (1000, 'thief', 0, 0)"
                )
            )
            await conn.execute(
                text(
                    "UPDATE service_leases SET node_id = 1000, epoch = epoch + 1, "
                    "expires_at = extract(epoch from clock_timestamp()) + 60"
                )
            )
        stolen = time.time()
        await wait_for(lambda: not a.cluster.held if a.cluster else False, 10)
        # Counted by the writer's first flush after the theft, which may come after the
        # lease step noticed it (a wait, not a read at that moment: the two race).
        await wait_for(lambda: (a.store_stats.fenced_results if a.store_stats else 0) > 0, 10)
    async with HealthStore(pg_url) as store, store.engine.connect() as conn:
        after = await conn.scalar(
            text("SELECT count(*) FROM check_results WHERE ts_us > :stolen"),
            {"stolen": int(stolen * 1e6)},
        )
    assert after == 0


async def test_cluster_mode_needs_postgresql(tmp_path: Path) -> None:
    async with HealthStore(tmp_path / "health.db") as store:
        monitor = HealthMonitor(store=store, cluster=ClusterSettings(node="a"))
        with pytest.raises(ValueError, match="cluster mode needs PostgreSQL"):
            await monitor.start_monitoring()
        assert not monitor.running


async def test_a_node_whose_renewal_hangs_stops_checking_at_its_deadline(
    pg_url: str, targets: TargetServer
) -> None:
    """A renewal that neither succeeds nor fails (here its lease rows are locked by
    another session; a network cut without a reset hangs it alike) must not keep the
    node checking past its renew deadline: it stops then, and resumes once a renewal
    goes through."""
    services = [service("api", targets.url("/healthy"))]
    async with node(pg_url, "a", services) as (a, _):
        cluster = a.cluster
        assert cluster is not None
        await wait_for(lambda: "api" in cluster._running, 10)
        async with HealthStore(pg_url) as store, store.engine.connect() as conn:
            await conn.execute(
                text("SELECT 1 FROM service_leases WHERE node_id = :me FOR UPDATE"),
                {"me": cluster.node_id},
            )
            locked = time.monotonic()
            await wait_for(lambda: not cluster._running, 2 * LEASE)
            # Within a lease of the last renewal sent (at most a renew period before).
            assert time.monotonic() - locked <= cluster.settings.lease + 0.5
            hits = targets.hits("/healthy")
            await asyncio.sleep(0.5)
            assert targets.hits("/healthy") == hits  # no check while suspended
            await conn.rollback()
        await wait_for(lambda: "api" in cluster._running, 10)
