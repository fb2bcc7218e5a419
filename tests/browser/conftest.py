"""The status page in a real headless browser: Debian's chromium driven by Playwright.

No browser is downloaded: Playwright launches the system's chromium (`executable_path`).
Where none is installed these tests skip, saying how to run them; `.ci/run` installs
chromium and sets HEALTHMON_REQUIRE_BROWSER=1, which turns the skip into a failure.
Screenshots of each page are kept in test-artifacts/browser/ (gitignored).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import pytest_asyncio

if TYPE_CHECKING:
    from playwright.async_api import Browser

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "browser"
_HOW = (
    "the browser tests need chromium and Playwright for Python: "
    "`apt-get install chromium` (or set HEALTHMON_CHROMIUM to a Chromium binary) and "
    "`pip install -e '.[dev]'`; .ci/run installs both"
)


def _chromium() -> str | None:
    return os.environ.get("HEALTHMON_CHROMIUM") or shutil.which("chromium")


@dataclass
class Console:
    """What the pages said on their console: errors fail the test."""

    errors: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)


@pytest.fixture
def console() -> Console:
    return Console()


@pytest_asyncio.fixture
async def browser(console: Console) -> AsyncIterator[Browser]:
    path = _chromium()
    try:
        from playwright.async_api import async_playwright  # noqa: PLC0415 - optional
    except ImportError:
        path = None
    if path is None:
        if os.environ.get("HEALTHMON_REQUIRE_BROWSER") == "1":
            pytest.fail(f"HEALTHMON_REQUIRE_BROWSER=1 but no browser: {_HOW}")
        pytest.skip(_HOW)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    async with async_playwright() as playwright:
        # --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start.
        launched = await playwright.chromium.launch(
            executable_path=path, args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            yield launched
        finally:
            await launched.close()
    assert not console.errors, f"console errors on the page: {console.errors}"
    assert not console.dialogs, f"a script opened dialogs: {console.dialogs}"
