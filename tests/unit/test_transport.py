"""The transport's mapping of aiohttp's errors to httpx's: which are timeouts."""

from __future__ import annotations

import aiohttp
import httpx
import pytest

from healthmon.transport import _as_httpx


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (aiohttp.ConnectionTimeoutError("connect"), httpx.ConnectTimeout),
        (aiohttp.SocketTimeoutError("read"), httpx.ReadTimeout),
        (aiohttp.ServerTimeoutError("server"), httpx.TimeoutException),
        (aiohttp.ServerDisconnectedError(), httpx.ReadError),
        (aiohttp.ClientPayloadError("cut short"), httpx.ReadError),
        (aiohttp.ClientOSError(104, "reset"), httpx.ReadError),
        (aiohttp.InvalidUrlClientError("ftp://x"), httpx.UnsupportedProtocol),
        (aiohttp.NonHttpUrlClientError("ftp://x"), httpx.UnsupportedProtocol),
    ],
)
def test_aiohttp_errors_map_to_their_httpx_kind(error: aiohttp.ClientError, kind: type) -> None:
    mapped = _as_httpx(error)
    assert type(mapped) is kind
    # A closed connection is not a timeout: the probe then asks whether headers came.
    is_timeout = isinstance(error, aiohttp.ServerTimeoutError)
    assert isinstance(mapped, httpx.TimeoutException) is is_timeout


def test_an_error_without_an_httpx_kind_goes_up_as_it_is() -> None:
    error = aiohttp.ClientResponseError(None, (), status=400, message="bad response")  # type: ignore[arg-type]  # no request info needed here
    assert _as_httpx(error) is error
