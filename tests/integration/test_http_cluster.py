"""Cluster mode over HTTP: two nodes on a real PostgreSQL database, each serving its
HTTP face on a real socket. The nodes endpoint lists both as `healthmon status`
does, every service names the node checking it, `/metrics` has the node's and the
cluster's families (valid for promtool), the cluster paths pass schemathesis, and a
node that stops shows as down while the other takes its services over."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from healthmon import HealthMonitor, HealthStore
from healthmon.cli.status import read_status
from healthmon.cluster import ClusterSettings
from healthmon.http import HttpApi, HttpServer, HttpSettings
from healthmon.model import ServiceDefinition
from healthmon.targets import TargetServer
from tests.conftest import wait_for
from tests.integration.http_helpers import TOKEN
from tests.integration.test_http_fuzz import CHECKS
from tests.integration.test_http_metrics import PROMTOOL, PROMTOOL_REQUIRED

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(90)]

NAMES = ["alpha", "beta", "gamma", "delta"]


@dataclass
class Node:
    monitor: HealthMonitor
    client: httpx.AsyncClient
    base: str

    @property
    def held(self) -> set[str]:
        assert self.monitor.cluster is not None
        return set(self.monitor.cluster.held)

    async def get(self, path: str) -> httpx.Response:
        response = await self.client.get(path)
        assert response.status_code == 200, response.text
        return response


@contextlib.asynccontextmanager
async def served_node(url: str, name: str, target: str) -> AsyncIterator[Node]:
    async with HealthStore(url) as store:
        monitor = HealthMonitor(
            0.1, store=store, cluster=ClusterSettings(node=name, lease=2.0, feed_poll=0.2)
        )
        for service in NAMES:
            monitor.add_service(ServiceDefinition(service, "http", "tests", [], target))
        async with monitor:
            # Short waits: a fuzzed blocking query must not hold the run.
            settings = HttpSettings(
                port=0, token=TOKEN, metrics_max_age=0, max_wait=1.0, default_wait=0.5
            )
            api = HttpApi(monitor, store, settings)
            async with HttpServer(api) as server:
                base = f"http://127.0.0.1:{server.port}"
                headers = {"Authorization": f"Bearer {TOKEN}"}
                async with httpx.AsyncClient(base_url=base, headers=headers, timeout=30) as client:
                    yield Node(monitor, client, base)


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def _eventually(check: Callable[[], Awaitable[bool]], timeout: float = 15.0) -> None:
    """Wait until `check()` is true (it reads over HTTP, so not tests.conftest's
    wait_for, which takes a plain function)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.1)


async def test_nodes_owners_and_metrics_over_http(
    pg_url: str, targets: TargetServer, tmp_path: Path
) -> None:
    target = targets.url("/healthy")
    async with served_node(pg_url, "a", target) as a, served_node(pg_url, "b", target) as b:
        await wait_for(lambda: len(a.held) == len(b.held) == 2, timeout=20)
        await wait_for(
            lambda: all(a.monitor.health_cache.get(n) is not None for n in NAMES), timeout=10
        )

        # The nodes, as `healthmon status` shows them (the same read).
        async def both_listed() -> bool:
            body = (await a.get("/api/v1/cluster/nodes")).json()
            return {n["name"]: n["services"] for n in body["nodes"]} == {"a": 2, "b": 2}

        await _eventually(both_listed)
        body = (await b.get("/api/v1/cluster/nodes")).json()
        assert body["clustered"] is True
        assert body["node"] == "b"
        assert [n["this"] for n in body["nodes"]] == [False, True]
        assert all(n["alive"] and n["stopped_at"] is None for n in body["nodes"])
        assert all(0 <= n["heartbeat_age"] < 5 for n in body["nodes"])
        async with HealthStore(pg_url) as reader:
            status = await read_status(reader, "pg")
        assert status.cluster is not None
        assert [(n.name, n.node_id) for n in status.cluster.nodes] == [
            (n["name"], n["id"]) for n in body["nodes"]
        ]

        # Each service's node, on either node's API (the whole fleet in each cache).
        owners = dict.fromkeys(a.held, "a") | dict.fromkeys(b.held, "b")
        for node in (a, b):
            cluster = (await node.get("/api/v1/cluster")).json()
            assert {s["name"]: s["node"] for s in cluster["services"]} == owners
            one = (await node.get("/api/v1/services/gamma")).json()
            assert one["node"] == owners["gamma"]

        # /metrics: this node's part and the cluster's, one series per node.
        page = (await a.get("/metrics")).text
        samples = _samples(page)
        assert samples[("healthmon_node_info", (("node", "a"),))] == 1
        assert samples[("healthmon_node_owned_services", ())] == 2
        assert samples[("healthmon_node_checked_services", ())] == 2
        assert samples[("healthmon_node_last_renew_timestamp_seconds", ())] > 0
        assert samples[("healthmon_cluster_nodes", (("state", "alive"),))] == 2
        assert samples[("healthmon_cluster_nodes", (("state", "down"),))] == 0
        for name in ("a", "b"):
            assert samples[("healthmon_cluster_node_up", (("node", name),))] == 1
            assert samples[("healthmon_cluster_node_owned_services", (("node", name),))] == 2
        assert samples[("healthmon_store_fenced_results_total", ())] == 0
        if PROMTOOL is not None or PROMTOOL_REQUIRED:
            assert PROMTOOL is not None, "HEALTHMON_REQUIRE_PROMTOOL=1 but promtool is not on PATH"
            checked = await asyncio.to_thread(
                subprocess.run,
                [PROMTOOL, "check", "metrics"],
                input=page.encode(),
                capture_output=True,
                check=False,
                timeout=30,
            )
            said = checked.stdout.decode() + checked.stderr.decode()
            assert checked.returncode == 0, said
            assert not said.strip(), said

        # The cluster's paths answer as their schema says (in cluster mode).
        schemathesis = Path(sys.executable).with_name("schemathesis")
        process = await asyncio.create_subprocess_exec(
            str(schemathesis),
            "run",
            f"{a.base}/api/v1/openapi.json",
            "--header",
            f"Authorization: Bearer {TOKEN}",
            "--checks",
            CHECKS,
            "--include-path-regex",
            "^/api/v1/(cluster|cluster/nodes|services/\\{name\\})$",
            "--phases",
            "examples,coverage,fuzzing",  # stateful: 40 s more, the SQLite fuzz test has it
            "--max-examples",
            "5",
            "--seed",
            "14",
            "--request-timeout",
            "10",
            "--no-color",
            cwd=tmp_path,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        fuzzed, _ = await process.communicate()
        assert process.returncode == 0, fuzzed.decode(errors="replace")


async def test_a_stopped_node_shows_down_and_its_services_move(
    pg_url: str, targets: TargetServer
) -> None:
    target = targets.url("/healthy")
    async with served_node(pg_url, "a", target) as a:
        async with served_node(pg_url, "b", target) as b:
            await wait_for(lambda: len(a.held) == len(b.held) == 2, timeout=20)
        await wait_for(lambda: len(a.held) == 4, timeout=20)

        async def b_down() -> bool:
            body = (await a.get("/api/v1/cluster/nodes")).json()
            nodes = {n["name"]: n for n in body["nodes"]}
            return (
                not nodes["b"]["alive"]
                and nodes["b"]["stopped_at"] is not None
                and nodes["b"]["stopped_time"] is not None
                and nodes["a"]["services"] == 4
            )

        await _eventually(b_down)
        cluster = (await a.get("/api/v1/cluster")).json()
        assert {s["node"] for s in cluster["services"]} == {"a"}
        samples = _samples((await a.get("/metrics")).text)
        assert samples[("healthmon_cluster_nodes", (("state", "down"),))] == 1
        assert samples[("healthmon_cluster_node_up", (("node", "b"),))] == 0
        assert samples[("healthmon_node_owned_services", ())] == 4
