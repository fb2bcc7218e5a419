"""Config files: TOML -> store, monitor and service settings, with precise errors.

    [log]                          # optional
    level = "info"                 # debug, info, warning, error, critical
    format = "json"                # console or json (default: console on a terminal)

    [store]                        # optional: HealthStore's settings
    database = "health.db"         # a path (relative to this file) or a SQLite URL
    gap_after = 10.0
    [store.retention]              # seconds per tier
    raw = 604800

    [monitor]                      # optional: HealthMonitor's settings
    check_interval = 0.1
    timeout = 2.0                  # its `policy`'s fields: defaults for every service

    [http]                         # optional: serve the HTTP face (HttpSettings' fields)
    host = "127.0.0.1"
    port = 8080

    [[services]]                   # one table per service: ServiceDefinition's fields
    name = "api"
    service_type = "http"
    module_path = "api.main"
    health_check_url = "http://127.0.0.1:8000/health"

The keys come from the code, not from lists kept here: `[store]` takes HealthStore's
keyword arguments, `[monitor]` HealthMonitor's (except `store` and `http_client`),
`[[services]]` ServiceDefinition's fields, `[http]` HttpSettings' fields, each value
checked against its type hint.
A settings dataclass among them is a sub-table (`[store.retention]`), except the
monitor's `policy`, whose fields sit in `[monitor]` itself under the names that
`[[services]]` uses to override them. A field added to any of these classes is
configurable at once. Values are then validated by building the store, the monitor
and every service as `run` will (none of that does I/O), so a config that loads is
one that starts; an error names the file, the table or service, and the field.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import inspect
import re
import tomllib
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

from healthmon.errors import ConfigError
from healthmon.http.settings import HttpSettings
from healthmon.log import LogFormat
from healthmon.model import ServiceDefinition
from healthmon.monitor import HealthMonitor
from healthmon.store import HealthStore
from healthmon.store.engine import database_url, display_url

__all__ = [
    "LOG_FORMATS",
    "LOG_LEVELS",
    "Config",
    "http_keys",
    "load_config",
    "monitor_keys",
    "service_keys",
    "store_keys",
]

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
LOG_FORMATS: tuple[LogFormat, ...] = ("console", "json")

_SPREAD = "policy"
"""The HealthMonitor argument whose fields are `[monitor]` keys (per-service defaults)."""

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class Config:
    """A loaded, validated config file."""

    path: Path
    services: tuple[ServiceDefinition, ...]
    monitor: Mapping[str, Any] = field(default_factory=dict)
    """Keyword arguments for HealthMonitor()."""
    store: Mapping[str, Any] = field(default_factory=dict)
    """Keyword arguments for HealthStore() but the database."""
    database: str | None = None
    """As written in the file, a relative path resolved against the file's folder."""
    log_level: str | None = None
    log_format: LogFormat | None = None
    http: HttpSettings | None = None
    """The `[http]` table's settings; None without one (no HTTP face unless --http)."""


def load_config(path: str | Path) -> Config:
    """Read and validate a TOML config file; raise ConfigError naming what is wrong where."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: no such config file") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the config file: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    return _Loader(path).config(data)


def _keywords(function: Callable[..., Any], exclude: set[str]) -> dict[str, Any]:
    """A function's keyword parameters and their type hints."""
    hints = typing.get_type_hints(function)
    return {
        name: hints.get(name, Any)
        for name, parameter in inspect.signature(function).parameters.items()
        if name not in exclude
        and parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY)
    }


def _fields(cls: type[Any]) -> dict[str, Any]:
    """A dataclass's constructor fields and their type hints."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(cls) if f.init}


def monitor_keys() -> dict[str, Any]:
    """`[monitor]` keys and their type hints: HealthMonitor's keyword arguments, with
    its `policy` spread into its fields."""
    keys = _keywords(HealthMonitor.__init__, {"self", "store", "http_client"})
    policy = _dataclass_in(keys.pop(_SPREAD, None))
    return {**keys, **(_fields(policy) if policy is not None else {})}


def store_keys() -> dict[str, Any]:
    """`[store]` keys and their type hints: the database and HealthStore's keywords."""
    return {"database": str, **_keywords(HealthStore.__init__, {"self", "url", "migrate"})}


def http_keys() -> dict[str, Any]:
    """`[http]` keys and their type hints: HttpSettings' fields."""
    return _fields(HttpSettings)


def service_keys() -> dict[str, tuple[Any, bool]]:
    """`[[services]]` keys: each ServiceDefinition field's type hint, and whether it
    is required."""
    hints = _fields(ServiceDefinition)
    return {
        f.name: (
            hints[f.name],
            f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING,
        )
        for f in dataclasses.fields(ServiceDefinition)
        if f.init
    }


_SECRET_KEYS = frozenset(f.name for f in dataclasses.fields(ServiceDefinition) if not f.repr)
"""Keys whose values are never shown in a message, whatever their type: the fields a
ServiceDefinition keeps out of its repr (its headers)."""


def _dataclass_in(hint: Any) -> type[Any] | None:
    """The dataclass a hint names (`X` or `X | None`), if any."""
    arms = get_args(hint) if get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    found = [arm for arm in arms if isinstance(arm, type) and dataclasses.is_dataclass(arm)]
    return found[0] if len(found) == 1 else None


class _MismatchError(Exception):
    """A value does not fit a type hint; the message says what was expected."""


class _Loader:
    def __init__(self, path: Path) -> None:
        self.path = path

    def error(self, where: str, message: str, field: str | None = None) -> ConfigError:
        field_text = f", field {field!r}" if field else ""
        return ConfigError(f"{self.path}: {where}{field_text}: {message}")

    def config(self, data: dict[str, Any]) -> Config:
        self.refuse_unknown("the top level", data, ["http", "log", "monitor", "services", "store"])
        log = self.keyed("[log]", self.table(data, "log"), {"level": str, "format": str})
        for key, allowed in (("level", LOG_LEVELS), ("format", LOG_FORMATS)):
            if key in log and log[key] not in allowed:
                raise self.error(
                    "[log]", f"must be one of {', '.join(allowed)}, got {log[key]!r}", key
                )
        store = self.store(self.table(data, "store"))
        database = self.database(store.pop("database", None))
        monitor = self.monitor(self.table(data, "monitor"))
        tables = data.get("services")
        if tables is None or tables == []:
            raise self.error("[[services]]", "no services: add one [[services]] table per service")
        if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
            raise self.error("services", "must be [[services]] tables, one per service")
        services = self.services(tables)
        self.validate(store, monitor, services, tables)
        http = None
        if "http" in data:
            values = self.keyed("[http]", self.table(data, "http"), http_keys())
            http = self.build("[http]", HttpSettings, values)
        return Config(
            path=self.path,
            services=tuple(services),
            monitor=monitor,
            store=store,
            database=database,
            log_level=log.get("level"),
            log_format=log.get("format"),
            http=http,
        )

    def table(self, data: Mapping[str, Any], key: str) -> dict[str, Any]:
        value = data.get(key, {})
        if not isinstance(value, dict):
            raise self.error(f"[{key}]", f"must be a table, got {_kind(value)}")
        return value

    def refuse_unknown(self, where: str, given: Mapping[str, Any], known: Sequence[str]) -> None:
        for key in given:
            if key not in known:
                close = difflib.get_close_matches(key, known, n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                raise self.error(
                    where, f"unknown key {key!r}; {hint}known keys: {', '.join(sorted(known))}"
                )

    def keyed(
        self, where: str, table: Mapping[str, Any], keys: Mapping[str, Any]
    ) -> dict[str, Any]:
        """The table's values checked against `keys` (name -> type hint); a settings
        dataclass is a sub-table, built here."""
        self.refuse_unknown(where, table, list(keys))
        checked: dict[str, Any] = {}
        for key, value in table.items():
            settings = _dataclass_in(keys[key])
            if settings is not None and isinstance(value, dict):
                inner = f"{where[:-1]}.{key}]" if where.endswith("]") else f"{where}.{key}"
                values = self.keyed(inner, value, _fields(settings))
                checked[key] = self.build(inner, settings, values)
                continue
            try:
                checked[key] = _fit(value, keys[key])
            except _MismatchError as exc:
                shown = "" if key in _SECRET_KEYS else f" {_show(value)}"
                raise self.error(where, f"must be {exc}, got {_kind(value)}{shown}", key) from None
        return checked

    def store(self, table: dict[str, Any]) -> dict[str, Any]:
        return self.keyed("[store]", table, store_keys())

    def monitor(self, table: dict[str, Any]) -> dict[str, Any]:
        """HealthMonitor's arguments, with the policy's fields gathered into `policy`."""
        checked = self.keyed("[monitor]", table, monitor_keys())
        policy_class = _dataclass_in(_keywords(HealthMonitor.__init__, set()).get(_SPREAD))
        if policy_class is None:
            return checked
        policy_fields = _fields(policy_class)
        policy = {key: checked.pop(key) for key in list(checked) if key in policy_fields}
        if policy:
            checked[_SPREAD] = self.build("[monitor]", policy_class, policy)
        return checked

    def database(self, value: str | None) -> str | None:
        if value is None:
            return None
        if "://" not in value and not Path(value).expanduser().is_absolute():
            value = str(self.path.parent / value)  # relative to the file, not the cwd
        try:
            database_url(value)
        except ValueError as exc:
            raise self.error("[store]", str(exc), "database") from None
        return value

    def services(self, tables: list[dict[str, Any]]) -> list[ServiceDefinition]:
        keys = service_keys()
        services: list[ServiceDefinition] = []
        first_table: dict[str, int] = {}
        for number, table in enumerate(tables, start=1):
            where = _service_where(number, table)
            arguments = self.keyed(where, table, {key: hint for key, (hint, _) in keys.items()})
            for key, (_, required) in keys.items():
                if required and key not in arguments:
                    raise self.error(where, "is required but missing", key)
            name = arguments["name"]
            if name in first_table:
                raise self.error(
                    where,
                    f"duplicate service name, already used by [[services]] #{first_table[name]}",
                    "name",
                )
            first_table[name] = number
            services.append(self.build(where, ServiceDefinition, arguments))
        return services

    def validate(
        self,
        store: dict[str, Any],
        monitor: dict[str, Any],
        services: list[ServiceDefinition],
        tables: list[dict[str, Any]],
    ) -> None:
        """Build the store, the monitor and register every service, as `run` will (no
        I/O: neither opens or starts anything here), so the code's own checks apply."""
        self.build("[store]", lambda **kw: HealthStore(":memory:", **kw), store)
        built = self.build("[monitor]", HealthMonitor, monitor)
        for number, service in enumerate(services, start=1):
            where = _service_where(number, tables[number - 1])
            self.build(where, built.add_service, {"service": service}, fields=tables[number - 1])

    def build(
        self,
        where: str,
        factory: Callable[..., _T],
        arguments: dict[str, Any],
        fields: Mapping[str, Any] | None = None,
    ) -> _T:
        """Call `factory(**arguments)`, turning its ValueError/TypeError into a ConfigError
        that names the field its message mentions."""
        try:
            return factory(**arguments)
        except (ValueError, TypeError) as exc:
            message = str(exc)
            field = _field_named_in(message, fields if fields is not None else arguments)
            raise self.error(where, message, field) from exc


def _service_where(number: int, table: Mapping[str, Any]) -> str:
    name = table.get("name")
    return (
        f"service {name!r} ([[services]] #{number})"
        if isinstance(name, str)
        else (f"[[services]] #{number}")
    )


def _field_named_in(message: str, fields: Mapping[str, Any]) -> str | None:
    """The field a validation message is about: the first one it mentions (e.g.
    `service 'a': health_check_url must use http or https` -> health_check_url).
    Quoted text is a value (a service named 'timeout'), not a field."""
    message = re.sub(r"'[^']*'|\"[^\"]*\"", "", message)
    found = [
        (match.start(), -len(key), key)
        for key in fields
        if (match := re.search(rf"\b{re.escape(key)}\b", message))
    ]
    return min(found)[2] if found else None


def _kind(value: object) -> str:
    """A TOML reader's word for a value's type."""
    if isinstance(value, bool):
        return "a boolean"
    return {
        int: "an integer",
        float: "a float",
        str: "a string",
        list: "an array",
        dict: "a table",
    }.get(type(value), f"a {type(value).__name__}")


def _show(value: object) -> str:
    """A value for an error message: a table's values are not shown (they may be
    secrets, e.g. headers), nor credentials in a URL."""
    if isinstance(value, dict):
        return "with keys " + ", ".join(repr(key) for key in value)
    if isinstance(value, str) and "://" in value:
        return repr(display_url(value) if "@" in value else value)
    return repr(value)


def _fit(value: Any, hint: Any) -> Any:  # noqa: PLR0911, PLR0912 - one case per kind of hint
    """`value` checked against `hint` and converted where TOML and Python differ (an
    array for a tuple or set, a string for an Enum). Raises _MismatchError saying what was
    expected. A type this function does not know passes unchanged: the class that
    declared it validates it in its constructor."""
    if hint is Any or hint is object:
        return value
    origin = get_origin(hint)
    if origin is typing.Union or origin is types.UnionType:
        arms = [arm for arm in get_args(hint) if arm is not type(None)]
        for arm in arms:
            try:
                return _fit(value, arm)
            except _MismatchError:
                continue
        raise _MismatchError(" or ".join(_describe(arm) for arm in arms))
    if origin is Literal:
        if value in get_args(hint):
            return value
        raise _MismatchError(_describe(hint))
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise _MismatchError("true or false")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _MismatchError("an integer")
    if hint is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise _MismatchError("a number")
    if hint is str:
        if isinstance(value, str):
            return value
        raise _MismatchError("a string")
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        for member in hint:
            if value in (member.value, member.name):
                return member
        raise _MismatchError(_describe(hint))
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        raise _MismatchError("a table")  # a table is built by the loader, not here
    container = origin if origin is not None else hint
    if container in (list, tuple, set, frozenset) or container in (
        Sequence,
        typing.Sequence,
    ):
        if not isinstance(value, list):
            raise _MismatchError(_describe(hint))
        args = get_args(hint)
        item = args[0] if args else Any
        try:
            items = [_fit(element, item) for element in value]
        except _MismatchError:
            raise _MismatchError(_describe(hint)) from None
        return list(items) if container in (list, Sequence) else container(items)
    if container in (dict, Mapping):
        if not isinstance(value, dict):
            raise _MismatchError(_describe(hint))
        args = get_args(hint)
        item = args[1] if len(args) == 2 else Any
        try:
            return {key: _fit(element, item) for key, element in value.items()}
        except _MismatchError:
            raise _MismatchError(_describe(hint)) from None
    return value


def _describe(hint: Any) -> str:  # noqa: PLR0911 - one case per kind of hint
    """What a type hint asks of a TOML value, in words."""
    origin = get_origin(hint)
    args = get_args(hint)
    if origin is Literal:
        return "one of " + ", ".join(repr(arg) for arg in args)
    if origin is typing.Union or origin is types.UnionType:
        return " or ".join(_describe(arm) for arm in args if arm is not type(None))
    simple = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    if hint in simple:
        return simple[hint]
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return "one of " + ", ".join(repr(member.value) for member in hint)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return "a table"
    container = origin if origin is not None else hint
    if container in (list, tuple, set, frozenset, Sequence):
        item = args[0] if args else Any
        return "an array" if item is Any else f"an array of {_plural(_describe(item))}"
    if container in (dict, Mapping):
        item = args[1] if len(args) == 2 else Any
        return "a table" if item is Any else f"a table of {_plural(_describe(item))}"
    return getattr(hint, "__name__", str(hint))


def _plural(described: str) -> str:
    return re.sub(r"^an? (\w+)", r"\1s", described)
