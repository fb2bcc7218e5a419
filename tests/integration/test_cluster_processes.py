"""Cluster mode with real processes: three `healthmon run --node` processes on one real
PostgreSQL server of the test's own, 60 services on local targets at 10 Hz.

One run goes through every fault in turn (a cluster takes seconds to start, so the
phases share it): SIGKILL, SIGTERM, SIGSTOP for twice the lease, a rolling restart,
and PostgreSQL restarted under the cluster. Everything is then proved from what the
database stored and what each node's subscriber heard (its `transition_heard` log
events): one node per service at a time, bounded gaps, fencing, and every committed
transition heard once by each node, in commit order.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from healthmon.cluster.historian import HISTORY_LEASE
from healthmon.model import HealthCheckResult, HealthStatus
from healthmon.store import HealthStore, Retention
from healthmon.store.engine import create_engine, database_url
from healthmon.store.retention import DAY
from healthmon.targets import TargetServer
from tests import postgres

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(240)]

SERVICES = 60
FLIPPING = 12  # services whose target alternates 200/503: the transitions under test
INTERVAL = 0.1
LEASE = 3.0
FAILOVER_BOUND = LEASE + INTERVAL
"""The issue's bound: a dead node's services checked by others within one lease and one
check interval (lease rows last 75 % of the lease: the takeover fits in the rest)."""
GAP_AFTER = 1.0
"""Seconds without a result that make a gap: short, so that failovers, the pause and the
database restart make some, each of which the writers must record."""
OLD = 10 * DAY
HANDOVER_BOUND = 1.5
"""A clean stop hands its services over "within a second or so" (the issue's words):
0.7-0.9 s measured on a machine of its own, up to 1.3 s with the full suite and other
sessions' tests running beside it (the hand-back's flush, the release, the claim and
the first check each wait their turn on busy event loops)."""


@dataclass
class Node:
    """One `healthmon run --node NAME` process and its log."""

    name: str
    log: Path
    process: subprocess.Popen[bytes]
    node_id: int | None = None
    stopped_at: float | None = None
    events: list[dict[str, Any]] = field(default_factory=list)

    def read_events(self) -> list[dict[str, Any]]:
        events = []
        for line in self.log.read_text().splitlines():
            with contextlib.suppress(ValueError):
                events.append(json.loads(line))
        self.events = events
        return events

    def find_node_id(self) -> int | None:
        for event in self.read_events():
            if event.get("event") == "cluster_joined":
                self.node_id = int(event["node_id"])
        return self.node_id


@dataclass
class Cluster:
    url: str
    config: Path
    folder: Path
    engine: AsyncEngine
    nodes: list[Node] = field(default_factory=list)
    started = 0
    created: float = field(default_factory=time.time)

    def start(self, name: str) -> Node:
        self.started += 1
        log = self.folder / f"{name}-{self.started}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-W", "error", "-m", "healthmon.cli", "run",
                 "--config", str(self.config), "--database", self.url, "--node", name,
                 "--log-format", "json", "--log-level", "info"],
                stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        node = Node(name, log, process)
        self.nodes.append(node)
        return node

    def live(self) -> list[Node]:
        return [node for node in self.nodes if node.process.poll() is None]

    async def query(self, sql: str, **params: Any) -> list[Any]:
        async with self.engine.connect() as conn:
            return list((await conn.execute(text(sql), params)).all())

    async def holders(self) -> dict[str, int | None]:
        rows = await self.query(
            "SELECT service, node_id FROM service_leases "
            "WHERE expires_at > extract(epoch from clock_timestamp()) AND service <> :history",
            history=HISTORY_LEASE,
        )
        return dict(rows)

    async def balanced(self, nodes: list[Node]) -> bool:
        """Every service held by one of `nodes`, each holding a fair share."""
        ids = {node.find_node_id() for node in nodes}
        if None in ids:
            return False
        held = await self.holders()
        counts = Counter(held.values())
        share = SERVICES / len(nodes)
        return (
            len(held) == SERVICES
            and set(counts) == ids
            and all(abs(count - share) < 1 for count in counts.values())
        )

    async def checked_by(self, node: Node, services: set[str], within: float = 1.0) -> bool:
        """Each of the services has a result of `node` committed in the last `within` s."""
        found = await self.results_since(time.time() - within)
        return all(any(n == node.node_id for _, n in found[name]) for name in services)

    async def results_since(self, since: float) -> dict[str, list[tuple[int, int]]]:
        """Each service's (ts_us, node_id) results since `since`, in time order."""
        rows = await self.query(
            "SELECT s.name, r.ts_us, r.node_id FROM check_results r "
            "JOIN services s ON s.id = r.service_id WHERE r.ts_us >= :since "
            "ORDER BY s.name, r.ts_us",
            since=int(since * 1e6),
        )
        found: dict[str, list[tuple[int, int]]] = defaultdict(list)
        for name, ts_us, node_id in rows:
            found[name].append((ts_us, node_id))
        return found


async def wait_until(condition: Callable[[], Awaitable[bool]], timeout: float, what: str) -> float:
    """Poll `condition` every 50 ms; the seconds it took. Fails naming `what`."""
    start = time.monotonic()
    while not await condition():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"{what}: not within {timeout} s")
        await asyncio.sleep(0.05)
    return time.monotonic() - start


def largest_gap(results: list[tuple[int, int]], since_us: int, until_us: int) -> float:
    """The longest time in [since, until] a service went without a result, in seconds."""
    times = [since_us, *(ts for ts, _ in results if since_us < ts < until_us), until_us]
    return max(b - a for a, b in itertools.pairwise(times)) / 1e6


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[postgres.LocalPostgres]:
    """A PostgreSQL server this test may stop and start (its log kept in tmp_path)."""
    server = postgres.LocalPostgres(
        settings=(*postgres.SETTINGS, "log_lock_waits=on", "deadlock_timeout=200ms")
    )
    try:
        server.start()
        yield server
    finally:
        with contextlib.suppress(OSError):
            (tmp_path / "postgres.log").write_bytes(server.log.read_bytes())
        server.delete()


@contextlib.asynccontextmanager
async def cluster_of(
    server: postgres.LocalPostgres, folder: Path, targets: TargetServer
) -> AsyncIterator[Cluster]:
    url = postgres.create_database(server.url)
    # Migrated once, before the nodes start, with a few results from OLD days ago (a
    # store that keeps them): the cluster's retention (7 days) prunes them.
    async with HealthStore(url, retention=Retention(400 * DAY, 400 * DAY, 400 * DAY)) as store:
        writer = store.writer()
        await writer.start()
        for number, k in itertools.product(range(3), range(5)):
            healthy = HealthStatus.HEALTHY
            writer.submit(HealthCheckResult(f"svc{number:02}", healthy, 1.0, time.time() - OLD + k))
        await writer.stop()
    services = []
    for number in range(SERVICES):
        path = f"/flip?period={0.6 + 0.1 * number:.1f}" if number < FLIPPING else "/healthy"
        services.append(
            f'[[services]]\nname = "svc{number:02}"\nservice_type = "http"\n'
            f'module_path = "t"\nhealth_check_url = "{targets.url(path)}"\n'
        )
    config = folder / "cluster.toml"
    config.write_text(
        f"[store]\ngap_after = {GAP_AFTER}\n\n[monitor]\ncheck_interval = {INTERVAL}\n\n"
        f"[cluster]\nlease = {LEASE}\nfeed_poll = 0.5\n\n" + "\n".join(services)
    )
    engine = create_engine(database_url(url))
    cluster = Cluster(url, config, folder, engine)
    try:
        yield cluster
    finally:
        for node in cluster.live():
            with contextlib.suppress(ProcessLookupError):
                os.kill(node.process.pid, signal.SIGCONT)
                node.process.kill()
            node.process.wait(timeout=10)
        await engine.dispose()


def stop(node: Node, how: signal.Signals = signal.SIGTERM) -> float:
    node.stopped_at = time.time()
    node.process.send_signal(how)
    return node.stopped_at


async def test_three_nodes_through_kill_stop_pause_rolling_restart_and_database_restart(
    own_server: postgres.LocalPostgres, tmp_path: Path, targets: TargetServer
) -> None:
    figures: dict[str, float] = {}
    async with cluster_of(own_server, tmp_path, targets) as cluster:
        a, b, c = (cluster.start(name) for name in "abc")
        await wait_until(lambda: cluster.balanced([a, b, c]), 60, "three nodes balanced")
        began = time.time()

        # SIGKILL: a's services resume elsewhere within the lease and one interval.
        a_services = {s for s, holder in (await cluster.holders()).items() if holder == a.node_id}
        await wait_until(lambda: cluster.checked_by(a, a_services), 15, "a checks its services")
        killed = stop(a, signal.SIGKILL)
        await wait_until(lambda: cluster.balanced([b, c]), 15, "b and c took a's services")

        async def resumed_elsewhere() -> bool:
            rows = await cluster.results_since(killed)
            return all(any(node != a.node_id for _, node in rows[name]) for name in a_services)

        await wait_until(resumed_elsewhere, 10, "a's services checked by b or c")
        # From the kill to each service's first result by another node (the issue's
        # bound: checked by the others within one lease plus one check interval).
        rows = await cluster.results_since(killed)
        gaps = [
            min(ts for ts, node in rows[name] if node != a.node_id) / 1e6 - killed
            for name in a_services
        ]
        figures["failover_max_s"] = max(gaps)
        assert max(gaps) <= FAILOVER_BOUND, sorted(gaps)

        # A new a joins; then SIGTERM b: a clean handover, within about a second.
        a = cluster.start("a")
        await wait_until(lambda: cluster.balanced([a, b, c]), 30, "a rejoined")
        b_services = {s for s, holder in (await cluster.holders()).items() if holder == b.node_id}
        await wait_until(lambda: cluster.checked_by(b, b_services), 15, "b checks its services")
        stopped = stop(b)
        assert b.process.wait(timeout=10) == 0
        await wait_until(lambda: cluster.balanced([a, c]), 10, "a and c took b's services")

        async def handed_over() -> bool:
            rows = await cluster.results_since(stopped)
            return all(any(node != b.node_id for _, node in rows[name]) for name in b_services)

        await wait_until(handed_over, 10, "b's services checked by a or c")
        rows = await cluster.results_since(stopped - 2)
        handover = max(
            largest_gap(rows[name], int((stopped - 1) * 1e6), int(time.time() * 1e6))
            for name in b_services
        )
        figures["handover_max_s"] = handover
        assert handover <= HANDOVER_BOUND

        # SIGSTOP c for twice its lease: a takes everything; c, resumed, writes nothing
        # for what it lost (proved below from every row), and rejoins.
        b = cluster.start("b")
        await wait_until(lambda: cluster.balanced([a, b, c]), 30, "b rejoined")
        c_services = {s for s, holder in (await cluster.holders()).items() if holder == c.node_id}
        await wait_until(lambda: cluster.checked_by(c, c_services), 15, "c checks its services")
        # Paused with results in hand, surely: c's lease rows locked a moment, its flush
        # waits for them (the fence's KEY SHARE); paused there, then let go. (Paused at a
        # random moment, c may hold no result at all: nothing would be left to fence.)
        async with cluster.engine.connect() as conn:
            await conn.execute(
                text("SELECT 1 FROM service_leases WHERE node_id = :c FOR UPDATE"),
                {"c": c.node_id},
            )

            async def c_flush_waits() -> bool:
                waiting = await cluster.query(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND query LIKE '%service_leases%FOR KEY SHARE%'"
                )
                return bool(waiting[0][0])

            await wait_until(c_flush_waits, 10, "c's flush waits for its leases")
            paused = stop(c, signal.SIGSTOP)
            await conn.rollback()
        await asyncio.sleep(2 * LEASE)
        os.kill(c.process.pid, signal.SIGCONT)
        resumed = time.time()
        await wait_until(lambda: cluster.balanced([a, b, c]), 30, "c rejoined after its pause")
        await asyncio.sleep(0.5)
        rows = await cluster.results_since(paused)
        # c claimed some back once it had rejoined (when, its log says); between another
        # node's first result and that claim, nothing of c's was stored: what it took
        # on waking, before it noticed, was fenced.
        reclaimed: dict[str, float] = {}
        for event in c.read_events():
            if event.get("event") == "cluster_leases_claimed":
                at = datetime.fromisoformat(event["timestamp"]).timestamp()
                for name in event["services"]:
                    if at > resumed:
                        reclaimed.setdefault(name, at)
        late = []
        for name in c_services:
            taken_over = min(ts for ts, node in rows[name] if node != c.node_id) / 1e6
            late += [
                (name, ts / 1e6 - taken_over)
                for ts, node in rows[name]
                if node == c.node_id and taken_over < ts / 1e6 < reclaimed.get(name, math.inf)
            ]
        assert late == []

        # Rolling restart: each node in turn, the next once the cluster is balanced.
        rolling_from = time.time()
        for name in "abc":
            old = next(node for node in cluster.live() if node.name == name)
            stop(old)
            assert old.process.wait(timeout=10) == 0
            cluster.start(name)
            live = cluster.live()
            await wait_until(lambda: cluster.balanced(live), 30, f"{name} restarted")  # noqa: B023 - awaited at once
        rows = await cluster.results_since(rolling_from)
        rolling = max(
            largest_gap(rows[name], int(rolling_from * 1e6), int(time.time() * 1e6))
            for name in rows
        )
        figures["rolling_restart_max_gap_s"] = rolling
        assert rolling <= FAILOVER_BOUND

        # PostgreSQL restarted under the cluster: every node recovers.
        own_server.stop()
        await asyncio.sleep(2.0)
        own_server.start()
        restarted = time.time()

        async def all_checked_again() -> bool:
            found = await cluster.results_since(restarted)
            return len(found) == SERVICES

        figures["database_restart_recovery_s"] = await wait_until(
            all_checked_again, 30, "every service checked again after the database restart"
        )
        live = cluster.live()
        await wait_until(lambda: cluster.balanced(live), 30, "balanced after the restart")
        await asyncio.sleep(1.0)

        async def a_minute_of_the_run_closed() -> bool:
            (rows,) = await cluster.query(
                "SELECT count(*) FROM result_minutes WHERE start >= :since",
                since=cluster.created // 60 * 60,
            )
            return bool(rows[0] >= SERVICES)

        # (A minute closes a few seconds after its end: the run may not have closed one
        # with results of every service yet, the nodes' start taking long under load.)
        figures["waited_for_a_minute_s"] = await wait_until(
            a_minute_of_the_run_closed, 90, "a minute of the run closed"
        )
        for node in cluster.live():
            stop(node)
        for node in cluster.nodes:
            node.process.wait(timeout=15)
        ended = time.time()

        # -- proofs from the stored rows -------------------------------------------------
        assert await cluster.query("SELECT count(*) FROM check_results WHERE node_id IS NULL") == [
            (0,)
        ]
        # No interleaving: each change of the node a service's results come from (in
        # time order) needs a claim of its lease, which bumps its epoch.
        epochs = dict(await cluster.query("SELECT service, epoch FROM service_leases"))
        rows = await cluster.results_since(began - 60)
        for name, found in rows.items():
            changes = sum(1 for x, y in itertools.pairwise(found) if x[1] != y[1])
            assert changes <= epochs[name] - 1, (name, changes, epochs[name])
        # Every transition each node's subscriber heard is stored, heard once, and the
        # heard ones are a run of the feed without a hole, in commit order.
        stored = await cluster.query(
            "SELECT t.seq, s.name, t.ts FROM status_transitions t "
            "JOIN services s ON s.id = t.service_id ORDER BY t.seq"
        )
        assert [seq for seq, *_ in stored] == list(range(1, len(stored) + 1))
        seq_of = {(name, ts): seq for seq, name, ts in stored}
        assert len(stored) > 50, "too few transitions to prove anything"
        heard_total = 0
        for node in cluster.nodes:
            events = node.read_events()
            assert not [e for e in events if e.get("level") in ("error", "critical")
                        and e.get("event") not in ("cluster_leases_suspended",
                                                   "store_write_failed")], node.name  # fmt: skip
            heard = [
                seq_of.get((e["service"], e["at"]))
                for e in events
                if e.get("event") == "transition_heard"
            ]
            assert None not in heard, f"{node.name} heard a transition that is not stored"
            seqs = [s for s in heard if s is not None]
            if node.process.returncode == 0:
                assert seqs, f"{node.name} heard nothing"
            if seqs:
                assert seqs == list(range(seqs[0], seqs[-1] + 1)), f"{node.name}: a hole"
            heard_total += len(seqs)
        # The paused node held results for the services it lost: refused, counted, logged.
        fenced = [
            e
            for e in c.read_events()
            if e.get("event") == "results_fenced"
            and datetime.fromisoformat(e["timestamp"]).timestamp() > paused
        ]
        figures["fenced_results_after_pause"] = sum(e["results"] for e in fenced)
        assert figures["fenced_results_after_pause"] > 0
        assert {name for e in fenced for name in e["services"]} <= c_services
        # -- the history, kept by the cluster ---------------------------------------------
        figures.update(await check_history(cluster, began))
        figures["transitions"] = len(stored)
        figures["heard_total"] = heard_total
        figures["run_s"] = ended - began
    print("cluster figures:", json.dumps({k: round(v, 3) for k, v in figures.items()}))


async def check_history(cluster: Cluster, began: float) -> dict[str, float]:
    """Aggregates are the sums of the raw rows, the gaps those the raw rows make, old
    results pruned, the history lease taken over; some figures."""
    marks = {
        tier: (since, until)
        for tier, since, until in await cluster.query(
            "SELECT tier, complete_since, complete_until FROM history_coverage"
        )
    }
    raw_since, minute_mark = marks["raw"][0], marks["minute"][1]
    hour_mark, day_mark = marks["hour"][1], marks["day"][1]
    assert minute_mark > cluster.created  # minutes of the run were closed
    assert raw_since > time.time() - OLD  # retention pruned the old results
    assert await cluster.query(
        "SELECT count(*) FROM check_results WHERE ts_us < :cut", cut=int(raw_since * 1e6)
    ) == [(0,)]
    # Minutes: the raw rows' counts, latencies and extremes, none past the mark.
    raw = await cluster.query(
        "SELECT service_id, floor(ts_us / 60e6) * 60 AS m, count(*) FILTER (WHERE status = 0), "
        "count(*), count(*) FILTER (WHERE answered), "
        "CAST(coalesce(sum(response_time_us) FILTER (WHERE answered), 0) AS float8) / 1000, "
        "CAST(min(response_time_us) FILTER (WHERE answered) AS float8) / 1000, "
        "CAST(max(response_time_us) FILTER (WHERE answered) AS float8) / 1000 "
        "FROM check_results WHERE ts_us >= :since AND ts_us < :until GROUP BY 1, 2 ORDER BY 1, 2",
        since=math.ceil(raw_since / 60) * 60_000_000,
        until=int(minute_mark * 1e6),
    )
    minutes = await cluster.query(
        "SELECT service_id, start, healthy, healthy + unknown + degraded + unhealthy, "
        "answered, latency_sum, latency_min, latency_max FROM result_minutes "
        "WHERE start >= :since ORDER BY 1, 2",
        since=math.ceil(raw_since / 60) * 60,
    )
    assert len(raw) >= SERVICES
    assert [row[:5] for row in minutes] == [row[:5] for row in raw]
    for got, want in zip(minutes, raw, strict=True):
        assert got[5] == pytest.approx(want[5], rel=1e-9)  # (summed in another order)
        assert got[6:] == want[6:]  # us / 1000 in Python and in SQL: the same float
    # Hours and days: the sums of the tier below (the old results' hour and day among
    # them: the closer closed their day).
    for lower, tier, width, mark in (("minutes", "hours", 3600, hour_mark),
                                     ("hours", "days", 86_400, day_mark)):  # fmt: skip
        assert await cluster.query(
            f"SELECT service_id, start, healthy, answered FROM result_{tier} ORDER BY 1, 2"  # noqa: S608
        ) == await cluster.query(
            f"SELECT service_id, floor(start / {width}) * {width}, sum(healthy), "  # noqa: S608
            f"sum(answered) FROM result_{lower} WHERE start < :mark GROUP BY 1, 2 ORDER BY 1, 2",
            mark=mark,
        ), tier
    assert day_mark > time.time() - OLD  # the old results' day was closed
    # Gaps: every span of more than GAP_AFTER between two results of a service in the
    # run, recorded once, and no other.
    times: dict[int, list[int]] = defaultdict(list)
    for service_id, ts_us in await cluster.query(
        "SELECT service_id, ts_us FROM check_results WHERE ts_us >= :since ORDER BY 1, 2",
        since=int((began - 60) * 1e6),
    ):
        times[service_id].append(ts_us)
    expected = sorted(
        (sid, a, b)
        for sid, found in times.items()
        for a, b in itertools.pairwise(found)
        if b - a > GAP_AFTER * 1e6
    )
    first = {sid: found[0] for sid, found in times.items()}
    stored = sorted(
        (sid, round(start * 1e6), round(end * 1e6))
        for sid, start, end in await cluster.query(
            "SELECT service_id, start_ts, end_ts FROM result_gaps"
        )
        if round(start * 1e6) >= first.get(sid, 0)
    )
    assert stored == expected
    assert expected, "no gap to prove anything"
    # The history lease changed hands (the rolling restart stopped every node).
    takers = [
        node.name
        for node in cluster.nodes
        if any(e.get("event") == "cluster_history_lease_taken" for e in node.read_events())
    ]
    assert len(takers) >= 2, takers
    return {
        "gaps": len(expected),
        "minutes_checked": len(raw),
        "history_takers": len(takers),
    }


def run_node(url: str, config: Path, log: Path, *extra: str) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-W", "error", "-m", "healthmon.cli", "run", "--config",
             str(config), "--database", url, "--log-format", "json", *extra],
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip


async def started(process: subprocess.Popen[bytes], log: Path) -> None:
    """Wait until the node logs that it monitors (or fail if it exits)."""

    def said() -> str:
        return log.read_text()

    async def up() -> bool:
        assert process.poll() is None, said()
        return '"monitor_started"' in said()

    await wait_until(up, 60, f"{log.name} started")


@pytest.mark.timeout(120)
async def test_single_nodes_and_clusters_do_not_share_a_database(
    pg_url: str, tmp_path: Path, targets: TargetServer
) -> None:
    """A single node holds the database: a second single node and a cluster node are
    refused, naming it; once it is killed (SIGKILL: no clean stop), a new one starts at
    once. A cluster holds it likewise against a single node, not against its own."""
    async with HealthStore(pg_url):
        pass
    config = tmp_path / "one.toml"
    config.write_text(
        '[monitor]\ncheck_interval = 0.5\n\n[[services]]\nname = "api"\n'
        f'service_type = "http"\nmodule_path = "t"\nhealth_check_url = '
        f'"{targets.url("/healthy")}"\n'
    )
    first = run_node(pg_url, config, tmp_path / "first.log")
    try:
        await started(first, tmp_path / "first.log")
        for name, extra in (("second", ()), ("node", ("--node", "x"))):
            refused = run_node(pg_url, config, tmp_path / f"{name}.log", *extra)
            assert await asyncio.to_thread(refused.wait, 60) == 1
            said = (tmp_path / f"{name}.log").read_text()
            assert "cannot start" in said, said
            assert f"healthmon single node {socket.gethostname()}:{first.pid}" in said, said
        first.kill()
        first.wait(timeout=10)
        again = run_node(pg_url, config, tmp_path / "again.log")
        await started(again, tmp_path / "again.log")
        again.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(again.wait, 30) == 0
        # A cluster: a second node joins it; a single node is refused.
        a = run_node(pg_url, config, tmp_path / "a.log", "--node", "a")
        b = run_node(pg_url, config, tmp_path / "b.log", "--node", "b")
        try:
            await started(a, tmp_path / "a.log")
            await started(b, tmp_path / "b.log")
            single = run_node(pg_url, config, tmp_path / "single.log")
            assert await asyncio.to_thread(single.wait, 60) == 1
            said = (tmp_path / "single.log").read_text()
            assert "another healthmon node already writes" in said, said
            assert "healthmon cluster node a (" in said
            assert "healthmon cluster node b (" in said
        finally:
            for node in (a, b):
                node.send_signal(signal.SIGTERM)
                node.wait(timeout=30)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait(timeout=10)
