"""The run ledger: one run's lease, its begin or resume, its record, retention and RunSummary,
and the registry of subscriptions the audit has read.

What happens *inside* a subscription is the pipeline's (``pipeline.py``); this module decides
which run this is, whether it may write at all (the lease), and what is recorded about it.
"""

from __future__ import annotations

import logging
import secrets
import sys
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from azure.core.exceptions import AzureError

from ..azure.http import worst_case_call_seconds
from ..azure.store import TableStore
from ..azure.threads import NO_CONTEXT, ThreadInit
from ..core import events
from ..core.clock import Clock
from ..core.config import Settings
from ..core.errors import AuditFailed, LeaseLost, RunInProgressError, StoreError, one_line
from ..core.names import fold
from ..core.schema import RUNS_PARTITION, run_row, running_row, subscription_row
from ..core.summary import BLIND as BLIND
from ..core.summary import RunSummary as RunSummary
from ..core.summary import new_run_id as new_run_id
from ..core.summary import run_id_prefix as run_id_prefix
from ..core.when import as_utc
from .lease import LeaseKeeper

log = logging.getLogger(__name__)

T = TypeVar("T")

#: What a write to the store raises when it fails: the service's error, a row it refused (the
#: single row of a run record is refused as a :class:`StoreError`), or the lease lost.
STORE_FAILURES = (AzureError, StoreError, LeaseLost)
#: A run that died is resumed (same RunId) by a run that starts within this time.
RESUME_WINDOW = timedelta(hours=12)
#: How often a nightly run that finds a change poll holding the lease tries again (seconds).
LEASE_WAIT_SECONDS = 1.0
#: A change poll starts no GET after this many seconds (``changes.py``); what it did not read, the
#: next poll reads. It is what bounds how long the nightly run waits for a poll (:func:`poll_bound`).
POLL_DEADLINE_SECONDS = 300


def poll_bound(settings: Settings) -> float:
    """The longest a change poll holds the lease: no GET starts after its deadline, the GETs in
    flight end within one call's budget, and its few writes (rows, state, marks, the watermark,
    its record) within two more."""
    call = worst_case_call_seconds(settings.retry_total, settings.http_timeout)
    return POLL_DEADLINE_SECONDS + 3 * call


def nightly_wait(settings: Settings) -> float:
    """How long the nightly run waits while a change poll holds the lease: until a live poll must
    have ended (:func:`poll_bound`), or a dead one's lease expired, whichever is later."""
    return max(poll_bound(settings), float(settings.lease_seconds)) + 2 * LEASE_WAIT_SECONDS


def vanished_subscriptions(
    settings: Settings, known: Mapping[str, Mapping[str, Any]], listed: Iterable[str], now: datetime
) -> dict[str, Mapping[str, Any]]:
    """Subscriptions an earlier run read that the subscription list no longer shows (disabled,
    moved out of the management group, access removed). Each gets an ERROR row and keeps its
    state until it was last read longer ago than AUDIT_RETENTION_DAYS, or the security team
    retires it (``clientcert-audit subscriptions retire``). With AUDIT_SUBSCRIPTIONS set, that
    list is the audit's scope, so nothing outside it is reported."""
    if settings.subscriptions:
        return {}
    seen = {fold(s) for s in listed}
    cutoff = now - timedelta(days=settings.retention_days)
    vanished: dict[str, Mapping[str, Any]] = {}
    for key, row in known.items():
        if key in seen:
            continue
        last = as_utc(row.get("LastAuditedAt"))
        if last is not None and last < cutoff:
            log.info("Subscription %s not seen since %s: no longer reported", row.get("SubscriptionId"), last)
            continue
        vanished[str(row.get("SubscriptionId") or key)] = row
    return vanished


def registry_memo(known: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """What :meth:`RunLedger.remember` needs of each known subscription's registry row at the end of the
    run (when it was first audited, its tenant), the rest let go: the whole rows, about 1.5 KB each
    as the table client decodes them, were held from the run's start to its end, a term that grows
    with the tenant's subscriptions."""
    memo: dict[str, dict[str, Any]] = {}
    for key, row in known.items():
        first = as_utc(row.get("FirstAuditedAt"))
        memo[key] = {
            "FirstAuditedAt": None if first is None else datetime(*first.timetuple()[:6], first.microsecond, UTC),
            "TenantId": sys.intern(str(row.get("TenantId") or "")),
        }
    return memo


class RunLedger:
    """Opens, records and closes one run. Every write after :meth:`open` needs the lease."""

    def __init__(
        self,
        settings: Settings,
        store: TableStore,
        clock: Clock,
        thread_init: ThreadInit = NO_CONTEXT,
        kind: str = "nightly",
    ) -> None:
        self.settings = settings
        self.store = store
        self.clock = clock
        self.now = clock.now
        self.kind = kind
        self.lease = LeaseKeeper(store, secrets.token_hex(8), settings.lease_seconds, clock, thread_init, kind)

    def run(self, started: datetime, body: Callable[[RunSummary], T], *, what: str) -> tuple[RunSummary, T]:
        """The one ledger sequence of every run, nightly or poll: :meth:`open` (the lease, begin or
        resume), ``body``, :meth:`record`, :meth:`close`. A body that raises fails the run
        (:meth:`fail`: recorded, a failed RunSummary, the lease kept for a resume) and raises
        :class:`AuditFailed` naming ``what`` (``audit run``, ``change run``) and the RunId."""
        summary = self.open(started)
        try:
            try:
                out = body(summary)
                summary.ended_at = self.now()
                self.record(summary)
            except BaseException as exc:
                self.fail(summary, exc)
                if isinstance(exc, Exception) and not isinstance(exc, AuditFailed):
                    raise AuditFailed(f"{what} {summary.run_id} failed: {summary.error}") from exc
                raise
            self.close(summary)
        finally:
            # Whatever was raised, in the body, in fail() or in close(), BaseException included: the
            # heartbeat ends with its run, before the caller closes the store it renews through.
            self.lease.stop()
        return summary, out

    # -- opening ----------------------------------------------------------------------------------
    def open(self, started: datetime) -> RunSummary:
        """Take the lease (its heartbeat starts) and begin a new run or resume a dead one.

        Raises :class:`RunInProgressError` while another run holds the lease, and
        :class:`AuditFailed` (after a failed RunSummary) when the store cannot be reached."""
        try:
            self.store.ensure_tables()
            self._acquire(started)
        except RunInProgressError:
            raise
        except AzureError as exc:
            failed = RunSummary(new_run_id(started), started, failed=True, ended_at=self.now())
            failed.error = f"results store unreachable: {one_line(exc)}"
            log.error("Audit run %s failed before it started: %s", failed.run_id, failed.error)
            events.emit_run_summary(failed.event(), failed=True)
            raise AuditFailed(failed.error) from exc
        self.store.guard = self.lease.check  # from here on, every write needs the lease
        self.store.fence_lost = self.lease.lose  # and a state row another run wrote stops them all
        self.lease.start()
        try:
            summary = self._begin(started)
            summary.fence = self.lease.fence
            return summary
        except BaseException:
            self.lease.release(keep_run=True)
            raise

    def _acquire(self, started: datetime) -> None:
        """Take the lease. The nightly run never loses a night to a change poll: while a poll holds
        the lease, it waits for the poll's end, which the poll's own deadline bounds
        (:func:`nightly_wait`). Should the poll outlast even that, the night that did not run is a
        run record and a failed RunSummary (the incomplete-run alert fires on it), not a log line."""
        waited_until = self.clock.monotonic() + nightly_wait(self.settings)
        while True:
            try:
                self.lease.acquire()
                return
            except RunInProgressError as exc:
                if self.kind != "nightly" or exc.holder_kind != "changes":
                    raise
                if self.clock.monotonic() > waited_until:
                    self._lost_night(started, exc)
                    raise
                log.info("A change poll holds the audit lease; the nightly run waits for it")
            self.clock.sleep(LEASE_WAIT_SECONDS)

    def _lost_night(self, started: datetime, exc: RunInProgressError) -> None:
        """Record the night a change poll kept from running: a run record and a failed RunSummary."""
        lost = RunSummary(new_run_id(started), started, failed=True, ended_at=self.now())
        lost.error = (
            f"the nightly run did not start: a change poll held the audit lease for more than "
            f"{nightly_wait(self.settings):.0f} s ({exc})"
        )
        log.error("Audit run %s did not run: %s", lost.run_id, lost.error)
        try:
            self.record(lost)
        except STORE_FAILURES as error:
            log.error("Could not record the night that did not run: %s", one_line(error))
        events.emit_run_summary(lost.event(), failed=True)

    def unfinished_nightly(self, started: datetime) -> str:
        """The RunId of a nightly run that died and may still be resumed, or ``""``: a change poll
        leaves what that run's state rows hold to its resume (so the resumed run's rows still agree
        with the alerts that name it)."""
        previous = str(self.lease.entity.get("RunId") or "")
        record = self.store.get(self.store.runs, RUNS_PARTITION, previous) if previous else None
        return previous if record and self._resumable(record, started) else ""

    @staticmethod
    def _resumable(record: Mapping[str, Any], started: datetime) -> bool:
        if record.get("Outcome") not in ("running", "failed") or record.get("StateAdvanced"):
            return False
        if record.get("Kind", "nightly") != "nightly":
            return False
        begun = as_utc(record.get("StartedAt"))
        return begun is not None and started - begun < RESUME_WINDOW

    def _begin(self, started: datetime) -> RunSummary:
        """Start a new run, or resume the one a crashed attempt left unfinished (nightly runs only:
        a change poll always starts afresh and never touches the nightly run's resume point)."""
        if self.kind != "nightly":
            summary = RunSummary(new_run_id(started), started, kind=self.kind)
            self._write_running(summary)
            return summary
        previous = str(self.lease.entity.get("RunId") or "")
        record = self.store.get(self.store.runs, RUNS_PARTITION, previous) if previous else None
        if record and self._resumable(record, started):
            begun = as_utc(record.get("StartedAt")) or started
            log.warning("Resuming unfinished run %s (started %s)", previous, begun.isoformat())
            summary = RunSummary(
                previous,
                begun,
                baseline=bool(record.get("Baseline")),
                resumed=True,
                attempt=int(record.get("Attempts") or 1) + 1,
            )
            self._write_running(summary)
            return summary
        run_id = new_run_id(started)
        baseline = self.store.baseline() is None  # until one nightly run has ended, nothing pages
        summary = RunSummary(run_id, started, baseline=baseline)
        self._write_running(summary)
        self.lease.update(RunId=run_id)
        if baseline:
            log.info("Run %s is the baseline: no last-known state yet, so nothing is a new failure", run_id)
        return summary

    def _write_running(self, summary: RunSummary) -> None:
        row = running_row(
            summary.run_id,
            summary.started_at,
            baseline=summary.baseline,
            attempt=summary.attempt,
            results_table=self.settings.results_table,
            kind=summary.kind,
        )
        self.store.upsert_many(self.store.runs, [row])

    # -- the subscriptions it has read ------------------------------------------------------------
    def remember(
        self,
        summary: RunSummary,
        read: Mapping[str, str],
        known: Mapping[str, Mapping[str, Any]],
        tenants: Mapping[str, str] | None = None,
    ) -> int:
        """Record each subscription read tonight (id -> name; ``tenants``: folded id -> its tenant);
        returns transactions used."""
        rows = [
            subscription_row(
                sub,
                name,
                summary.run_id,
                summary.started_at,
                known.get(fold(sub)),
                (tenants or {}).get(fold(sub), ""),
            )
            for sub, name in read.items()
        ]
        return self.store.upsert_many(self.store.runs, rows) if rows else 0

    # -- closing ----------------------------------------------------------------------------------
    def close(self, summary: RunSummary) -> None:
        """The run ended (complete or partial): record it, age out old rows, say so, let go. The
        first nightly run to end marks the baseline done (polls wait for it to page anything)."""
        if self.kind == "nightly" and summary.subscriptions_read:  # a run that read nothing is no baseline
            try:
                self.store.mark_baseline(summary.run_id, summary.started_at)
            except STORE_FAILURES as exc:  # read from the run records until it is written
                log.warning("Could not write the baseline marker: %s", one_line(exc))
        summary.deleted_old_rows = self._retention(summary)
        events.emit_run_summary(summary.event(), failed=summary.partial)
        self.lease.release(keep_run=self.kind != "nightly")  # a poll leaves the nightly resume point alone

    def fail(self, summary: RunSummary, exc: BaseException) -> None:
        """A failed run is loud: its record (unless another run holds the lease and so the run),
        a failed RunSummary, and the lease kept for a resume."""
        summary.failed = True
        summary.error = one_line(exc)
        summary.ended_at = self.now()
        log.error("Audit run %s failed: %s", summary.run_id, summary.error)
        try:
            if self.lease.lost:
                log.error("Run %s lost its lease: its record is left to the run that holds it now", summary.run_id)
            else:
                self.record(summary, best_effort=True)
            events.emit_run_summary(summary.event(), failed=True)
        finally:
            self.lease.release(keep_run=True)

    def record(self, summary: RunSummary, *, best_effort: bool = False) -> None:
        row = run_row(
            summary.event(),
            state_advanced=not summary.failed,
            attempt=summary.attempt,
            rows=summary.rows,
            transactions=summary.transactions,
            partitions=summary.partitions,
            retired=summary.retired,
            results_table=self.settings.results_table,
            started_at=summary.started_at,
            ended_at=summary.ended_at,
            kind=summary.kind,
        )
        try:
            self.store.upsert_many(self.store.runs, [row])
        except STORE_FAILURES:  # a store that is down refuses the record's single row: a StoreError
            if not best_effort:
                raise
            log.exception("Could not record the failed run %s", summary.run_id)

    def _retention(self, summary: RunSummary) -> int:
        """Delete result rows older than ``AUDIT_RETENTION_DAYS``; state is never aged out."""
        cutoff = summary.started_at - timedelta(days=self.settings.retention_days)
        try:
            deleted = self.store.delete_results_before(run_id_prefix(cutoff))
        except STORE_FAILURES as exc:
            log.warning("Retention clean-up failed (retried next run): %s", one_line(exc))
            return 0
        if deleted:
            log.info("Retention: deleted %d result rows older than %d days", deleted, self.settings.retention_days)
        return deleted
