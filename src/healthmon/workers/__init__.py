"""Check workers: a monitor's HTTP checks run in processes of their own (pool.py), each
one a `healthmon.workers.child` program talking to it over pipes (wire.py)."""

from healthmon.workers.pool import MAX_CHECK_WORKERS, CheckWorkers, validate_check_workers
from healthmon.workers.wire import CheckOrder

__all__ = ["MAX_CHECK_WORKERS", "CheckOrder", "CheckWorkers", "validate_check_workers"]
