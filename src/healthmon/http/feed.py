"""The committed transitions as the HTTP face follows them: a cursor over the store.

The feed never learns of a change from the monitor's memory: when the monitor tells
its subscribers that something was committed (and every `poll` seconds, in case a
notification was lost), one task reads the store's transitions past the feed's
cursor. So a client sees a change only once it is durable, and every client shares
that one read: the newest `keep` transitions stay in memory for event streams, and a
client further behind reads the store itself, a page at a time.

Waiting clients (blocking queries, event streams) each hold a `Listener`, an event
the feed sets when it has read something new or is closing.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
from collections import deque
from collections.abc import Iterator, Sequence

import structlog

from healthmon.errors import StorageError
from healthmon.model import HealthCheckResult
from healthmon.monitor import HealthMonitor
from healthmon.store import HealthStore, TransitionRecord

__all__ = ["Listener", "TransitionFeed"]

log = structlog.get_logger("healthmon.http")

_PAGE = 500
_WAKE_TURN = 4  # waiting clients woken per turn of the loop


class Listener:
    """A waiting client's wake-up: set when the feed moves on or closes."""

    __slots__ = ("event",)

    def __init__(self) -> None:
        self.event = asyncio.Event()

    async def wait(self, timeout: float) -> bool:
        """Wait until woken or `timeout` passes; True if woken. Re-arms itself."""
        try:
            async with asyncio.timeout(timeout):
                await self.event.wait()
        except TimeoutError:
            return False
        self.event.clear()
        return True


class TransitionFeed:
    """The store's transitions followed past a cursor, woken by the monitor."""

    def __init__(
        self, monitor: HealthMonitor, store: HealthStore, *, keep: int = 1024, poll: float = 1.0
    ) -> None:
        self._monitor = monitor
        self._store = store
        self._keep = keep
        self._poll = poll
        self.index = 0
        """The id of the newest committed transition read (0: none)."""
        self._recent: deque[TransitionRecord] = deque()
        self._recent_ids: deque[int] = deque()
        self._floor = 0  # the ring holds every transition with an id above this
        self._latest: dict[str, TransitionRecord] = {}
        self._known: set[str] = set()  # service names in the database, as last read
        self._listeners: set[Listener] = set()
        self._wakes = 0  # wake-ups so far: where the next one starts
        self._poke = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.closed = False

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        if self._task is not None:
            return
        self.closed = False
        await self._reset()
        self._monitor.subscribe(self._committed)
        self._task = asyncio.create_task(self._run(), name="healthmon-http-feed")

    async def stop(self) -> None:
        """Stop following; every waiting client is woken (and sees `closed`)."""
        self.closed = True
        self._monitor.unsubscribe(self._committed)
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._wake()

    async def _committed(self, result: HealthCheckResult) -> None:
        """The monitor's subscriber: something was committed; read past the cursor."""
        self._poke.set()

    async def _run(self) -> None:
        while True:
            poked = True
            try:
                async with asyncio.timeout(self._poll):
                    await self._poke.wait()
            except TimeoutError:
                poked = False
            self._poke.clear()
            try:
                await self._catch_up(check_reset=not poked)
            except StorageError as exc:
                log.warning("http_feed_read_failed", error=str(exc), retry_in_s=self._poll)

    async def _catch_up(self, *, check_reset: bool) -> None:
        if check_reset and await self._store.last_transition_id() < self.index:
            # The database was recreated (or emptied): ids start again. Waiting
            # clients are woken; a blocking query whose index is now ahead of the
            # feed's returns at once, as Consul's do when the index goes backwards.
            log.warning("http_feed_reset", index=self.index)
            await self._reset()
            await self._wake_in_turns()
            return
        found = False
        while True:
            page = await self._store.transitions_after(self.index, limit=_PAGE)
            for record in page:
                self._add(record)
            found = found or bool(page)
            if len(page) < _PAGE:
                break
        if found:
            await self._wake_in_turns()

    async def _reset(self) -> None:
        self.index = await self._store.last_transition_id()
        self._latest = await self._store.latest_transitions()
        self._recent.clear()
        self._recent_ids.clear()
        self._floor = self.index

    def _add(self, record: TransitionRecord) -> None:
        self.index = record.id
        self._latest[record.transition.service_name] = record
        self._recent.append(record)
        self._recent_ids.append(record.id)
        while len(self._recent) > self._keep:
            self._floor = self._recent.popleft().id
            self._recent_ids.popleft()

    # -- what clients read ----------------------------------------------------------------

    def latest(self, service_name: str) -> TransitionRecord | None:
        """The service's newest committed transition read so far: since when it has
        had its status."""
        return self._latest.get(service_name)

    def latest_copy(self) -> dict[str, TransitionRecord]:
        """Every service's newest transition read so far (a copy)."""
        return self._latest.copy()

    def recent_after(self, after: int, limit: int) -> list[TransitionRecord] | None:
        """Transitions with an id above `after` from memory, at most `limit`; None if
        some of them are no longer in memory (read the store instead)."""
        if after < self._floor:
            return None
        start = bisect.bisect_right(self._recent_ids, after)
        return [self._recent[i] for i in range(start, min(start + limit, len(self._recent)))]

    async def after(
        self, after: int, limit: int, service_names: Sequence[str] | None = None
    ) -> tuple[list[TransitionRecord], int]:
        """The next transitions after `after` (of the named services, if given), from
        memory or else the store, and the cursor to continue from: past the last one
        returned, or past every transition looked at when none of them matched."""
        index = self.index  # everything up to here is committed and visible to a read
        recent = self.recent_after(after, limit)
        if recent is not None:
            cursor = recent[-1].id if len(recent) == limit else max(after, index)
            wanted = set(service_names) if service_names is not None else None
            if wanted is not None:
                recent = [r for r in recent if r.transition.service_name in wanted]
            return recent, cursor
        page = await self._store.transitions_after(after, limit=limit, service_names=service_names)
        if len(page) == limit:
            return page, page[-1].id
        return page, max(after, index, page[-1].id if page else 0)

    def known(self, service_name: str) -> bool:
        """Whether the database had the service when last read (no read)."""
        return service_name in self._known

    async def knows(self, service_name: str) -> bool:
        """Whether the database has the service (read again on a name not seen yet)."""
        if service_name in self._known:
            return True
        self._known = set(await self._store.service_names())
        return service_name in self._known

    # -- waiting ------------------------------------------------------------------------

    @contextlib.contextmanager
    def listening(self) -> Iterator[Listener]:
        listener = Listener()
        self._listeners.add(listener)
        try:
            yield listener
        finally:
            self._listeners.discard(listener)

    @property
    def listeners(self) -> int:
        return len(self._listeners)

    def _wake(self) -> None:
        """Wake every waiting client at once (they look again at what they wait for)."""
        for listener in self._listeners:
            listener.event.set()

    async def _wake_in_turns(self) -> None:
        """Wake the waiting clients a few per turn of the loop: each answers at once
        (a long-poll's response, a stream's events: ~0.1-0.2 ms), and forty of them
        woken together held the loop ~5 ms, which a request arriving meanwhile (an
        orchestrator's cluster status) waited through. Each time from a different
        one of them (a set's order stays put: the same streams would always be
        last). A stop cutting this short wakes them all (`stop`)."""
        listeners = list(self._listeners)
        if not listeners:
            return
        self._wakes += 1
        first = self._wakes * _WAKE_TURN % len(listeners)
        for i, listener in enumerate(listeners[first:] + listeners[:first]):
            if i and not i % _WAKE_TURN:
                await asyncio.sleep(0)
            listener.event.set()
