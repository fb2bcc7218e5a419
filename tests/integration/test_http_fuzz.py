"""Fuzz the API from its own OpenAPI document with schemathesis (its CLI, against the
real server): no 5xx but the documented 503s, every response matching the schema,
bad input refused. Kept to a few seconds: a fixed seed and few examples each."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from healthmon.targets import TargetServer
from tests.conftest import wait_for
from tests.integration.http_helpers import TOKEN, serve

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(120)]

CHECKS = ",".join(
    (
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
        "negative_data_rejection",
    )
)


async def test_schemathesis_finds_nothing(
    targets: TargetServer, db_path: Path, tmp_path: Path
) -> None:
    # Short waits: a fuzzed blocking query must not hold the run for minutes.
    async with serve(db_path, targets.url("/healthy"), max_wait=1.0, default_wait=0.5) as served:
        await wait_for(lambda: served.api.feed.latest("web") is not None)
        await served.flip("db", "unhealthy")
        schemathesis = Path(sys.executable).with_name("schemathesis")
        process = await asyncio.create_subprocess_exec(
            str(schemathesis),
            "run",
            f"{served.base}/api/v1/openapi.json",
            "--header",
            f"Authorization: Bearer {TOKEN}",
            "--checks",
            CHECKS,
            # The event stream never ends by itself; it has tests of its own.
            "--exclude-path",
            "/api/v1/events",
            "--max-examples",
            "6",
            "--seed",
            "14",
            "--request-timeout",
            "10",
            "--no-color",
            cwd=tmp_path,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        output, _ = await process.communicate()
    text = output.decode(errors="replace")
    assert process.returncode == 0, text
    assert "failed" not in text.split("SUMMARY")[-1].lower(), text
