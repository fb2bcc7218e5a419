"""No log record carries a secret while healthmon checks, whatever the application's
logging setup: the root logger at DEBUG, every third-party logger let through."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
import structlog

from healthmon import HealthMonitor, HealthStatus, HealthStore, ServiceDefinition
from healthmon.log import RedactingFilter, guard_http_logs
from healthmon.targets import TargetServer
from tests.conftest import wait_for

SECRETS = ("QUERYSECRET", "USERPASS", "HEADERSECRET")


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def root_at_debug() -> Iterator[_Records]:
    """As `logging.basicConfig(level=logging.DEBUG)` would set it up."""
    root = logging.getLogger()
    handler, level = _Records(), root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def _secret_urls(targets: TargetServer) -> dict[str, str]:
    base = f"http://user:USERPASS@127.0.0.1:{targets.port}"
    return {
        "ok": f"{base}/healthy?token=QUERYSECRET&region=eu",
        "fails": f"{base}/fail?api_key=QUERYSECRET",
        "redirects": f"{base}/redirect?sig=QUERYSECRET",
    }


@pytest.mark.asyncio
@pytest.mark.timeout(30)
async def test_no_record_carries_a_secret_with_root_at_debug(
    targets: TargetServer, root_at_debug: _Records, tmp_path: Path
) -> None:
    # Issue 11 #1: httpx logged `HTTP Request: GET http://...?token=SECRET ...` at INFO.
    headers = {"Authorization": "Bearer HEADERSECRET"}
    with structlog.testing.capture_logs() as events:
        async with HealthStore(f"{tmp_path}/health.db") as store:
            monitor = HealthMonitor(check_interval=0.05, store=store)
            for name, url in _secret_urls(targets).items():
                monitor.add_service(ServiceDefinition(name, "http", "m", [], url, headers=headers))
            await monitor.check_health("ok")  # a one-off check of a monitor not running
            async with monitor:
                await wait_for(lambda: targets.hits("/healthy") >= 5 and targets.hits("/fail") >= 5)
        # A client of the application's own (httpx over httpcore), given to the monitor.
        async with httpx.AsyncClient() as client:
            monitor = HealthMonitor(http_client=client)
            own = _secret_urls(targets)["ok"]
            monitor.add_service(ServiceDefinition("own", "http", "m", [], own, headers=headers))
            await monitor.check_health("own")
    lines = root_at_debug.lines + [repr(event) for event in events]
    leaked = [line for line in lines if any(secret in line for secret in SECRETS)]
    assert not leaked, leaked[:5]
    assert any("HTTP Request" in line and "token=***" in line for line in lines)  # it was logging
    assert any(line.startswith("httpcore") for line in lines)
    httpcore = [
        logger
        for name, logger in logging.Logger.manager.loggerDict.items()
        if name.startswith("httpcore.") and isinstance(logger, logging.Logger)
    ]
    assert httpcore
    assert all(any(isinstance(f, RedactingFilter) for f in lg.filters) for lg in httpcore)


def test_the_filter_redacts_messages_arguments_and_tracebacks() -> None:
    logger = logging.getLogger("httpx.test_log_secrets")
    guard_http_logs()
    assert any(isinstance(f, RedactingFilter) for f in logger.filters)
    handler = _Records()
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        logger.debug("GET %s", httpx.URL("http://u:USERPASS@h/p?token=QUERYSECRET"))
        try:
            raise ValueError("fetching http://h/p?password=QUERYSECRET failed")
        except ValueError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    assert handler.lines[0].endswith("GET http://***@h/p?token=***")
    assert "password=***" in handler.lines[1]
    assert not any(secret in "".join(handler.lines) for secret in SECRETS)


class _RelativeRedirect(BaseHTTPRequestHandler):
    """/start -> 302 to a relative reference carrying a secret -> /done (200)."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        done = self.path.startswith("/done")
        self.send_response(200 if done else 302)
        if not done:
            self.send_header("Location", "/done?token=LOCATIONSECRET")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.mark.asyncio
@pytest.mark.timeout(30)
async def test_a_relative_redirect_target_is_redacted_too(root_at_debug: _Records) -> None:
    # Review of issue 11: httpcore logs the response headers at DEBUG; a relative
    # Location (`/done?token=...`) has no scheme, so it went out unredacted.
    server = ThreadingHTTPServer(("127.0.0.1", 0), _RelativeRedirect)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/start"
        async with httpx.AsyncClient() as client:  # the application's own (httpcore)
            monitor = HealthMonitor(http_client=client)
            monitor.add_service(
                ServiceDefinition("own", "http", "m", [], url, follow_redirects=True)
            )
            result = await monitor.check_health("own")
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    assert result.status is HealthStatus.HEALTHY
    lines = root_at_debug.lines
    assert any("/done?token=***" in line for line in lines)  # it was logged, redacted
    assert not [line for line in lines if "LOCATIONSECRET" in line]


def test_a_registered_header_value_is_redacted_from_the_http_stack_s_records() -> None:
    # Review of issue 11: hpack (HTTP/2, under an application's own httpx client with
    # http2=True) logs every header it encodes at DEBUG, `Authorization` included:
    # `Adding (b'authorization', b'Bearer HEADERSECRET') to the header table`.
    monitor = HealthMonitor()
    headers = {"Authorization": "Bearer HEADERSECRET", "X-Debug": "1"}
    monitor.add_service(ServiceDefinition("api", "http", "m", [], "http://h/", headers=headers))
    logger = logging.getLogger("hpack.hpack")
    guard_http_logs()
    handler = _Records()
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        pair = (b"authorization", b"Bearer HEADERSECRET")
        logger.debug("Adding %s to the header table, sensitive:%s, huffman:%s", pair, True, True)
        logger.debug("Encoding %d with %d bits", 1, 7)  # a short value is left alone
    finally:
        logger.removeHandler(handler)
        logger.setLevel(logging.NOTSET)
    assert handler.lines == [
        "hpack.hpack DEBUG Adding (b'authorization', b'***') to the header table, "
        "sensitive:True, huffman:True",
        "hpack.hpack DEBUG Encoding 1 with 7 bits",
    ]
