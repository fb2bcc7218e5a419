"""The library API in a script: three local targets monitored at 10 Hz into SQLite.

    .venv/bin/python examples/quickstart.py [DATABASE]

(`./scripts/demo` shows more, through the `healthmon` command.)

One target is healthy, one fails, one flips between healthy and failing every
second. The monitor checks them for four seconds, a subscriber prints each status
change once it is committed, and then the script reads back what was stored.
"""

from __future__ import annotations

import asyncio
import sys
from collections import Counter
from pathlib import Path

try:
    from healthmon import (
        CheckPolicy,
        HealthCheckResult,
        HealthMonitor,
        HealthStore,
        ServiceDefinition,
    )
    from healthmon.log import configure_logging
    from healthmon.targets import TargetServer
except ModuleNotFoundError as exc:  # run with a Python that lacks healthmon
    if exc.name != "healthmon":
        raise
    sys.exit(
        f"healthmon is not installed for {sys.executable}. From the clone, run:\n"
        "  .venv/bin/python examples/quickstart.py\n"
        "(./scripts/demo or ./scripts/test makes .venv), or `pip install -e .` first."
    )

RUN_SECONDS = 4.0


async def main(database: Path) -> None:
    with TargetServer() as targets:
        async with HealthStore(database) as store:
            monitor = HealthMonitor(0.1, store=store, policy=CheckPolicy(timeout=0.5))
            for name, path in [("api", "/healthy"), ("billing", "/fail"), ("search", "/flip")]:
                monitor.add_service(
                    ServiceDefinition(name, "http", f"demo.{name}", [], targets.url(path))
                )

            async def on_change(result: HealthCheckResult) -> None:
                cause = f" ({result.error})" if result.error else ""
                print(f"  committed: {result.service_name} is now {result.status.value}{cause}")

            monitor.subscribe(on_change)
            print(f"Monitoring 3 local targets at 10 Hz for {RUN_SECONDS:.0f} s into {database}")
            async with monitor:
                await asyncio.sleep(RUN_SECONDS)
                print(f"\nCluster status: {monitor.get_cluster_status().value}")
                for name, result in sorted(monitor.get_cluster_health().items()):
                    print(f"  {name:8} {result.status.value:9} {result.response_time_ms:6.1f} ms")

            print("\nStored in the database:")
            for name in sorted(monitor.services):
                results = await store.results(name)
                counts = Counter(result.status.value for result in results)
                print(f"  {name:8} {len(results):3} results  {dict(counts)}")
            transitions = await store.transitions()
            print(f"  {len(transitions)} status transitions:")
            for t in transitions:
                before = t.from_status.value if t.from_status else "(first)"
                print(f"    {t.service_name:8} {before:>9} -> {t.to_status.value}")
    query = "SELECT * FROM status_transitions"
    print(f"\nInspect it yourself: sqlite3 {database} '{query}'")


if __name__ == "__main__":
    configure_logging("warning", "console")
    asyncio.run(main(Path(sys.argv[1] if len(sys.argv) > 1 else "healthmon-example.db")))
