"""`healthmon run`: monitor the services of a config file until SIGINT or SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import signal
import time
from collections.abc import Callable

import structlog

from healthmon.cli.database import add_database_argument, default_database
from healthmon.cli.logsetup import add_logging_arguments, setup_logging
from healthmon.config import Config, load_config
from healthmon.errors import ConfigError
from healthmon.monitor import HealthMonitor
from healthmon.store import HealthStore
from healthmon.store.engine import display_url

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
    add_database_argument(parser, default=False)
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
    setup_logging(args, config.log_level, config.log_format, default_level="info")
    with asyncio.Runner(loop_factory=_loop_factory(args.loop)) as runner:
        return runner.run(monitor_until_signalled(config, database))


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


async def monitor_until_signalled(config: Config, database: str) -> int:
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
            monitor = HealthMonitor(store=store, **config.monitor)
            for service in config.services:
                monitor.add_service(service)
            async with monitor:
                log.info(
                    "monitor_started",
                    config=str(config.path),
                    database=display_url(store.url),
                    services=[service.name for service in config.services],
                    check_interval=monitor.check_interval,
                )
                await stop.wait()
                stopping_at = time.perf_counter()
                log.info("monitor_stopping", signal=received[0])
            # Leaving `async with monitor` cancelled the checks in flight and flushed.
        log.info("monitor_stopped", stop_ms=round((time.perf_counter() - stopping_at) * 1000))
    finally:
        for signum in signals:
            loop.remove_signal_handler(signum)
    return 0
