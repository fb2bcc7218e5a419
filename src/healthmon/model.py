"""The values healthmon passes around: statuses, check results, transitions, services.

Pure data with validation; nothing here does I/O.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from enum import Enum
from typing import Any, NoReturn
from urllib.parse import unquote_plus, urlsplit, urlunsplit

from healthmon.micros import ms_on_grid, seconds_on_grid
from healthmon.policy import CheckPolicy, validate_interval

__all__ = [
    "HealthCheckResult",
    "HealthStatus",
    "ServiceDefinition",
    "StatusTransition",
    "redact_url",
    "redact_urls_in",
    "worst_status",
]


class HealthStatus(Enum):
    """A service's health. Values are the seed's lower-case names."""

    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"
    DEGRADED = "degraded"
    UNKNOWN = "unknown"

    @property
    def severity(self) -> int:
        """Rank for "worst wins": HEALTHY 0 < UNKNOWN 1 < DEGRADED 2 < UNHEALTHY 3."""
        return _SEVERITY[self]


_SEVERITY = {
    HealthStatus.HEALTHY: 0,
    HealthStatus.UNKNOWN: 1,
    HealthStatus.DEGRADED: 2,
    HealthStatus.UNHEALTHY: 3,
}


def worst_status(statuses: Any) -> HealthStatus:
    """The most severe of `statuses` (an iterable); UNKNOWN when there are none."""
    return max(statuses, key=_SEVERITY.__getitem__, default=HealthStatus.UNKNOWN)


@dataclass(frozen=True, slots=True)
class HealthCheckResult:
    """One observation of a service's health.

    `status` is what this check itself observed (and what is stored for it).
    `confirmed_status` is the service's status after this result, once thresholds
    and start periods are applied; the monitor sets it on the results it records,
    and the cluster status, transitions and notifications follow it. With the
    default thresholds (1/1) the two are equal.

    `timestamp` is wall-clock UTC epoch seconds taken when the check completed;
    `response_time_ms` is measured on the monotonic clock. Both are kept to the
    microsecond, the resolution of the database (micros.py), so a result read back
    from the store equals the one made.

    `answered` says whether the target answered: an HTTP response (its status line
    and headers) arrived before the check's timeout, so `response_time_ms` measures
    the service and counts in latency statistics. The probe and the monitor set it;
    None, for a result made elsewhere, leaves it to the error's form
    (`store.rollup.is_answered`). It is not compared: a result read back equals the
    one made whichever way it was decided.
    """

    service_name: str
    status: HealthStatus
    response_time_ms: float
    timestamp: float
    details: dict[str, Any] | None = None
    error: str | None = None
    confirmed_status: HealthStatus | None = None
    answered: bool | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "timestamp", seconds_on_grid(self.timestamp))
        object.__setattr__(self, "response_time_ms", ms_on_grid(self.response_time_ms))

    @property
    def effective_status(self) -> HealthStatus:
        """The service's status as this result leaves it: confirmed if set, else observed."""
        return self.status if self.confirmed_status is None else self.confirmed_status


@dataclass(frozen=True, slots=True)
class StatusTransition:
    """A change of a service's status; `from_status` is None for its first status.

    `cause` is the error of the result that caused the change (None when it
    recovered), so that "why did it go down" is answered by the transition alone.
    `timestamp` is kept to the microsecond, as the result's is.
    """

    service_name: str
    from_status: HealthStatus | None
    to_status: HealthStatus
    timestamp: float
    cause: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "timestamp", seconds_on_grid(self.timestamp))


@dataclass(frozen=True, slots=True)
class ServiceDefinition:
    """A service the monitor knows of: a value, validated once as it is built and
    never changed after (`dataclasses.replace` makes a validated copy).

    The first five fields are the seed's. A service without `health_check_url` is
    registered but not probed (its health may come from elsewhere, e.g. an agent).

    The rest override the monitor's defaults for this service; None inherits them.
    `interval` is this service's check period (0.05-1.0 s); the others are
    `CheckPolicy`'s fields (see there). `headers` are sent with every check (an
    auth token, say) and kept out of reprs, logs and the database; they are held as a
    read-only copy of the mapping given.
    """

    name: str
    service_type: str
    module_path: str
    dependencies: list[str] = field(default_factory=list)
    health_check_url: str | None = None
    interval: float | None = None
    timeout: float | None = None
    success_codes: str | None = None
    degraded_after_ms: float | None = None
    failure_threshold: int | None = None
    success_threshold: int | None = None
    start_period: float | None = None
    max_body_bytes: int | None = None
    follow_redirects: bool | None = None
    trust_env: bool | None = None
    verify_tls: bool | None = None
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)

    def __repr__(self) -> str:
        # Written out so that the URL's credentials (and the headers) stay out of logs.
        shown = [f"{self.name!r}", f"service_type={self.service_type!r}"]
        if self.health_check_url is not None:
            shown.append(f"health_check_url={redact_url(self.health_check_url)!r}")
        shown.extend(
            f"{f.name}={getattr(self, f.name)!r}"
            for f in fields(self)
            if f.name in _OVERRIDES and getattr(self, f.name) is not None
        )
        return f"ServiceDefinition({', '.join(shown)})"

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError(f"service name must be a non-empty string, got {self.name!r}")
        if self.name != self.name.strip():
            raise ValueError(f"service name {self.name!r} has leading or trailing spaces")
        where = f"service {self.name!r}"
        if self.health_check_url is not None:
            validate_http_url(self.health_check_url, where=where)
        if self.interval is not None:
            validate_interval(self.interval, where=f"{where}: interval")
        try:
            CheckPolicy().with_overrides(self)  # validates every override it sets
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"{where}: {exc}") from exc
        _validate_headers(self.headers, where=where)
        # A copy of its own that nobody can change: validated headers stay valid.
        object.__setattr__(self, "headers", _FrozenHeaders(self.headers))


class _FrozenHeaders(dict[str, str]):
    """A service's headers: a dict nobody can change (a read-only view would make
    copy.deepcopy, pickle and dataclasses.asdict of a definition fail)."""

    __slots__ = ()

    def _read_only(self, *args: object, **kwargs: object) -> NoReturn:
        raise TypeError("a ServiceDefinition's headers cannot be changed: use dataclasses.replace")

    __setitem__ = __delitem__ = __ior__ = _read_only
    clear = pop = popitem = setdefault = update = _read_only

    def __reduce__(self) -> tuple[type[_FrozenHeaders], tuple[dict[str, str]]]:
        return type(self), (dict(self),)  # rebuilt whole, not item by item


_OVERRIDES = {"interval", *(f.name for f in fields(CheckPolicy) if f.init)}

_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110 token
# RFC 9110 field-value in ASCII: visible characters, spaces and tabs inside only. An
# HTTP stack refuses anything else at every check, and h11's error quotes the value.
_HEADER_VALUE = re.compile(r"(?:[\x21-\x7e](?:[\x20\x09\x21-\x7e]*[\x21-\x7e])?)?")


def _validate_headers(headers: object, *, where: str) -> None:
    if not isinstance(headers, Mapping):
        raise TypeError(f"{where}: headers must be a mapping of names to values")
    for name, value in headers.items():
        if not isinstance(name, str) or not _HEADER_NAME.fullmatch(name):
            raise ValueError(f"{where}: headers: the name {name!r} is not a valid HTTP token")
        if not isinstance(value, str) or not _HEADER_VALUE.fullmatch(value):
            # The value is not echoed: it may be a secret.
            raise ValueError(
                f"{where}: headers: the value of {name!r} must be a single-line string of"
                " visible ASCII characters, without leading or trailing spaces"
            )


def validate_http_url(url: str, *, where: str) -> None:
    """Raise ValueError unless `url` is an absolute http(s) URL with a host."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - parsing the port is the check: "http://h:x/" raises here
    except ValueError as exc:
        raise ValueError(f"{where}: health_check_url is not a valid URL: {exc}") from exc
    if parts.scheme not in ("http", "https"):
        raise ValueError(
            f"{where}: health_check_url must use http or https, got {redact_url(url)!r}"
        )
    if not parts.hostname:
        raise ValueError(f"{where}: health_check_url has no host: {redact_url(url)!r}")


def redact_url(url: str) -> str:
    """`url` with its user:password, and the values of query parameters named like a
    secret (`?token=`, `api_key=`, `sig=`, ...), replaced by '***': for logs, errors
    and storage. The rest is kept as written."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    netloc, query = parts.netloc, _redact_query(parts.query)
    if parts.username is not None or parts.password is not None:
        host = parts.hostname or ""
        if ":" in host:  # IPv6 literal
            host = f"[{host}]"
        try:
            port = parts.port
        except ValueError:
            port = None
        netloc = f"***@{host}" + (f":{port}" if port is not None else "")
    if (netloc, query) == (parts.netloc, parts.query):
        return url
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


_URL_IN_TEXT = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>]+")


# A query parameter of a relative reference too (`Location: /next?token=...`).
_QUERY_PAIR_IN_TEXT = re.compile(r"(?<=[?&])([^=&?#\s'\"<>]+)=([^&#\s'\"<>]*)")


def redact_urls_in(text: str) -> str:
    """`text` with every URL in it redacted (`redact_url`), and the secret-named query
    parameters of relative references too: for third parties' messages, which may
    quote a URL. Text without either is returned as it is."""
    if "://" in text:
        text = _URL_IN_TEXT.sub(lambda url: redact_url(url.group()), text)
    if "=" in text and ("?" in text or "&" in text):
        text = _QUERY_PAIR_IN_TEXT.sub(
            lambda pair: f"{pair[1]}=***" if _secret_name(pair[1]) else pair[0], text
        )
    return text


_SECRET_NAMES = ("token", "key", "secret", "pass", "pwd", "auth", "sig", "credential")


def _secret_name(name: str) -> bool:
    return any(word in unquote_plus(name).lower() for word in _SECRET_NAMES)


def _redact_query(query: str) -> str:
    def redacted(pair: str) -> str:
        name, equals, _value = pair.partition("=")
        if equals and _secret_name(name):
            return f"{name}=***"
        return pair

    return "&".join(redacted(pair) for pair in query.split("&")) if query else query
