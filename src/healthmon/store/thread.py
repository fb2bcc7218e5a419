"""The store's own thread: an event loop where its database work runs.

Every statement through an async driver is a round trip, and each return costs one
turn of the event loop that awaits it. On a monitor's loop, where a turn may run
hundreds of ready checks, a flush of ~20 statements and the upkeep between flushes
waited tens of seconds for their turns (issue 16: at 2,000 services x 1 Hz no commit
in 25 s, and the results dropped at stop), and an HTTP client's 24 h report ~15 turns
(issue 14). On a loop of its own, with nothing else on it, the same awaits cost
microseconds; the monitor's loop awaits a whole flush or a whole read once.

The SQL itself is unchanged (the same async code runs on this loop), and so is what
the callers see: coroutines that return when the work is done, errors raised in the
caller, a cancelled caller cancelling its work. What runs here must not touch the
caller's loop: results come back through the awaited future, callbacks through
`call_soon_threadsafe` (store/writer.py).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from healthmon.errors import StorageError

__all__ = ["StoreThread"]

_T = TypeVar("_T")


class StoreThread:
    """A thread running an event loop for a store's database work (`run` sends it
    there). Started by `start()`, ended by `stop()`, which ends whatever still runs."""

    def __init__(self, name: str = "healthmon-store") -> None:
        self.name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the thread and its loop (returns once the loop runs). Idempotent."""
        if self._thread is not None:
            return
        ready = threading.Event()
        loop = asyncio.new_event_loop()

        def serve() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(ready.set)
            try:
                loop.run_forever()
            finally:
                _close(loop)

        thread = threading.Thread(target=serve, name=self.name, daemon=True)
        thread.start()
        ready.wait()
        self._loop, self._thread = loop, thread

    def here(self) -> bool:
        """True when called from this thread's loop (nothing to send across)."""
        return self._thread is threading.current_thread()

    async def run(self, coro: Coroutine[Any, Any, _T]) -> _T:
        """Run `coro` on this thread's loop and return its result (or raise its error)
        in the caller's. Cancelling the caller cancels it there; work ended by the
        thread's stop (the store closed under it) raises StorageError."""
        if self.here():
            return await coro
        work = self.submit(coro)
        try:
            return await asyncio.wrap_future(work)
        except asyncio.CancelledError:
            caller = asyncio.current_task()
            if work.cancelled() and caller is not None and not caller.cancelling():
                raise StorageError("the store was closed while this was under way") from None
            raise

    def submit(self, coro: Coroutine[Any, Any, _T]) -> concurrent.futures.Future[_T]:
        """Start `coro` on this thread's loop (from another thread); its future."""
        loop = self._loop
        if loop is None:
            coro.close()
            raise RuntimeError(f"the store's thread {self.name!r} is not running")
        return asyncio.run_coroutine_threadsafe(coro, loop)

    def call_soon(self, callback: Callable[..., object], *args: object) -> None:
        """Call `callback(*args)` on this thread's loop, soon (from any thread)."""
        if self._loop is None:
            raise RuntimeError(f"the store's thread {self.name!r} is not running")
        self._loop.call_soon_threadsafe(callback, *args)

    def stop(self) -> None:
        """End the loop (its tasks still running are cancelled) and join the thread.
        Idempotent. Call it once the store's work is done: it waits for the thread
        (from a loop, through `asyncio.to_thread`)."""
        loop, thread = self._loop, self._thread
        self._loop = self._thread = None
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join()


def _close(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel what is left on the loop, let it end, and close the loop."""
    try:
        for _ in range(10):  # (ending a task may start another: a driver's cancel request)
            leftover = asyncio.all_tasks(loop)
            if not leftover:
                break
            for task in leftover:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*leftover, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.run_until_complete(loop.shutdown_default_executor())
    finally:
        asyncio.set_event_loop(None)
        loop.close()
