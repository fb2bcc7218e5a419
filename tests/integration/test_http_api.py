"""The HTTP face over real sockets: every endpoint, blocking queries, auth, bad input."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import json
import logging
import socket
import sqlite3
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from healthmon import ServiceDefinition
from healthmon.errors import ServeError
from healthmon.http import HttpApi, HttpServer, HttpSettings, routes
from healthmon.pace import Pace
from healthmon.targets import TargetServer
from tests.conftest import wait_for
from tests.integration.http_helpers import TOKEN, Served, serve

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(60)]


async def _ready(served: Served) -> None:
    """The web service's first transition (None -> healthy) is committed and read."""
    await wait_for(lambda: served.api.feed.latest("web") is not None)


async def test_cluster_and_services_show_the_monitor_now(
    targets: TargetServer, db_path: Path
) -> None:
    async with serve(db_path, targets.url("/healthy")) as served:
        await _ready(served)
        down = await served.flip("db", "unhealthy")
        response = await served.client.get("/api/v1/cluster")
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        assert int(response.headers["X-Healthmon-Index"]) == down.id
        body = response.json()
        assert body["status"] == "unhealthy"
        assert body["index"] == down.id
        assert body["counts"] == {"healthy": 1, "unhealthy": 1, "degraded": 0, "unknown": 0}
        services = {service["name"]: service for service in body["services"]}
        assert set(services) == {"web", "agent:db"}
        web = services["web"]
        assert web["status"] == "healthy"
        assert web["kind"] == "http"
        assert web["url"] == targets.url("/healthy")
        assert web["interval"] == 0.1
        assert web["last_check"]["status"] == "healthy"
        assert web["last_check"]["details"] == {"status": "ok"}
        db = services["agent:db"]
        assert (db["status"], db["kind"], db["transition_id"]) == ("unhealthy", "agent", down.id)
        assert db["since"] == down.transition.timestamp

        summary = (await served.client.get("/api/v1/cluster/status")).json()
        assert summary == {key: body[key] for key in summary}
        assert summary["service_count"] == 2

        one = await served.client.get("/api/v1/services/agent:db")
        assert one.status_code == 200
        assert one.json()["status"] == "unhealthy"
        assert one.json()["node"] is None  # not in cluster mode

        # Outside cluster mode: no nodes (tests/integration/test_http_cluster.py has them).
        nodes = await served.client.get("/api/v1/cluster/nodes")
        assert nodes.status_code == 200
        assert nodes.json() == {"clustered": False, "node": None, "nodes": []}


async def test_the_cluster_shows_each_change_after_an_earlier_answer(db_path: Path) -> None:
    # Each service's JSON is kept between requests: a change must replace it.
    async with serve(db_path) as served:
        await served.flip("db", "healthy")
        before = (await served.client.get("/api/v1/cluster")).json()["services"]
        down = await served.flip("db", "unhealthy")
        after = (await served.client.get("/api/v1/cluster")).json()["services"]
        assert [(s["status"], s["transition_id"]) for s in before] == [("healthy", down.id - 1)]
        assert [(s["status"], s["transition_id"]) for s in after] == [("unhealthy", down.id)]
        await served.monitor.check_agents_health(served.agents)  # the same status again
        again = (await served.client.get("/api/v1/cluster")).json()["services"]
        assert again[0]["last_check"]["ts"] > after[0]["last_check"]["ts"]


async def test_a_large_cluster_is_answered_whole_and_in_order(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rests = 0

    class CountedPace(Pace):
        async def rest(self) -> None:
            nonlocal rests
            rests += 1
            await super().rest()

    # A slice of no time: the loop let go after each service shaped.
    monkeypatch.setattr(routes, "Pace", lambda: CountedPace(0.0))
    async with serve(db_path) as served:
        served.agents.health.update({f"n{i:04d}": "healthy" for i in range(600)})
        served.agents.health["n0599"] = "degraded"
        await served.monitor.check_agents_health(served.agents)
        served.monitor.add_service(ServiceDefinition("quiet", "http", "m"))  # no URL: unchecked
        body = (await served.client.get("/api/v1/cluster")).json()
        names = [f"agent:n{i:04d}" for i in range(600)]
        assert [s["name"] for s in body["services"]] == ["quiet", *names]
        assert body["services"][-1]["status"] == "degraded"
        assert body["counts"] == {"healthy": 599, "unhealthy": 0, "degraded": 1, "unknown": 0}
        assert body["service_count"] == 601  # the registered one without a result too
        assert rests >= 600


async def test_history_endpoints_answer_as_the_store_does(
    targets: TargetServer, db_path: Path
) -> None:
    async with serve(db_path, targets.url("/healthy")) as served:
        await _ready(served)
        await served.flip("db", "unhealthy")
        await served.flip("db", "healthy")
        await wait_for(lambda: (served.monitor.store_stats or _never()).committed_results >= 10)
        until = time.time()
        since = until - 3600
        window = {"since": str(since), "until": str(until)}

        response = await served.client.get("/api/v1/services/web/report", params=window)
        assert response.status_code == 200
        report = response.json()
        expected = await served.store.report("web", since, until)
        assert report["counts"]["total"] == expected.counts.total > 0
        assert report["uptime"] == expected.uptime == 1.0
        assert report["latency_ms"]["count"] == expected.latency.count

        db_report = (await served.client.get("/api/v1/services/agent:db/report")).json()
        assert len(db_report["incidents"]) == 1
        assert db_report["incidents"][0]["worst_status"] == "unhealthy"

        reports = (await served.client.get("/api/v1/reports", params=window)).json()["reports"]
        assert {r["service"] for r in reports} == {"web", "agent:db"}

        series = await served.client.get(
            "/api/v1/services/web/series", params={**window, "bucket": "10m"}
        )
        assert series.status_code == 200
        buckets = series.json()["buckets"]
        assert len(buckets) == 6
        assert sum(b["counts"]["total"] for b in buckets) == expected.counts.total
        fleet = (
            await served.client.get("/api/v1/series", params={**window, "bucket": "1h"})
        ).json()
        assert fleet["service"] is None
        assert len(fleet["buckets"]) == 1

        store = (await served.client.get("/api/v1/store")).json()
        assert store["writing"] is True
        assert store["healthy"] is True
        assert store["committed_transitions"] == 3
        missed = (await served.client.get("/api/v1/missed-checks")).json()
        assert missed["services"] == {"web": 0}
        assert missed["total"] == 0


def _never() -> Any:
    raise AssertionError("the monitor has no writer")


async def test_transitions_are_paged_in_commit_order(db_path: Path) -> None:
    async with serve(db_path) as served:
        made = [await served.flip("a", h) for h in ("healthy", "unhealthy", "healthy")]
        made += [await served.flip("b", "degraded")]
        page = (await served.client.get("/api/v1/transitions", params={"limit": 2})).json()
        assert [t["id"] for t in page["transitions"]] == [made[0].id, made[1].id]
        assert page["next_after"] == made[1].id
        rest = await served.client.get(
            "/api/v1/transitions", params={"after": page["next_after"], "limit": 10}
        )
        assert [t["id"] for t in rest.json()["transitions"]] == [made[2].id, made[3].id]
        assert rest.json()["transitions"][-1] == {
            "id": made[3].id,
            "service": "agent:b",
            "ts": made[3].transition.timestamp,
            "time": rest.json()["transitions"][-1]["time"],
            "from_status": None,
            "to_status": "degraded",
            "cause": None,
        }
        ahead = await served.client.get(
            "/api/v1/transitions", params={"after": made[3].id + 50, "wait": "30s"}
        )
        assert ahead.json() == {"transitions": [], "next_after": made[3].id}
        only_b = await served.client.get("/api/v1/transitions", params={"service": "agent:b"})
        assert [t["id"] for t in only_b.json()["transitions"]] == [made[3].id]
        # The memory ring and the store give the same pages.
        served.api.feed._keep = 1
        await served.flip("a", "unhealthy")
        again = (await served.client.get("/api/v1/transitions", params={"limit": 2})).json()
        assert again == page


async def test_a_transitions_long_poll_wakes_on_the_next_commit(db_path: Path) -> None:
    async with serve(db_path) as served:
        first = await served.flip("a", "healthy")
        poll = asyncio.create_task(
            served.client.get("/api/v1/transitions", params={"after": first.id, "wait": "20s"})
        )
        await wait_for(lambda: served.api.waiting.held == 1)
        second = await served.flip("a", "unhealthy")
        body = (await poll).json()
        assert [t["id"] for t in body["transitions"]] == [second.id]


async def test_a_blocking_query_returns_once_a_transition_is_committed(db_path: Path) -> None:
    async with serve(db_path) as served:
        first = await served.flip("a", "healthy")
        started = time.monotonic()
        poll = asyncio.create_task(
            served.client.get("/api/v1/cluster", params={"index": first.id, "wait": "30s"})
        )
        await wait_for(lambda: served.api.waiting.held == 1)
        assert not poll.done()
        change = await served.flip("a", "unhealthy")
        response = await poll
        assert time.monotonic() - started < 10
        assert int(response.headers["X-Healthmon-Index"]) == change.id
        assert response.json()["status"] == "unhealthy"
        # Never before the commit: the transition it woke for is in the database.
        stored = await served.store.transitions_after(first.id)
        assert [record.id for record in stored] == [change.id]


async def test_a_blocking_query_ends_with_its_wait_or_at_once(db_path: Path) -> None:
    async with serve(db_path) as served:
        record = await served.flip("a", "healthy")
        started = time.monotonic()
        response = await served.client.get(
            "/api/v1/cluster/status", params={"index": record.id, "wait": "0.3s"}
        )
        assert 0.25 < time.monotonic() - started < 5
        assert response.json()["index"] == record.id
        # An index below the server's answers at once; one ahead of it too (the
        # database was replaced: the client starts over, as with Consul).
        for index in (record.id - 1, record.id + 100):
            started = time.monotonic()
            await served.client.get(
                "/api/v1/cluster/status", params={"index": index, "wait": "30s"}
            )
            assert time.monotonic() - started < 5


async def test_a_service_blocking_query_waits_for_that_service(db_path: Path) -> None:
    async with serve(db_path) as served:
        a = await served.flip("a", "healthy")
        await served.flip("b", "healthy")
        poll = asyncio.create_task(
            served.client.get("/api/v1/services/agent:a", params={"index": a.id, "wait": "30s"})
        )
        await wait_for(lambda: served.api.waiting.held == 1)
        await served.flip("b", "unhealthy")  # another service's change does not answer it
        await asyncio.sleep(0.2)
        assert not poll.done()
        change = await served.flip("a", "degraded")
        body = (await poll).json()
        assert (body["status"], body["transition_id"]) == ("degraded", change.id)


async def test_results_are_streamed_as_the_cli_exports_them(
    targets: TargetServer, db_path: Path
) -> None:
    async with serve(db_path, targets.url("/healthy")) as served:
        await _ready(served)
        await served.flip("db", "unhealthy")
        await wait_for(lambda: (served.monitor.store_stats or _never()).committed_results >= 8)
        until = time.time()
        params = {"since": "1h", "until": str(until)}
        stored = [r async for r in served.store.stream_results(None, until - 3600, until)]
        lines = await served.client.get("/api/v1/results", params={**params, "format": "jsonl"})
        assert lines.headers["content-type"] == "application/x-ndjson"
        rows = [json.loads(line) for line in lines.text.splitlines()]
        assert [(r["service"], r["ts"], r["status"]) for r in rows] == [
            (r.service_name, r.timestamp, r.status.value) for r in stored
        ]
        assert list(rows[0]) == [
            "service",
            "ts",
            "time",
            "status",
            "response_time_ms",
            "error",
            "details",
        ]
        table = await served.client.get("/api/v1/results", params={**params, "service": "web"})
        assert table.headers["content-type"] == "text/csv; charset=utf-8"
        parsed = list(csv.DictReader(io.StringIO(table.text)))
        web = [r for r in stored if r.service_name == "web"]
        assert [float(r["ts"]) for r in parsed] == [r.timestamp for r in web]
        assert json.loads(parsed[0]["details"]) == {"status": "ok"}


async def test_an_export_pages_through_more_than_one_page(db_path: Path) -> None:
    async with serve(db_path) as served:
        for i in range(1200):  # more than a page (500), with no store transaction between
            served.agents.health["many"] = "healthy" if i % 2 else "degraded"
            await served.monitor.check_agents_health(served.agents)
        await wait_for(lambda: (served.monitor.store_stats or _never()).pending_results == 0)
        await wait_for(lambda: (served.monitor.store_stats or _never()).committed_results >= 1200)
        response = await served.client.get(
            "/api/v1/results", params={"service": "agent:many", "format": "jsonl"}
        )
        timestamps = [json.loads(line)["ts"] for line in response.text.splitlines()]
        assert len(timestamps) == 1200
        assert timestamps == sorted(set(timestamps))


async def test_liveness_readiness_and_openapi_need_no_token(db_path: Path) -> None:
    async with serve(db_path) as served, httpx.AsyncClient(base_url=served.base) as anonymous:
        assert (await anonymous.get("/livez")).json() == {"status": "alive"}
        ready = await anonymous.get("/readyz")
        assert (ready.status_code, ready.json()) == (200, {"ready": True, "reasons": []})
        document = (await anonymous.get("/api/v1/openapi.json")).json()
        assert document["openapi"].startswith("3.1")
        assert "/api/v1/events" in document["paths"]
        for path in ("/api/v1/cluster", "/metrics", "/api/v1/events", "/api/v1/results"):
            refused = await anonymous.get(path)
            assert refused.status_code == 401, path
            assert refused.headers["WWW-Authenticate"] == 'Bearer realm="healthmon"'
            assert refused.json()["error"] == "unauthorized"
        wrong = await anonymous.get(
            "/api/v1/cluster", headers={"Authorization": "Bearer " + TOKEN[:-1] + "x"}
        )
        assert wrong.status_code == 401
        basic = await anonymous.get("/api/v1/cluster", headers={"Authorization": TOKEN})
        assert basic.status_code == 401


async def test_readiness_fails_once_the_monitor_stops(db_path: Path) -> None:
    async with serve(db_path) as served:
        await served.monitor.stop_monitoring()
        response = await served.client.get("/readyz")
        assert response.status_code == 503
        assert response.json() == {"ready": False, "reasons": ["the monitor is not running"]}
        assert (await served.client.get("/api/v1/store")).json() == {
            "writing": False,
            "healthy": None,
        }


BAD_INPUT = [
    ("/api/v1/cluster?index=-1", 400, "index must be between 0 and"),
    ("/api/v1/cluster?index=abc", 400, "index must be an integer, got 'abc'"),
    ("/api/v1/cluster?index=1&wait=11m", 400, "wait must be at most 600 s"),
    ("/api/v1/cluster?index=1&wait=soon", 400, "wait: 'soon' is not a duration"),
    ("/api/v1/cluster?wait=1s", 400, "wait needs index"),
    ("/api/v1/cluster?index=1&index=2", 400, "index is given 2 times"),
    ("/api/v1/cluster?sinse=1h", 400, "unknown query parameter 'sinse'"),
    ("/api/v1/transitions?limit=100000", 400, "limit must be between 1 and 1000"),
    ("/api/v1/transitions?limit=0", 400, "limit must be between 1 and 1000"),
    ("/api/v1/transitions?service=nope", 404, "unknown service 'nope'"),
    ("/api/v1/services/nope", 404, "unknown service 'nope'"),
    ("/api/v1/services/nope/report", 404, "unknown service 'nope'"),
    ("/api/v1/services/agent:a/report?since=yesterday", 400, "since: 'yesterday' is neither"),
    ("/api/v1/services/agent:a/report?since=nan", 400, "since must be a finite time"),
    ("/api/v1/services/agent:a/report?since=1e300", 400, "since must be between 1970"),
    ("/api/v1/services/agent:a/report?since=1h&until=2h", 400, "is after until"),
    ("/api/v1/services/agent:a/report?since=2h&exact=true", 400, "at most 3600 s"),
    ("/api/v1/services/agent:a/report?exact=maybe", 400, "exact must be true or false"),
    ("/api/v1/services/agent:a/series?since=3650d&bucket=1s", 400, "at most 3600 s (1 h)"),
    (
        "/api/v1/services/agent:a/series?since=3650d&bucket=60",
        400,
        "buckets of 60.0 s between since and until; at most 100000",
    ),
    ("/api/v1/series", 400, "bucket is required"),
    ("/api/v1/series?bucket=-5", 400, "bucket must be a positive duration"),
    ("/api/v1/results?format=xml", 400, "format must be one of csv, jsonl"),
    ("/api/v1/results?service=nope", 404, "unknown service 'nope'"),
    ("/api/v1/events?after=x", 400, "after must be an integer"),
    ("/api/v1/events?service=nope", 404, "unknown service 'nope'"),
    ("/api/v1/nothing", 404, "no such path"),
    ("/metrics?x=1", 400, "unknown query parameter 'x'"),
]


async def test_bad_input_gets_a_4xx_that_says_what_is_wrong(db_path: Path) -> None:
    async with serve(db_path) as served:
        await served.flip("a", "healthy")
        for path, status, words in BAD_INPUT:
            response = await served.client.get(path)
            assert response.status_code == status, (path, response.text)
            assert response.headers["content-type"] == "application/json"
            assert words in response.json()["message"], (path, response.json())


async def test_a_malformed_last_event_id_and_writes_are_refused(db_path: Path) -> None:
    async with serve(db_path) as served:
        response = await served.client.get("/api/v1/events", headers={"Last-Event-ID": "-3"})
        assert response.status_code == 400
        assert "Last-Event-ID must be a transition id" in response.json()["message"]
        for method in ("POST", "PUT", "DELETE", "PATCH"):
            for path in ("/api/v1/cluster", "/api/v1/events", "/api/v1/results", "/metrics"):
                written = await served.client.request(method, path)
                assert written.status_code == 405, (method, path)
                assert "read-only" in written.json()["message"]


async def test_no_secret_reaches_a_response(targets: TargetServer, db_path: Path) -> None:
    url = targets.url("/healthy").replace("http://", "http://user:hunter2@") + "?token=abc123"
    async with serve(db_path) as served:
        served.monitor.add_service(
            ServiceDefinition(
                "s", "http", "tests.s", health_check_url=url, headers={"X-Api-Key": "k-e-y-secret"}
            )
        )
        await wait_for(lambda: served.api.feed.latest("s") is not None)
        for path in ("/api/v1/cluster", "/api/v1/services/s", "/metrics", "/api/v1/results"):
            text = (await served.client.get(path)).text
            for secret in ("hunter2", "abc123", "k-e-y-secret", TOKEN):
                assert secret not in text, (path, secret)
        assert (await served.client.get("/api/v1/services/s")).json()["url"] == (
            targets.url("/healthy").replace("http://", "http://***@") + "?token=***"
        )


async def test_a_non_loopback_address_needs_a_token_or_consent(db_path: Path) -> None:
    async with serve(db_path) as served:
        open_api = HttpApi(served.monitor, served.store, HttpSettings(host="0.0.0.0", port=0))
        with pytest.raises(ServeError, match=r"refusing to listen on 0\.0\.0\.0 without a token"):
            await HttpServer(open_api).start()
        assert not open_api.started
        consented = HttpApi(
            served.monitor,
            served.store,
            HttpSettings(host="0.0.0.0", port=0, allow_unauthenticated=True),
        )
        async with HttpServer(consented) as server:
            async with httpx.AsyncClient() as client:
                response = await client.get(f"http://127.0.0.1:{server.port}/api/v1/cluster")
            assert response.status_code == 200


async def test_accepted_connections_are_tcp_so_asyncio_turns_nagle_off(db_path: Path) -> None:
    # asyncio sets TCP_NODELAY only on sockets whose proto is IPPROTO_TCP (accepted
    # ones inherit the listener's): with proto 0, every response's body waited for the
    # client's delayed ACK, 40 ms a request.
    async with serve(db_path) as served:
        listener = served.server._socket
        assert listener is not None
        assert listener.proto == socket.IPPROTO_TCP


async def test_an_address_in_use_is_a_serve_error_naming_it(db_path: Path) -> None:
    async with serve(db_path) as served:
        port = served.server.port
        taken = HttpApi(served.monitor, served.store, HttpSettings(port=port or 0))
        with pytest.raises(ServeError, match=f"cannot listen on 127.0.0.1:{port}"):
            await HttpServer(taken).start()
        assert not taken.started


async def test_stop_ends_streams_and_long_polls_at_once(db_path: Path) -> None:
    async with serve(db_path) as served:
        record = await served.flip("a", "healthy")
        poll = asyncio.create_task(
            served.client.get("/api/v1/cluster", params={"index": record.id, "wait": "60s"})
        )

        async def follow() -> list[str]:
            async with served.client.stream("GET", "/api/v1/events") as events:
                return [line async for line in events.aiter_lines()]

        stream = asyncio.create_task(follow())
        await wait_for(lambda: served.api.waiting.held == 1 and served.api.streams.held == 1)
        started = time.monotonic()
        await served.server.stop()
        assert time.monotonic() - started < 2
        assert (await poll).status_code == 200
        assert (await stream)[0] == "retry: 2000"
        with pytest.raises(httpx.ConnectError):
            await served.client.get("/livez")


async def test_a_stop_cuts_what_is_still_running_without_a_traceback(
    db_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    # Requests still running a second after the stop began: an export that has begun
    # its answer and a report that has not, both waiting for a store read (the test
    # holds every read slot); beside them an event stream and a long-poll, which the
    # stop ends at once. uvicorn would cancel the two and log a traceback for each.
    caplog.set_level(logging.INFO)
    async with serve(db_path) as served, contextlib.AsyncExitStack() as slots:
        record = await served.flip("a", "healthy")
        for _ in range(served.api.reads.at_once):
            await slots.enter_async_context(served.api.reads.turn())
        poll = asyncio.create_task(
            served.client.get("/api/v1/cluster", params={"index": record.id, "wait": "60s"})
        )

        async def follow() -> list[str]:
            async with served.client.stream("GET", "/api/v1/events") as events:
                return [line async for line in events.aiter_lines()]

        async def export() -> bytes:
            params = {"service": "agent:a"}  # known from memory: the answer begins
            async with served.client.stream("GET", "/api/v1/results", params=params) as response:
                assert response.status_code == 200
                return b"".join([chunk async for chunk in response.aiter_raw()])

        stream = asyncio.create_task(follow())
        cut = asyncio.create_task(export())
        report = asyncio.create_task(served.client.get("/api/v1/services/agent:a/report"))
        await wait_for(
            lambda: (
                served.api.waiting.held == 1
                and served.api.streams.held == 1
                and served.api.exports.held == 1
                and served.api.reads.queued == 2  # the export's page and the report
                and len(served.api.handling) == 4
            )
        )
        started = time.monotonic()
        await served.server.stop()
        assert time.monotonic() - started < 3
        assert not served.api.handling  # every request's task has ended
        assert (await poll).status_code == 200
        assert (await stream)[0] == "retry: 2000"
        refused = await report
        assert refused.status_code == 503
        assert refused.json()["error"] == "stopping"
        with pytest.raises(httpx.RemoteProtocolError):  # cut short: never looks complete
            await cut
    logged = caplog.text + capsys.readouterr().out
    assert "Traceback" not in logged, logged
    assert not [r for r in caplog.records if r.exc_info], logged
    assert "http_request_cut" in logged


async def test_a_monitored_service_not_stored_yet_has_an_empty_report(
    targets: TargetServer, db_path: Path
) -> None:
    # Under load the writer's flush that registers a new service may come seconds
    # later: the store then said "unknown service", and the API answered 400 for a
    # service it lists. Here another connection holds SQLite's write lock meanwhile.
    async with serve(db_path) as served:
        blocker = sqlite3.connect(db_path, isolation_level=None)
        try:
            blocker.execute("BEGIN IMMEDIATE")
            served.monitor.add_service(
                ServiceDefinition("late", "http", "t", [], targets.url("/hang"))
            )
            assert not await served.api.feed.knows("late")
            response = await served.client.get("/api/v1/services/late/report")
        finally:
            blocker.rollback()
            blocker.close()
        assert response.status_code == 200, response.text
        body = response.json()
        assert (body["service"], body["counts"]["total"], body["uptime"]) == ("late", 0, None)
