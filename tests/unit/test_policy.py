"""Check policies: status-code specs, validation, per-service overrides."""

from __future__ import annotations

from typing import Any

import pytest

from healthmon import CheckPolicy, ServiceDefinition
from healthmon.policy import parse_status_codes


@pytest.mark.parametrize(
    ("spec", "codes"),
    [
        ("200", {200}),
        ("200-204", {200, 201, 202, 203, 204}),
        ("2xx", set(range(200, 300))),
        ("200, 3XX", {200, *range(300, 400)}),
        ("200-399", set(range(200, 400))),
    ],
)
def test_status_code_specs(spec: str, codes: set[int]) -> None:
    assert parse_status_codes(spec) == codes


@pytest.mark.parametrize("spec", ["", "ok", "99", "2000", "399-200", "6xx", "200-700", "200,"])
def test_bad_status_code_specs(spec: str) -> None:
    with pytest.raises(ValueError, match="success_codes"):
        parse_status_codes(spec)


@pytest.mark.parametrize(
    ("settings", "error", "message"),
    [
        ({"timeout": 0}, ValueError, "timeout must be greater than 0"),
        ({"timeout": float("nan")}, ValueError, "timeout must be a finite number"),
        ({"failure_threshold": 0}, ValueError, "failure_threshold must be at least 1"),
        ({"success_threshold": True}, TypeError, "success_threshold must be an integer"),
        ({"start_period": -1}, ValueError, "start_period must be a finite number >= 0"),
        ({"max_body_bytes": 0}, ValueError, "max_body_bytes must be at least 1"),
        ({"degraded_after_ms": -5}, ValueError, "degraded_after_ms"),
        ({"verify_tls": "no"}, TypeError, "verify_tls must be true or false"),
    ],
)
def test_policy_validation(settings: dict[str, Any], error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        CheckPolicy(**settings)


def test_overrides_replace_only_what_they_set() -> None:
    base = CheckPolicy(timeout=2.0, failure_threshold=3)
    service = ServiceDefinition("api", "http", "m", [], "http://h/", failure_threshold=5)
    merged = base.with_overrides(service)
    assert (merged.timeout, merged.failure_threshold) == (2.0, 5)
    assert base.with_overrides(ServiceDefinition("x", "http", "m")) is base


@pytest.mark.parametrize(
    ("overrides", "error", "message"),
    [
        ({"failure_threshold": 0}, ValueError, "service 'api': failure_threshold"),
        ({"interval": 2.0}, ValueError, r"service 'api': interval must be between 0\.05"),
        ({"success_codes": "abc"}, ValueError, "service 'api': success_codes"),
        ({"timeout": "5"}, TypeError, "service 'api': timeout must be a number"),
        ({"headers": {"Bad Name": "x"}}, ValueError, "not a valid HTTP token"),
        ({"headers": {"X-Token": "a\r\nInjected: 1"}}, ValueError, "single-line"),
    ],
)
def test_service_overrides_are_validated_with_the_service_named(
    overrides: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        ServiceDefinition("api", "http", "m", [], "http://h/", **overrides)


def test_repr_hides_url_credentials_and_headers() -> None:
    service = ServiceDefinition(
        "api",
        "http",
        "m",
        [],
        "http://u:hunter2@h/health",
        timeout=1.0,
        headers={"Authorization": "Bearer letmein"},
    )
    text = repr(service)
    assert "hunter2" not in text
    assert "letmein" not in text
    assert "http://***@h/health" in text
    assert "timeout=1.0" in text
