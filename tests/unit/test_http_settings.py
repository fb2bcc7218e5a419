"""The HTTP face's settings: `[http]` in the config file, --http, the token, exposure."""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path
from typing import Any

import pytest

from healthmon import ConfigError
from healthmon.cli import run
from healthmon.config import http_keys, load_config
from healthmon.http import TOKEN_ENV, HttpSettings, parse_listen
from healthmon.http.settings import is_loopback

SERVICE = '[[services]]\nname = "a"\nservice_type = "http"\nmodule_path = "a"\n'


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "services.toml"
    path.write_text(text)
    return path


def test_every_setting_is_an_http_key() -> None:
    assert set(http_keys()) == set(HttpSettings.__dataclass_fields__)


def test_the_http_table_builds_settings(tmp_path: Path) -> None:
    config = load_config(
        write(tmp_path, '[http]\nhost = "::1"\nport = 9000\nmax_streams = 10\n' + SERVICE)
    )
    assert config.http == HttpSettings(host="::1", port=9000, max_streams=10)
    assert load_config(write(tmp_path, SERVICE)).http is None


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ("prot = 1", "[http]: unknown key 'prot'; did you mean 'port'?"),
        ('port = "80"', "[http], field 'port': must be an integer, got a string '80'"),
        ("port = 70000", "[http], field 'port': port must be 0-65535"),
        ("max_wait = 0", "[http], field 'max_wait': max_wait must be a positive number"),
        ("default_wait = 900.0", "default_wait (900.0 s) is longer than max_wait (600.0 s)"),
        ("metrics_max_age = 61", "metrics_max_age must be 0-60 seconds"),
        ("read_share = 0", "[http], field 'read_share': read_share must be a fraction in (0, 1]"),
        ('token = "short-secret"', "token must be a string of at least 16 characters"),
    ],
)
def test_http_table_errors_name_the_field(tmp_path: Path, table: str, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_config(write(tmp_path, f"[http]\n{table}\n" + SERVICE))
    assert message in str(raised.value)
    assert "short-secret" not in str(raised.value)


def test_listen_addresses() -> None:
    assert parse_listen("127.0.0.1:8080") == ("127.0.0.1", 8080)
    assert parse_listen("[::1]:0") == ("::1", 0)
    assert parse_listen(":9") == ("127.0.0.1", 9)
    for bad in ("8080", "host:", "host:http", "h:99999"):
        with pytest.raises(ValueError, match=r"HOST:PORT|port must be"):
            parse_listen(bad)
    assert all(map(is_loopback, ("127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost")))
    assert not any(map(is_loopback, ("0.0.0.0", "::", "10.0.0.1", "example.com")))


def test_a_public_address_needs_a_token_or_consent(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match=r"refusing to listen on 0\.0\.0\.0 without a token"):
        HttpSettings(host="0.0.0.0").check_exposure()
    HttpSettings(host="0.0.0.0", allow_unauthenticated=True).check_exposure()
    HttpSettings(host="0.0.0.0", token="x" * 16).check_exposure()
    monkeypatch.setenv(TOKEN_ENV, "from-the-environment")
    settings = HttpSettings(host="0.0.0.0", token="from-the-config-file").token_from_env()
    assert settings.token == "from-the-environment"
    settings.check_exposure()
    assert "from-the-environment" not in repr(settings)
    monkeypatch.setenv(TOKEN_ENV, "short")
    with pytest.raises(ValueError, match=rf"\${TOKEN_ENV}: token must be"):
        HttpSettings().token_from_env()


def _args(**given: Any) -> argparse.Namespace:
    return argparse.Namespace(**{"http": None, "http_allow_unauthenticated": False, **given})


def test_run_serves_http_only_when_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    config = load_config(write(tmp_path, SERVICE))
    assert run.http_settings(_args(), config) is None
    settings = run.http_settings(_args(http="127.0.0.1:0"), config)
    assert settings is not None
    assert (settings.host, settings.port) == ("127.0.0.1", 0)
    with pytest.raises(ConfigError, match=r"--http: refusing to listen on 0\.0\.0\.0"):
        run.http_settings(_args(http="0.0.0.0:80"), config)
    allowed = run.http_settings(_args(http="0.0.0.0:80", http_allow_unauthenticated=True), config)
    assert allowed is not None
    assert allowed.allow_unauthenticated


def test_run_says_which_extra_http_needs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = load_config(write(tmp_path, SERVICE))
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name: None if name == "uvicorn" else real(name)
    )
    with pytest.raises(ConfigError, match=r"pip install 'healthmon\[http\]'"):
        run.http_settings(_args(http="127.0.0.1:0"), config)
