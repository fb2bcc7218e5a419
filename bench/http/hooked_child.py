"""A check worker with the bench's lateness hook (bench/monitor_run.py's, in this
process): bench/http/worker.py points the monitor's worker pool at this module. At
exit it writes each started slot to `$HEALTHMON_BENCH_LATENESS/<pid>.json`."""

from __future__ import annotations

import json
import os
from pathlib import Path

from bench.measure import LatenessLog
from bench.monitor_run import _hook_schedules
from healthmon.workers import child

__all__ = ["main"]


def main() -> None:
    log = LatenessLog(interval=0.0)  # only recorded here; bench/http/worker.py sums up
    _hook_schedules(log)
    try:
        child.main()
    finally:
        out = Path(os.environ["HEALTHMON_BENCH_LATENESS"]) / f"{os.getpid()}.json"
        out.write_text(json.dumps({"samples": log.samples, "first_slot": log.first_slot}))


if __name__ == "__main__":
    main()
