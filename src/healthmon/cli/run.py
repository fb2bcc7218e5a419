"""`healthmon run`: monitor the services of a config file until SIGINT or SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import importlib.util
import signal
import time
from collections.abc import Callable

import structlog

from healthmon.cli.database import add_database_argument, default_database
from healthmon.cli.logsetup import add_logging_arguments, setup_logging
from healthmon.cluster import ClusterSettings
from healthmon.config import Config, load_config
from healthmon.errors import ConfigError
from healthmon.http.settings import TOKEN_ENV, HttpSettings, parse_listen
from healthmon.model import HealthCheckResult
from healthmon.monitor import HealthMonitor
from healthmon.store import HealthStore
from healthmon.store.engine import database_url, display_url, is_postgres

__all__ = ["register"]

log = structlog.get_logger("healthmon.cli")


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "run",
        help="monitor the services of a config file until SIGINT or SIGTERM",
        description="Check every service of the config file on its schedule and store every "
        "result, until SIGINT (Ctrl-C) or SIGTERM; then stop the checks in flight, write "
        "what is pending and exit 0 (within about 2 s). The database is created or upgraded "
        "as needed. A bad config is refused before anything starts (exit 2).",
    )
    parser.add_argument(
        "--config",
        required=True,
        metavar="FILE",
        help="TOML config file (see examples/services.toml)",
    )
    parser.add_argument(
        "--http",
        metavar="HOST:PORT",
        help="serve the HTTP API, event stream and /metrics on this address (e.g. "
        "127.0.0.1:8080; overrides [http]'s host and port). Needs healthmon[http]. A "
        f"bearer token comes from ${TOKEN_ENV} or [http] token; without one only a "
        "loopback address is served",
    )
    parser.add_argument(
        "--http-allow-unauthenticated",
        action="store_true",
        help="serve a non-loopback address without a token (anyone reaching it reads the monitor)",
    )
    add_database_argument(parser, default=False)
    parser.add_argument(
        "--node",
        metavar="NAME",
        help="run as a cluster node under this name (PostgreSQL only; the config's "
        "[cluster] table holds the other settings; see docs/cluster.md)",
    )
    parser.add_argument(
        "--loop",
        choices=["asyncio", "uvloop"],
        default="asyncio",
        help="the event loop: asyncio's (default) or uvloop's, if installed "
        "(pip install 'healthmon[uvloop]'; see docs/performance.md for what it gains)",
    )
    add_logging_arguments(parser, default_level="info", config=True)
    parser.set_defaults(handler=command)


def command(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    database = args.database or config.database or default_database()
    http = http_settings(args, config)
    setup_logging(args, config.log_level, config.log_format, default_level="info")
    cluster = config.cluster
    if args.node is not None:
        try:
            cluster = dataclasses.replace(cluster or ClusterSettings(), node=args.node)
        except ValueError as exc:
            raise ConfigError(f"--node: {exc}") from None
    if cluster is not None and not is_postgres(database_url(database)):
        raise ConfigError(
            f"cluster mode (--node or [cluster]) needs a PostgreSQL database; "
            f"{display_url(database_url(database))!r} is SQLite, which one process uses alone"
        )
    with asyncio.Runner(loop_factory=_loop_factory(args.loop)) as runner:
        return runner.run(monitor_until_signalled(config, database, http, cluster))


def _loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """None for asyncio's own loop; uvloop's when asked for (an optional extra)."""
    if name == "asyncio":
        return None
    try:
        import uvloop  # noqa: PLC0415 - optional: only when asked for
    except ImportError as exc:
        raise ConfigError(
            "--loop uvloop needs the uvloop package: pip install 'healthmon[uvloop]'"
        ) from exc
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def http_settings(args: argparse.Namespace, config: Config) -> HttpSettings | None:
    """The HTTP face's settings from [http], --http and the environment; None when
    neither asks for it. ConfigError (exit 2) when they cannot be served safely."""
    settings = config.http
    if args.http is None and settings is None and not args.http_allow_unauthenticated:
        return None
    try:
        settings = settings or HttpSettings()
        if args.http is not None:
            host, port = parse_listen(args.http)
            settings = dataclasses.replace(settings, host=host, port=port)
        if args.http_allow_unauthenticated:
            settings = dataclasses.replace(settings, allow_unauthenticated=True)
        settings = settings.token_from_env()
        settings.check_exposure()
    except ValueError as exc:
        raise ConfigError(f"--http: {exc}") from None
    if importlib.util.find_spec("uvicorn") is None or importlib.util.find_spec("starlette") is None:
        raise ConfigError(
            "--http needs the http extra: pip install 'healthmon[http]' (Starlette, uvicorn, "
            "prometheus_client)"
        )
    return settings


async def monitor_until_signalled(
    config: Config,
    database: str,
    http: HttpSettings | None = None,
    cluster: ClusterSettings | None = None,
) -> int:
    stop = asyncio.Event()
    received: list[str] = []

    def on_signal(signum: signal.Signals) -> None:
        received.append(signum.name)
        stop.set()

    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM)
    for signum in signals:
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        async with HealthStore(database, **config.store) as store:
            monitor = HealthMonitor(store=store, cluster=cluster, **config.monitor)
            for service in config.services:
                monitor.add_service(service)
            if cluster is not None:
                monitor.subscribe(_log_heard)
            async with monitor, contextlib.AsyncExitStack() as serving:
                log.info(
                    "monitor_started",
                    config=str(config.path),
                    database=display_url(store.url),
                    services=[service.name for service in config.services],
                    check_interval=monitor.check_interval,
                    node=None if monitor.cluster is None else monitor.cluster.name,
                )
                if http is not None:
                    from healthmon.http import HttpApi, HttpServer  # noqa: PLC0415 - the extra

                    await serving.enter_async_context(HttpServer(HttpApi(monitor, store, http)))
                await stop.wait()
                stopping_at = time.perf_counter()
                log.info("monitor_stopping", signal=received[0])
            # Leaving `async with monitor` cancelled the checks in flight and flushed.
        log.info("monitor_stopped", stop_ms=round((time.perf_counter() - stopping_at) * 1000))
    finally:
        for signum in signals:
            loop.remove_signal_handler(signum)
    return 0


async def _log_heard(result: HealthCheckResult) -> None:
    """Cluster mode: every node logs every transition of the fleet it hears (a subscriber
    like any other), once each, in commit order per service."""
    log.info(
        "transition_heard",
        service=result.service_name,
        status=result.effective_status.value,
        at=result.timestamp,
        cause=result.error,
    )
