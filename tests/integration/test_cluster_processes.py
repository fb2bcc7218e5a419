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

from healthmon.store import HealthStore
from healthmon.store.engine import create_engine, database_url
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
            "WHERE expires_at > extract(epoch from clock_timestamp())"
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
    async with HealthStore(url):  # migrated once, before the nodes start
        pass
    services = []
    for number in range(SERVICES):
        path = f"/flip?period={0.6 + 0.1 * number:.1f}" if number < FLIPPING else "/healthy"
        services.append(
            f'[[services]]\nname = "svc{number:02}"\nservice_type = "http"\n'
            f'module_path = "t"\nhealth_check_url = "{targets.url(path)}"\n'
        )
    config = folder / "cluster.toml"
    config.write_text(
        f"[monitor]\ncheck_interval = {INTERVAL}\n\n"
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
        paused = stop(c, signal.SIGSTOP)
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
        # Fenced results were counted and logged by the node that was paused.
        fenced = [e for e in c.read_events() if e.get("event") == "results_fenced"]
        figures["fenced_results_after_pause"] = sum(e["results"] for e in fenced)
        figures["transitions"] = len(stored)
        figures["heard_total"] = heard_total
        figures["run_s"] = ended - began
    print("cluster figures:", json.dumps({k: round(v, 3) for k, v in figures.items()}))


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
