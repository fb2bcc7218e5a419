"""`healthmon run --loop`: asyncio's loop by default, uvloop's only when asked for and
installed (an optional extra), a clear error otherwise."""

from __future__ import annotations

import sys

import pytest

from healthmon.cli.run import _loop_factory
from healthmon.errors import ConfigError


def test_asyncio_is_the_default_loop() -> None:
    assert _loop_factory("asyncio") is None


def test_uvloop_without_the_package_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # an import of it now fails
    with pytest.raises(ConfigError, match=r"pip install 'healthmon\[uvloop\]'"):
        _loop_factory("uvloop")
