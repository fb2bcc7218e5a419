"""`healthmon run --http` end to end: a subprocess serving the API on a real port."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from healthmon.targets import TargetServer
from tests.integration.test_cli import _env, assert_clean, healthmon, service_toml

pytestmark = pytest.mark.timeout(60)

TOKEN = "cli-token-0123456789abcdef"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def _wait_until_served(url: str, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[1]
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"{url} was not served within 20 s")


def test_run_serves_the_api_until_sigterm(targets: TargetServer, tmp_path: Path) -> None:
    config = tmp_path / "services.toml"
    config.write_text(
        '[store]\ndatabase = "run.db"\n[monitor]\ncheck_interval = 0.1\n'
        "[http]\nmax_wait = 60.0\n\n" + service_toml("ok", targets.url("/healthy"))
    )
    port = _free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-W",
            "default",
            "-m",
            "healthmon.cli",
            "run",
            "--config",
            config,
            "--http",
            f"127.0.0.1:{port}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**_env(), "HEALTHMON_HTTP_TOKEN": TOKEN},
    )
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_until_served(f"{base}/livez", process)
        assert httpx.get(f"{base}/api/v1/cluster").status_code == 401
        auth = {"Authorization": f"Bearer {TOKEN}"}
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            cluster = httpx.get(f"{base}/api/v1/cluster", headers=auth).json()
            if cluster["status"] == "healthy" and cluster["index"] >= 1:
                break
            time.sleep(0.05)
        assert cluster["services"][0]["name"] == "ok"
        metrics = httpx.get(f"{base}/metrics", headers=auth).text
        assert 'healthmon_service_status{service="ok",status="healthy"} 1.0' in metrics
        process.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        _, stderr = process.communicate(timeout=10)
        elapsed = time.monotonic() - sent
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, stderr
    assert elapsed < 3.0
    assert_clean(stderr)
    events = [json.loads(line) for line in stderr.splitlines()]
    listening = next(event for event in events if event["event"] == "http_listening")
    assert (listening["port"], listening["auth"]) == (port, "bearer token")
    assert TOKEN not in stderr
    assert [event["event"] for event in events][-3:] == [
        "monitor_stopping",
        "http_stopped",
        "monitor_stopped",
    ]


def test_run_refuses_to_serve_everyone_without_a_token(tmp_path: Path) -> None:
    config = tmp_path / "services.toml"
    config.write_text(service_toml("ok", "http://127.0.0.1:9/"))
    refused = healthmon("run", "--config", config, "--http", "0.0.0.0:8080")
    assert refused.returncode == 2
    assert "refusing to listen on 0.0.0.0 without a token" in refused.stderr
    bad = healthmon("run", "--config", config, "--http", "localhost")
    assert bad.returncode == 2
    assert "'localhost' is not HOST:PORT" in bad.stderr
