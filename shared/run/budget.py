"""A hard cap on what the audit holds in memory: resources listed but whose state is not stored yet,
counted in units: each one's compact record, and on the next night each one's prior-state row (read
into memory with it, and weighing about as much: counted apart, so the cap bounds bytes whatever
share of what is held has its state beside it).

A subscription's listed resources (compact records) stay in memory from its listing until its last
step (state stored, alerts sent) is done: they are compared with its prior state once it is listed
whole, and its state rows are written only after all its result rows are durable, which for a small
subscription means after its shared partitions filled up. Without a cap, how much waits depends on
the tenant (how many small subscriptions queue for shared partitions) and on how fast the store
keeps up with the listing; with it, a producer (a subscription being listed) *waits* instead:

* :meth:`Hold.take` blocks while the run holds :attr:`HeldBudget.cap` resources or more, unless the
  subscription is the *senior* one: of those holding anything, the one that started holding
  first. The senior never waits, so one subscription larger than the whole cap still completes,
  alone past the cap; and a subscription that holds nothing yet (waiting for its listing to
  start, as Resource Graph's subscriptions do for the one being read) is never what another one
  waits for. A subscription holds at most a slice in memory (``run/spill.py``: past it, what it
  listed goes to disk and is given back), so the run holds at most ``cap`` plus about a slice.
* When every subscription that holds something and is still being listed waits (no listing can
  fill a batch any more), a waiting one calls ``stalled``: the pipeline sends its writers' partial
  batches and waits for the steps that follow (rows, then state, then alerts), which lets the
  subscriptions waiting for their shared partitions complete and release what they hold. It does
  so at most once per ``flush_every`` seconds in which nothing was released; while some listing
  still runs, its rows fill the batches and nothing is sent half-empty; and while a write or a
  step is still in flight, it will release or fill something, so ``stalled`` sends nothing and
  says so (returns False: not counted as a flush).
* It gives up (raises :class:`~shared.core.errors.AuditFailed`) when ``failed`` reports an error (a
  step or a write failed: what it holds may never be released) or when every listing waited and
  nothing was released for ``stall_seconds``: a run never hangs in a wait.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable

from ..core.errors import AuditFailed

log = logging.getLogger(__name__)


class HeldBudget:
    """Resources held across the run's subscriptions, capped at ``cap`` (see the module docstring)."""

    def __init__(
        self,
        cap: int,
        *,
        stalled: Callable[[], bool] = lambda: True,
        failed: Callable[[], BaseException | None] = lambda: None,
        flush_every: float = 0.25,
        stall_seconds: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if cap < 1:
            raise ValueError("the cap must be at least 1")
        self.cap = cap
        self._stalled = stalled
        self._failed = failed
        self._flush_every = flush_every
        self._stall_seconds = stall_seconds
        self._clock = clock
        self._cond = threading.Condition()
        self._held = 0
        self._live: dict[int, Hold] = {}  # holds that hold something, in the order they started to
        self._numbers = itertools.count()
        self._released_at = clock()  # the last release (or the start): progress
        self._flushed_at = float("-inf")
        #: Figures of the run: the most held at once, how often a producer waited, flushes it asked for.
        self.peak = 0
        self.waits = 0
        self.stall_flushes = 0

    @property
    def held(self) -> int:
        with self._cond:
            return self._held

    def largest(self, count: int = 3) -> list[str]:
        """The ``count`` holds holding the most, each as ``owner: held (what it does)``: where a stall
        is (a listing waiting at the cap, one listing, or one whose rows wait for the writers)."""
        with self._cond:
            holds = sorted(self._live.values(), key=lambda h: -h.count)[:count]
            return [f"{h.owner}: {h.count} ({h.doing})" for h in holds]

    def admit(self, owner: str) -> Hold:
        """A subscription about to hold resources (nothing yet)."""
        return Hold(self, owner, next(self._numbers))

    def _senior(self, hold: Hold) -> bool:
        """Of the holds that hold something, ``hold`` started first (or it is the first to)."""
        return not self._live or next(iter(self._live)) == hold.number

    def _take(self, hold: Hold, count: int) -> None:
        with self._cond:
            if self._held + count > self.cap and not self._senior(hold):
                self._wait(hold, count)
            self._held += count
            hold.count += count
            self._live.setdefault(hold.number, hold)
            self.peak = max(self.peak, self._held)

    def _wait(self, hold: Hold, count: int) -> None:
        """Block (the caller holds the condition) until there is room or ``hold`` is the senior."""
        self.waits += 1
        hold.waiting = True
        try:
            self._wait_for_room(hold, count)
        finally:
            hold.waiting = False

    def _stuck(self) -> bool:
        """Every listing that holds something waits: only a flush lets anything complete."""
        return all(h.waiting for h in self._live.values() if h.listing)

    def _wait_for_room(self, hold: Hold, count: int) -> None:
        moving = self._clock()  # the last time a listing was seen running (progress too)
        while self._held + count > self.cap and not self._senior(hold):
            error = self._failed()
            if error is not None:
                raise AuditFailed(f"stopped waiting for memory to be released: {error}") from error
            now = self._clock()
            stuck = self._stuck()
            if not stuck:
                moving = now
            elif now - max(moving, self._released_at) > self._stall_seconds:
                raise AuditFailed(
                    f"nothing held in memory was released for {self._stall_seconds:.0f} s while every "
                    f"listing waited ({self._held} records and state rows held by {len(self._live)} subscriptions)"
                )
            if stuck and now - max(self._released_at, self._flushed_at) >= self._flush_every:
                self._flushed_at = now
                self._cond.release()  # the flush sends batches and runs callbacks: never under the lock
                try:
                    flushed = self._stalled()
                finally:
                    self._cond.acquire()
                if flushed:
                    self.stall_flushes += 1
                continue
            self._cond.wait(self._flush_every)

    def _give_back(self, hold: Hold, count: int) -> None:
        with self._cond:
            count = min(count, hold.count)
            if count <= 0:
                return
            hold.count -= count
            self._held -= count
            self._released_at = self._clock()
            self._cond.notify_all()

    def _release(self, hold: Hold) -> None:
        with self._cond:
            if self._live.pop(hold.number, None) is None:
                return
            self._held -= hold.count
            hold.count = 0
            self._released_at = self._clock()
            self._cond.notify_all()


class Hold:
    """What one subscription holds; :meth:`release` once it is done (or failed)."""

    def __init__(self, budget: HeldBudget, owner: str, number: int) -> None:
        self.budget = budget
        self.owner = owner
        self.number = number
        self.count = 0
        self.listing = True  # still taking: its rows are not queued yet
        self.waiting = False

    @property
    def doing(self) -> str:
        """What it does now, for a stall's log line (:meth:`HeldBudget.largest`)."""
        if not self.listing:
            return "rows queued"
        return "waiting at the cap" if self.waiting else "listing"

    def listed(self) -> None:
        """It takes no more (listed and planned): what it holds now waits for the writers."""
        with self.budget._cond:
            self.listing = False

    def take(self, count: int = 1) -> None:
        """Hold ``count`` more resources; waits while the run is at its cap (see the module docstring)."""
        if count > 0:
            self.budget._take(self, count)

    def give_back(self, count: int) -> None:
        """Let go of ``count`` of what it holds (moved to disk, ``run/spill.py``); it keeps its place."""
        self.budget._give_back(self, count)

    def release(self) -> None:
        """Let go of everything held (idempotent)."""
        self.budget._release(self)
