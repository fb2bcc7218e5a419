"""Config files: TOML -> monitor settings and ServiceDefinitions, with precise errors.

    [monitor]                      # optional; every key optional
    database = "health.db"         # a path (relative to this file) or a SQLite URL
    log_level = "info"             # debug, info, warning, error
    log_format = "json"            # console or json (default: console on a terminal)
    check_interval = 0.1           # ... any keyword of HealthMonitor(), and the fields of
    timeout = 2.0                  # its `policy` (CheckPolicy): per-service defaults

    [[services]]                   # one table per service: ServiceDefinition's fields
    name = "api"
    service_type = "http"
    module_path = "api.main"
    health_check_url = "http://127.0.0.1:8000/health"

The keys of both tables come from the code, not from a list kept here: `[monitor]`
takes HealthMonitor's keyword arguments (except `store` and `http_client`; a
dataclass argument such as `policy` is spread into its fields) and `[[services]]`
takes ServiceDefinition's fields, each checked against its type hint.
A field added to either is configurable at once. Values are then validated by
building the monitor and registering every service, as `run` will, so a config
that loads is one that starts; any error names the file, the service and the field.
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

from healthmon.errors import ConfigError
from healthmon.log import LogFormat
from healthmon.model import ServiceDefinition
from healthmon.monitor import HealthMonitor
from healthmon.store.engine import database_url, display_url

__all__ = [
    "LOG_FORMATS",
    "LOG_LEVELS",
    "Config",
    "MonitorKey",
    "load_config",
    "monitor_keys",
    "service_keys",
]

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
LOG_FORMATS: tuple[LogFormat, ...] = ("console", "json")

# [monitor] keys that are the command's, not HealthMonitor's.
_COMMAND_KEYS: dict[str, Any] = {"database": str, "log_level": str, "log_format": str}
# HealthMonitor arguments a file cannot express: the command builds these itself.
_NOT_CONFIGURABLE = {"self", "store", "http_client"}

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class Config:
    """A loaded, validated config file."""

    path: Path
    services: tuple[ServiceDefinition, ...]
    monitor: Mapping[str, Any]
    """Keyword arguments for HealthMonitor()."""
    database: str | None = None
    """As written in the file, with a relative path resolved against the file's folder."""
    log_level: str | None = None
    log_format: LogFormat | None = None


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


@dataclass(frozen=True, slots=True)
class MonitorKey:
    """A `[monitor]` key: its type hint, and the HealthMonitor argument it goes to when
    that argument is a settings dataclass spread into `[monitor]` (e.g. `policy`)."""

    hint: Any
    argument: str | None = None


def monitor_keys() -> dict[str, MonitorKey]:
    """The `[monitor]` keys: the command's own, HealthMonitor's keyword arguments, and
    the fields of any dataclass argument (so `[monitor]` takes the same per-service
    defaults, under the same names, that `[[services]]` overrides)."""
    hints = typing.get_type_hints(HealthMonitor.__init__)
    keys = {name: MonitorKey(hint) for name, hint in _COMMAND_KEYS.items()}
    for name, parameter in inspect.signature(HealthMonitor.__init__).parameters.items():
        if name in _NOT_CONFIGURABLE or parameter.kind is parameter.VAR_KEYWORD:
            continue
        hint = hints.get(name, Any)
        settings = _dataclass_in(hint)
        if settings is None:
            keys[name] = MonitorKey(hint)
            continue
        field_hints = typing.get_type_hints(settings)
        for field in dataclasses.fields(settings):
            if field.init:
                keys[field.name] = MonitorKey(field_hints.get(field.name, Any), name)
    return keys


def _dataclass_in(hint: Any) -> type[Any] | None:
    """The dataclass a hint names (`X` or `X | None`), if any."""
    arms = get_args(hint) if get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    found = [arm for arm in arms if isinstance(arm, type) and dataclasses.is_dataclass(arm)]
    return found[0] if len(found) == 1 else None


def service_keys() -> dict[str, tuple[Any, bool]]:
    """The `[[services]]` keys: each ServiceDefinition field's type hint and whether
    it is required."""
    hints = typing.get_type_hints(ServiceDefinition)
    return {
        field.name: (
            hints.get(field.name, Any),
            field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING,
        )
        for field in dataclasses.fields(ServiceDefinition)
        if field.init
    }


class _MismatchError(Exception):
    """A value does not fit a type hint; the message says what was expected."""


class _Loader:
    def __init__(self, path: Path) -> None:
        self.path = path

    def error(self, where: str, message: str, field: str | None = None) -> ConfigError:
        field_text = f", field {field!r}" if field else ""
        return ConfigError(f"{self.path}: {where}{field_text}: {message}")

    def config(self, data: dict[str, Any]) -> Config:
        self.refuse_unknown("the top level", data, ["monitor", "services"])
        settings = self.table(data.get("monitor", {}), "[monitor]")
        tables = data.get("services")
        if tables is None or tables == []:
            raise self.error("[[services]]", "no services: add one [[services]] table per service")
        if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
            raise self.error("services", "must be [[services]] tables, one per service")
        services = self.services(tables)
        monitor_args, command = self.monitor(settings)
        self.validate(monitor_args, services, tables)
        return Config(
            path=self.path,
            services=tuple(services),
            monitor=monitor_args,
            database=self.database(command.get("database")),
            log_level=command.get("log_level"),
            log_format=command.get("log_format"),
        )

    def table(self, value: Any, where: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.error(where, f"must be a table, got {_kind(value)}")
        return value

    def refuse_unknown(self, where: str, given: Mapping[str, Any], known: Sequence[str]) -> None:
        for key in given:
            if key not in known:
                close = difflib.get_close_matches(key, known, n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                raise self.error(
                    where, f"unknown key {key!r}; {hint}known keys: {', '.join(sorted(known))}"
                )

    # -- [monitor] ----------------------------------------------------------------------

    def monitor(self, settings: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """Split `[monitor]` into HealthMonitor arguments and the command's own keys."""
        keys = monitor_keys()
        self.refuse_unknown("[monitor]", settings, list(keys))
        monitor_args: dict[str, Any] = {}
        command: dict[str, Any] = {}
        spread: dict[str, dict[str, Any]] = {}
        for key, value in settings.items():
            try:
                checked = _fit(value, keys[key].hint)
            except _MismatchError as exc:
                raise self.error(
                    "[monitor]", f"must be {exc}, got {_kind(value)} {_show(value)}", key
                ) from None
            argument = keys[key].argument
            if argument is not None:
                spread.setdefault(argument, {})[key] = checked
            elif key in _COMMAND_KEYS:
                command[key] = checked
            else:
                monitor_args[key] = checked
        hints = typing.get_type_hints(HealthMonitor.__init__)
        for argument, values in spread.items():
            settings_class = _dataclass_in(hints[argument])
            assert settings_class is not None
            monitor_args[argument] = self.build("[monitor]", settings_class, values)
        for key, allowed in (("log_level", LOG_LEVELS), ("log_format", LOG_FORMATS)):
            value = command.get(key)
            if value is not None and value not in allowed:
                raise self.error(
                    "[monitor]", f"must be one of {', '.join(allowed)}, got {value!r}", key
                )
        return monitor_args, command

    def database(self, value: str | None) -> str | None:
        if value is None:
            return None
        if "://" not in value and not Path(value).expanduser().is_absolute():
            value = str(self.path.parent / value)  # relative to the file, not the cwd
        try:
            database_url(value)
        except ValueError as exc:
            raise self.error("[monitor]", str(exc), "database") from None
        return value

    # -- [[services]] -------------------------------------------------------------------

    def services(self, tables: list[dict[str, Any]]) -> list[ServiceDefinition]:
        keys = service_keys()
        services: list[ServiceDefinition] = []
        first_table: dict[str, int] = {}
        for number, table in enumerate(tables, start=1):
            where = _service_where(number, table)
            self.refuse_unknown(where, table, list(keys))
            arguments: dict[str, Any] = {}
            for key, (hint, required) in keys.items():
                if key not in table:
                    if required:
                        raise self.error(where, "is required but missing", key)
                    continue
                try:
                    arguments[key] = _fit(table[key], hint)
                except _MismatchError as exc:
                    value = table[key]
                    raise self.error(
                        where, f"must be {exc}, got {_kind(value)} {_show(value)}", key
                    ) from None
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
        monitor_args: dict[str, Any],
        services: list[ServiceDefinition],
        tables: list[dict[str, Any]],
    ) -> None:
        """Build the monitor and register every service, as `run` will (no I/O: a
        monitor does nothing until started), so the checks of the code itself apply."""
        monitor = self.build("[monitor]", HealthMonitor, monitor_args)
        for number, service in enumerate(services, start=1):
            where = _service_where(number, tables[number - 1])
            self.build(where, monitor.add_service, {"service": service}, fields=tables[number - 1])

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
    """The field a validation message is about: the longest field name it mentions
    (e.g. `health_check_url must use http or https` -> health_check_url)."""
    named = [key for key in fields if re.search(rf"\b{re.escape(key)}\b", message)]
    return max(named, key=len) if named else None


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
