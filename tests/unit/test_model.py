"""Values and validation: statuses, services, URLs, intervals."""

from __future__ import annotations

import copy
import dataclasses
import json
import pickle
from typing import Any

import pytest

from healthmon import HealthMonitor, HealthStatus, ServiceDefinition
from healthmon.model import redact_url, worst_status
from healthmon.store.schema import STATUS_CODES


def test_severity_order_and_worst_status() -> None:
    ordered = sorted(HealthStatus, key=lambda s: s.severity)
    assert ordered == [
        HealthStatus.HEALTHY,
        HealthStatus.UNKNOWN,
        HealthStatus.DEGRADED,
        HealthStatus.UNHEALTHY,
    ]
    assert worst_status([HealthStatus.HEALTHY, HealthStatus.UNKNOWN]) is HealthStatus.UNKNOWN
    assert worst_status([]) is HealthStatus.UNKNOWN


def test_stored_codes_equal_severity_so_sql_max_is_the_worst() -> None:
    assert {status: status.severity for status in HealthStatus} == STATUS_CODES


@pytest.mark.parametrize("interval", [0.05, 0.1, 1, 1.0])
def test_intervals_within_1_to_20_hz_are_accepted(interval: float) -> None:
    assert HealthMonitor(check_interval=interval).check_interval == float(interval)


@pytest.mark.parametrize("interval", [0.0, 0.049, 1.01, -1, float("nan"), float("inf")])
def test_intervals_outside_1_to_20_hz_are_refused(interval: float) -> None:
    with pytest.raises(ValueError, match=r"0\.05 \(20Hz\) and 1\.0 \(1Hz\)"):
        HealthMonitor(check_interval=interval)


def test_interval_of_the_wrong_type_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        HealthMonitor(check_interval="0.1")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "url", "message"),
    [
        ("", None, "non-empty"),
        ("   ", None, "non-empty"),
        (" api", None, "leading or trailing spaces"),
        ("api", "ftp://host/health", "http or https"),
        ("api", "localhost:8000/health", "http or https"),
        ("api", "http:///health", "no host"),
        ("api", "http://host:notaport/health", "not a valid URL"),
    ],
)
def test_bad_service_definitions_are_refused(name: str, url: str | None, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ServiceDefinition(name, "http", "m", [], url)


def test_url_errors_do_not_leak_credentials() -> None:
    with pytest.raises(ValueError, match="http or https") as caught:
        ServiceDefinition("api", "http", "m", [], "ftp://admin:hunter2@host/health")
    assert "hunter2" not in str(caught.value)


@pytest.mark.parametrize(
    ("url", "redacted"),
    [
        ("http://host/health", "http://host/health"),
        ("http://user:pw@host:8080/h?x=1", "http://***@host:8080/h?x=1"),
        ("https://token@host/h", "https://***@host/h"),
        ("http://user:pw@[::1]:9000/h", "http://***@[::1]:9000/h"),
        ("http://host/h?token=abc&x=1", "http://host/h?token=***&x=1"),
        (
            "http://u:p@host/h?api_key=k&Sig=s&period=5",
            "http://***@host/h?api_key=***&Sig=***&period=5",
        ),
        ("http://host/h?access%5Ftoken=abc", "http://host/h?access%5Ftoken=***"),
        ("http://host/h?verbose&x=", "http://host/h?verbose&x="),
    ],
)
def test_redact_url(url: str, redacted: str) -> None:
    assert redact_url(url) == redacted


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("interval", 2.0),
        ("interval", 0.01),
        ("health_check_url", "ftp://host/health"),
        ("name", ""),
        ("headers", {"X-Token": "a\r\nInjected: yes"}),
    ],
)
def test_a_built_service_definition_cannot_be_made_invalid(field: str, value: Any) -> None:
    # Issue 11 #2: setting a field after validation bypassed it, and add_service ran it.
    service = ServiceDefinition("api", "http", "m", [], "http://127.0.0.1:1/health")
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(service, field, value)
    with pytest.raises((TypeError, ValueError)):  # a copy is validated as it is built
        dataclasses.replace(service, **{field: value})
    assert service == ServiceDefinition("api", "http", "m", [], "http://127.0.0.1:1/health")


def test_a_service_definitions_headers_cannot_be_changed_in_place() -> None:
    given = {"X-Token": "s3cret"}
    service = ServiceDefinition("api", "http", "m", [], "http://h/", headers=given)
    given["X-Token"] = "a\r\nInjected: yes"  # the caller's dict is not the service's
    assert dict(service.headers) == {"X-Token": "s3cret"}
    with pytest.raises(TypeError):
        service.headers["X-Token"] = "a\r\nInjected: yes"  # type: ignore[index]
    copy = dataclasses.replace(service, interval=0.5)
    assert (copy.interval, dict(copy.headers)) == (0.5, {"X-Token": "s3cret"})


@pytest.mark.parametrize(
    "value",
    [
        "Bearer s3cret ",
        " Bearer s3cret",
        "Bearer\ts3cret\t",
        "Bearer s3cret\x00",
        "s3cret\x7f",
        "s3cret\x01",
        "Bearer s3cret\u20ac",
        "Bearer s3cret\n",
    ],
)
def test_a_header_value_no_http_stack_sends_is_refused_without_echo(value: str) -> None:
    # Review of issue 11: such a value was accepted, and an application's own httpx
    # client (h11) failed every check with `Illegal header value b'Bearer s3cret '`:
    # the secret in the result's error, the `status_changed` log and the database.
    with pytest.raises(ValueError, match="headers: the value of 'Authorization' must be") as caught:
        ServiceDefinition("api", "http", "m", [], "http://h/", headers={"Authorization": value})
    assert "s3cret" not in str(caught.value)


def test_header_values_http_allows_are_kept_as_given() -> None:
    for value in ("", "Bearer s3cret", "a\tb  c", "!~"):
        service = ServiceDefinition("api", "http", "m", [], "http://h/", headers={"X-A": value})
        assert service.headers == {"X-A": value}


def test_a_header_name_with_a_trailing_newline_is_refused() -> None:
    # `$` matched before a final newline: "X-A\n" passed as an HTTP token.
    with pytest.raises(ValueError, match="is not a valid HTTP token"):
        ServiceDefinition("api", "http", "m", [], "http://h/", headers={"X-A\n": "v"})


def test_a_service_definition_copies_pickles_and_converts_like_any_dataclass() -> None:
    # Review of issue 11: its headers, held as a MappingProxyType to keep them
    # read-only, made dataclasses.asdict(), copy.deepcopy() and pickle raise
    # `TypeError: cannot pickle 'mappingproxy' object`.
    service = ServiceDefinition("api", "http", "m", [], "http://h/", headers={"X-A": "v"})
    assert copy.deepcopy(service) == service
    assert pickle.loads(pickle.dumps(service)) == service  # noqa: S301 - our own bytes
    as_dict = dataclasses.asdict(service)
    assert as_dict["headers"] == {"X-A": "v"}
    assert json.loads(json.dumps(as_dict))["headers"] == {"X-A": "v"}
    for changed in (copy.deepcopy(service), pickle.loads(pickle.dumps(service))):  # noqa: S301
        with pytest.raises(TypeError):
            changed.headers["X-A"] = "a\r\nInjected: yes"  # type: ignore[index]
