"""The HTTP face's settings (`[http]` in the config file, `healthmon run --http`)."""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import os
from dataclasses import dataclass, field

__all__ = ["TOKEN_ENV", "HttpSettings", "is_loopback", "parse_listen"]

TOKEN_ENV = "HEALTHMON_HTTP_TOKEN"  # noqa: S105 - the variable's name, not a secret
"""The environment variable a bearer token may come from (it wins over the config)."""


@dataclass(frozen=True, slots=True)
class HttpSettings:
    """How the HTTP face listens and what it lets clients cost.

    `token`: when set, every request but the liveness, readiness and OpenAPI paths
    must carry `Authorization: Bearer <token>`. Without one the server refuses to
    listen on an address other than loopback unless `allow_unauthenticated` is true.

    The bounds keep slow or many clients from costing unbounded memory: at most
    `max_streams` event streams and `max_waiting` blocked queries at once (beyond,
    503), `max_connections` connections in all; a write that a client does not read
    within `send_timeout` seconds ends its response; a blocking query waits at most
    `max_wait` seconds, and `default_wait` when it does not say (None: 5 minutes, or
    `max_wait` if shorter). `/metrics` is rendered at most once per `metrics_max_age`
    seconds, however many clients ask (0: every request). Store reads on clients'
    behalf (history, transitions, exports) are busy at most `read_share` of the time
    together (a fraction of 1; beyond it they wait their turn: http/budget.py), so
    that however many clients ask, the checks keep their CPU.
    """

    host: str = "127.0.0.1"
    port: int = 8080
    token: str | None = field(default=None, repr=False)
    allow_unauthenticated: bool = False
    max_connections: int = 1000
    max_streams: int = 256
    max_waiting: int = 512
    max_wait: float = 600.0
    default_wait: float | None = None
    keepalive: float = 15.0
    send_timeout: float = 30.0
    metrics_max_age: float = 1.0
    read_share: float = 0.25

    def __post_init__(self) -> None:
        if not isinstance(self.host, str) or not self.host.strip():
            raise ValueError(f"host must be a host name or address, got {self.host!r}")
        if isinstance(self.port, bool) or not isinstance(self.port, int):
            raise TypeError(f"port must be an integer, got {self.port!r}")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be 0-65535 (0: any free port), got {self.port}")
        if self.token is not None and (not isinstance(self.token, str) or len(self.token) < 16):
            raise ValueError("token must be a string of at least 16 characters")
        if self.token is not None and not self.token.isprintable():
            raise ValueError("token must be printable characters (it is sent in a header)")
        for name in ("max_connections", "max_streams", "max_waiting"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name in ("max_wait", "default_wait", "keepalive", "send_timeout"):
            value = getattr(self, name)
            if not _positive(value) and not (name == "default_wait" and value is None):
                raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
        if not (_number(self.metrics_max_age) and 0 <= self.metrics_max_age <= 60):
            raise ValueError(f"metrics_max_age must be 0-60 seconds, got {self.metrics_max_age!r}")
        if not (_number(self.read_share) and 0 < self.read_share <= 1):
            raise ValueError(f"read_share must be a fraction in (0, 1], got {self.read_share!r}")
        if self.default_wait is not None and self.default_wait > self.max_wait:
            raise ValueError(
                f"default_wait ({self.default_wait} s) is longer than max_wait ({self.max_wait} s)"
            )

    @property
    def wait(self) -> float:
        """How long a blocking query that gives no `wait` waits."""
        return min(300.0, self.max_wait) if self.default_wait is None else self.default_wait

    def token_from_env(self) -> HttpSettings:
        """These settings with the token of $HEALTHMON_HTTP_TOKEN, if it is set."""
        token = os.environ.get(TOKEN_ENV)
        if not token:
            return self
        try:
            return dataclasses.replace(self, token=token)
        except ValueError as exc:
            raise ValueError(f"${TOKEN_ENV}: {exc}") from None

    def check_exposure(self) -> None:
        """Raise ValueError if these settings would serve a non-loopback address to
        anyone: a token is needed, or `allow_unauthenticated`."""
        if self.token is None and not self.allow_unauthenticated and not is_loopback(self.host):
            raise ValueError(
                f"refusing to listen on {self.host} without a token: anyone who can reach it "
                f"could read the monitor. Set a token (${TOKEN_ENV} or `token` in [http]), "
                "listen on 127.0.0.1, or set allow_unauthenticated = true "
                "(--http-allow-unauthenticated) to serve it openly"
            )


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _positive(value: object) -> bool:
    return _number(value) and value > 0  # type: ignore[operator] # _number() checked it


def is_loopback(host: str) -> bool:
    """Whether `host` is a loopback address (or `localhost`); a name that is not
    `localhost` counts as not loopback: it may resolve anywhere."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def parse_listen(text: str) -> tuple[str, int]:
    """`HOST:PORT`, `[IPv6]:PORT` or `:PORT` (127.0.0.1) as (host, port)."""
    spec = text.strip()
    host, colon, port_text = spec.rpartition(":")
    if not colon or not port_text.isdigit():
        raise ValueError(f"{text!r} is not HOST:PORT; e.g. 127.0.0.1:8080, [::1]:8080 or :8080")
    host = host.strip("[]") or "127.0.0.1"
    port = int(port_text)
    if port > 65535:
        raise ValueError(f"{text!r}: port must be 0-65535")
    return host, port
