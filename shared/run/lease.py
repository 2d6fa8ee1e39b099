"""The run lease, renewed by a heartbeat of its own, and the guard every write of a run passes.

Two runs must never write the same run's rows or send the same alerts. The lease entity in the
runs table (ETag-guarded, see :meth:`TableStore.acquire_lease`) names the run that may write.
Its expiry is written and judged in the table service's time (the ``Date`` of its answers, see
:class:`~shared.core.clock.ServiceTime`), so hosts whose clocks disagree agree on when it expires.
It is renewed on a timer of its own, every third of its length, whatever the fan-out is doing: a
slow ARM page or a long state read does not let it lapse. A run writes only while it *knows* it
still holds the lease: its last renewal, timed on this host's monotonic clock from the moment it
was sent, must be younger than two thirds of the lease (so a takeover, which needs the whole lease
to expire in the service's time, cannot have happened yet). Once a renewal is refused (another run
took over) or renewals keep failing past that point, the run has lost the lease: every later write
raises :class:`LeaseLost` and the run ends as failed. That guard is checked *before* a write; the
state rows and alert marks are also fenced *by* the write (``store.py``: conditional on each row's
ETag), so a run that is late to notice cannot overwrite or re-send what another run did.
"""

from __future__ import annotations

import logging
import threading
from datetime import timedelta
from typing import Any

from azure.core.exceptions import AzureError

from ..azure.store import TableStore, fence_of
from ..azure.threads import NO_CONTEXT, ThreadInit, thread
from ..core.clock import Clock, ServiceTime
from ..core.errors import LeaseLost, RunInProgressError

log = logging.getLogger(__name__)


class LeaseKeeper:
    """Holds the lease of one run: heartbeat renewal, annotations, release, and the write guard."""

    def __init__(
        self,
        store: TableStore,
        owner: str,
        seconds: int,
        clock: Clock,
        thread_init: ThreadInit = NO_CONTEXT,
        kind: str = "nightly",
    ) -> None:
        self._kind = kind
        self._store = store
        self._owner = owner
        self._seconds = seconds
        self._clock = clock
        self.service = ServiceTime(clock)
        self._thread_init = thread_init
        self._lock = threading.Lock()
        self._entity: Any = {}
        self._renewed = 0.0  # monotonic time at which the last successful write of the lease was sent
        self._lost: str | None = None
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None

    # -- lifecycle ----------------------------------------------------------------------------
    def acquire(self) -> Any:
        """Take the lease (raises :class:`RunInProgressError` while another run holds it)."""
        with self._lock:
            sent = self._clock.monotonic()
            self._entity = self._store.acquire_lease(self._owner, self._seconds, self._kind, self.service)
            self._renewed = sent
        return self._entity

    @property
    def entity(self) -> Any:
        return self._entity

    @property
    def fence(self) -> int:
        """This holding's number: every acquisition of the lease gets the next one."""
        return fence_of(self._entity)

    def start(self) -> None:
        """Start the heartbeat (a daemon thread that renews every third of the lease)."""
        self._heartbeat = thread(self._beat, "lease", self._thread_init)
        self._heartbeat.start()

    def stop(self) -> None:
        self._stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join(timeout=self._seconds)

    def _beat(self) -> None:
        while not self._stop.wait(self._seconds / 3):
            if self._lost:
                return
            self.renew()

    def renew(self) -> None:
        """Push the expiry one lease length ahead; a refusal means another run took over."""
        try:
            self.update(ExpiresAt=self.service.now() + timedelta(seconds=self._seconds))
        except LeaseLost:
            return
        except AzureError as exc:  # transient: the next beat tries again; check() decides when it is too late
            log.warning("Could not renew the audit lease (retrying): %s", type(exc).__name__)
        except Exception:
            # A renewal still in flight when the run ended (its retries outlasted stop()'s join)
            # meets a store the run has closed since: the run is over, so is the heartbeat.
            if self._stop.is_set():
                return
            raise

    def update(self, **changes: Any) -> Any:
        """Write ``changes`` to the lease entity (ETag-guarded); raises :class:`LeaseLost` when
        another run holds it now."""
        with self._lock:
            if self._lost:
                raise LeaseLost(self._lost)
            sent = self._clock.monotonic()
            try:
                self._entity = self._store.update_lease(self._entity, self.service, **changes)
            except RunInProgressError as exc:
                self._lose(f"the audit lease was taken over by another run ({exc})")
                raise LeaseLost(str(self._lost)) from exc
            self._renewed = sent
            return self._entity

    def lose(self, why: str) -> None:
        """Another run wrote what this run was about to (a state row's fence failed): stop writing."""
        with self._lock:
            self._lose(why)

    def _lose(self, why: str) -> None:
        if not self._lost:
            self._lost = why
            log.error("Audit run stops writing: %s", why)

    # -- the guard ------------------------------------------------------------------------------
    @property
    def lost(self) -> bool:
        return self._lost is not None

    def check(self) -> None:
        """Raise :class:`LeaseLost` unless this run still certainly holds the lease."""
        if self._lost:
            raise LeaseLost(self._lost)
        age = self._clock.monotonic() - self._renewed
        if age > self._seconds * 2 / 3:
            with self._lock:
                self._lose(f"the audit lease could not be renewed for {age:.0f} s (lease {self._seconds} s)")
            raise LeaseLost(str(self._lost))

    def release(self, *, keep_run: bool) -> None:
        """Give the lease back; keep its RunId when the run should be resumed next time. A run that
        lost the lease leaves it alone (it is another run's now)."""
        self.stop()
        if self._lost:
            return
        changes: dict[str, Any] = {"Owner": "", "ExpiresAt": self.service.now()}
        if not keep_run:
            changes["RunId"] = ""
        try:
            self.update(**changes)
        except (AzureError, LeaseLost) as exc:
            log.warning("Could not release the audit lease (it expires by itself): %s", type(exc).__name__)
