"""Config files read generically from the classes they configure (in-process, fast)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from healthmon import ConfigError, HealthStore, ServiceDefinition
from healthmon.config import load_config, monitor_keys, service_keys, store_keys
from healthmon.policy import CheckPolicy


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "services.toml"
    path.write_text(text)
    return path


SERVICE = '[[services]]\nname = "api"\nservice_type = "http"\nmodule_path = "m"\n'


def test_every_field_of_the_configured_classes_is_a_key() -> None:
    assert set(service_keys()) == {f.name for f in dataclasses.fields(ServiceDefinition)}
    policy_fields = {f.name for f in dataclasses.fields(CheckPolicy) if f.init}
    assert policy_fields <= set(monitor_keys())
    assert {"check_interval", "flush_interval", "max_pending"} <= set(monitor_keys())
    assert {"store", "http_client", "policy"}.isdisjoint(monitor_keys())
    assert {"database", "retention", "gap_after"} <= set(store_keys())
    assert service_keys()["name"][1]
    assert not service_keys()["headers"][1]


def test_values_are_converted_to_their_type_hints(tmp_path: Path) -> None:
    config = load_config(
        write(
            tmp_path,
            "[monitor]\ncheck_interval = 1\ntimeout = 3\n[store.retention]\nraw = 86400\n"
            + SERVICE
            + 'health_check_url = "http://h/"\ninterval = 1\ndependencies = ["db"]\n'
            + 'headers = { X-Token = "s3cret" }\n',
        )
    )
    (service,) = config.services
    assert service.interval == 1.0
    assert isinstance(service.interval, float)
    assert service.headers == {"X-Token": "s3cret"}
    assert config.monitor["check_interval"] == 1.0
    assert config.monitor["policy"] == CheckPolicy(timeout=3.0)
    store = HealthStore(":memory:", **config.store)
    assert store.retention.raw == 86400.0


def test_secrets_are_not_echoed_in_errors(tmp_path: Path) -> None:
    path = write(tmp_path, SERVICE + 'headers = { Authorization = ["Bearer s3cret"] }\n')
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert "field 'headers'" in str(caught.value)
    assert "s3cret" not in str(caught.value)
    path = write(tmp_path, SERVICE + 'health_check_url = "gopher://user:s3cret@h/"\n')
    with pytest.raises(ConfigError, match="field 'health_check_url'") as caught:
        load_config(path)
    assert "s3cret" not in str(caught.value)


@pytest.mark.parametrize(
    "value",
    ['"Bearer s3cret"', '["Bearer s3cret"]', "1234567", "12.5", "true"],
    ids=["string", "array", "integer", "float", "boolean"],
)
def test_a_header_value_of_any_type_is_not_echoed(tmp_path: Path, value: str) -> None:
    # Issue 11 #5: `headers = "Bearer s3cret"` quoted the secret in the error.
    path = write(tmp_path, SERVICE + f"headers = {value}\n")
    with pytest.raises(ConfigError, match="field 'headers': must be a table of strings") as caught:
        load_config(path)
    message = str(caught.value)
    for secret in ("s3cret", "1234567", "12.5", "true"):
        assert secret not in message


def test_a_service_named_like_a_field_does_not_confuse_the_message(tmp_path: Path) -> None:
    path = write(tmp_path, SERVICE.replace('"api"', '"timeout"') + "interval = 5\n")
    with pytest.raises(ConfigError, match="field 'interval'"):
        load_config(path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", r"\[\[services\]\]: no services"),
        ("services = 3\n", "must be \\[\\[services\\]\\] tables"),
        ("monitor = 3\n" + SERVICE, r"\[monitor\]: must be a table, got an integer"),
        ("[extra]\n" + SERVICE, "the top level: unknown key 'extra'"),
        ("[store]\nretention = 5\n" + SERVICE, "field 'retention': must be a table"),
        ('[store]\ndatabase = "mysql://u:pw@db/x"\n' + SERVICE, "field 'database'"),
    ],
)
def test_structure_errors(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        load_config(write(tmp_path, text))
    assert "pw@" not in str(caught.value)


def test_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "nope.toml")


@pytest.mark.parametrize(
    "headers", ['{ "A B" = "v" }', '{ A = "Bearer s3cret " }'], ids=["name", "value"]
)
def test_a_bad_header_is_blamed_on_the_headers_field(tmp_path: Path, headers: str) -> None:
    # Review of issue 11: `header name 'A B' is not a valid HTTP token` was reported as
    # "field 'name'" (the first field the message mentions), the service's name.
    path = write(tmp_path, SERVICE + f"headers = {headers}\n")
    with pytest.raises(ConfigError, match=r"\(\[\[services\]\] #1\), field 'headers': ") as caught:
        load_config(path)
    assert "s3cret" not in str(caught.value)


def test_check_workers_is_a_monitor_key_validated_as_the_monitor_does(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "[monitor]\ncheck_workers = 2\n" + SERVICE))
    assert config.monitor["check_workers"] == 2
    with pytest.raises(ConfigError, match=r"check_workers.*between 0"):
        load_config(write(tmp_path, "[monitor]\ncheck_workers = 99\n" + SERVICE))
