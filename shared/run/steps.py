"""The continuations of a run's subscriptions: result rows, then state, then alerts, each step
submitted as its own task when the writer reports the previous one durable; the memory budget's
early flushes; and the end of the run (drain, the first failure named after its subscription).

The subscription pipeline (``pipeline.py``) lists and plans one subscription and hands its rows
here. A step that fails is that subscription's failure, never another's, and every task carries
the invocation context (``threads.py``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, wait
from dataclasses import dataclass
from typing import Any

from azure.core.exceptions import AzureError

from ..azure.exemptions import Exemption
from ..azure.store import TableStore
from ..azure.threads import NO_CONTEXT, ThreadInit, executor
from ..core import events
from ..core.config import Settings
from ..core.errors import AuditFailed, one_line
from ..core.layout import partition_batches, results_partition, state_shards
from ..core.plan import (
    SubscriptionPlan,
    new_failure_event,
)
from ..core.schema import ETAG
from ..core.summary import RunSummary
from .budget import HeldBudget, Hold
from .writer import PackedWriter

log = logging.getLogger("shared.pipeline")

Checkpoint = Callable[[str, str], None]


#: The budget's early flushes are logged at most once in this many seconds (a stall asks for one
#: every quarter second: each a line in Application Insights), with the flushes since the last line.
STALL_LOG_SECONDS = 30.0
#: Results partitions each attempt of a run numbers its own (10,000 × 1,000 rows): a resumed attempt
#: writes beside the rows it keeps from the earlier one, never into its partitions.
ATTEMPT_PARTITIONS = 10_000


@dataclass
class _Tracked:
    """A subscription between its listing and its last step, with what it holds in memory."""

    plan: SubscriptionPlan
    hold: Hold | None = None  # None: a scope's ERROR row, held by no subscription
    #: Whose rows these are for the writers (each adds an owner once): the subscription, or one
    #: slice of it (``run/spill.py``).
    owner: str = ""
    #: Its own shards' partial batches are sent once its state rows are queued: the whole
    #: subscription's, every slice's of one cut by shard (``Gathered.align``: no other slice writes
    #: to them), else only the last slice's (an earlier one leaves them to fill with the next ones).
    flush_own: bool = True

    @property
    def name(self) -> str:
        return self.owner or self.plan.subscription_id


@dataclass(frozen=True)
class RunContext:
    """What every subscription of one run shares (read-only)."""

    summary: RunSummary
    exemptions: Sequence[Exemption]
    names: Mapping[str, str]  # lower-cased subscription id -> display name
    vanished: Mapping[str, Mapping[str, Any]]  # subscription id -> its registry row
    deadline: float  # the host's monotonic time after which no ARM call starts
    #: A change poll reads only some resources of each subscription: nothing else is retired or
    #: confirmed, and only those resources' state is touched.
    targeted: bool = False
    #: The nightly run that died and may be resumed (a change run leaves its state rows alone).
    unfinished_nightly: str = ""


class Steps:
    """The writers and the continuations of one run's subscriptions."""

    def __init__(
        self,
        settings: Settings,
        store: TableStore,
        run: RunContext,
        *,
        checkpoint: Checkpoint,
        thread_init: ThreadInit = NO_CONTEXT,
        held: int,
    ) -> None:
        self.settings = settings
        self.store = store
        self.run = run
        self.checkpoint = checkpoint
        run_id = run.summary.run_id
        first = (run.summary.attempt - 1) * ATTEMPT_PARTITIONS  # a resumed attempt's rows beside the kept ones
        self._results = PackedWriter(
            lambda rows: store.write_batch(store.results, rows),
            sequential=lambda index: results_partition(run_id, first + index),
            name="results",
        )
        self._state = PackedWriter(self._write_state, name="state")
        #: The ETag each owed alert's state row got when it was stored: its mark is written only
        #: while the row is still that one (the fence that holds with the write, see store.write_state).
        self._owed_etags: dict[tuple[str, str], str] = {}
        self._steps = executor(max(2, settings.concurrency), "steps", thread_init)
        self._lock = threading.Lock()
        self._futures: list[Future[None]] = []
        self._errors: list[tuple[str, BaseException]] = []  # failed steps, by subscription
        self.budget = HeldBudget(held, stalled=self._send_partial_batches, failed=self._failure)
        self._stall_logged = float("-inf")  # the last "Sending partial batches early" line (monotonic)
        self._stall_flushes = 0  # flushes since
        self.extra_transactions = 0

    def rows(self, owner: str, rows: Iterable[dict[str, Any]], tracked: _Tracked, *, advance: bool) -> None:
        """Queue a subscription's result rows; once they are durable its state follows
        (``advance``), or, for a subscription not read, only what it holds is let go."""
        self._results.add(owner, rows, self._then(owner, self._advance_state if advance else self._rows_only, tracked))

    def _then(self, subscription_id: str, step: Callable[[Any], None], arg: Any) -> Callable[[], None]:
        """The writer's durability signal: submit the subscription's next step as its own task."""

        def submit() -> None:
            with self._lock:
                if self._errors:  # the run is failing: no further step starts (a resumed run does it)
                    return
                if len(self._futures) >= 256:  # steps that ran are let go (their errors are in _errors)
                    self._futures = [f for f in self._futures if not f.done()]
                self._futures.append(self._steps.submit(self._run_step, subscription_id, step, arg))

        return submit

    def _run_step(self, subscription_id: str, step: Callable[[Any], None], arg: Any) -> None:
        try:
            step(arg)
        except BaseException as exc:
            with self._lock:
                self._errors.append((subscription_id, exc))
            raise

    def _rows_only(self, tracked: _Tracked) -> None:
        self.checkpoint("rows_written", tracked.plan.subscription_id)
        self._let_go(tracked)

    def _advance_state(self, tracked: _Tracked) -> None:
        """The subscription's result rows are stored: advance its last-known state."""
        plan = tracked.plan
        self.checkpoint("rows_written", plan.subscription_id)
        own = tracked.flush_own and state_shards(plan.layout_size) > 0
        done = self._then(tracked.name, self._alert, tracked)
        self._state.add(tracked.name, plan.state_rows(), done, flush_own=own)

    def _alert(self, tracked: _Tracked) -> None:
        """The subscription's state is stored: send its owed alerts, then tidy moved rows.

        Each batch of owed rows is marked sent (``AlertPending`` cleared) *before* its events are
        logged: a store failure leaves them owed and unsent (any later run that still sees them
        failing sends them), and a mark that was stored means its events follow at once, so none
        is sent twice.
        """
        plan = tracked.plan
        self.checkpoint("state_advanced", plan.subscription_id)
        for key in plan.alerts_dropped():
            finding = plan.findings[key]
            log.info(
                "Run %s: dropped the owed NewFailure alert of %s: it no longer fails (now %s)",
                plan.run_id,
                finding.resource_id,
                finding.status.value,
            )
        for batch in partition_batches(plan.alerts_due(), plan.partitions.__getitem__):
            with self._lock:
                etags = [self._owed_etags.pop((plan.partitions[key], key), None) for key in batch]
            marks = [{**plan.state_row(key, alerted=True), ETAG: etag} for key, etag in zip(batch, etags, strict=True)]
            sent, _ = self.store.write_state(marks)
            # The one window left: the marks are stored and these events not yet logged. A process that
            # dies here loses them rather than sending them twice (measured in bench/window.py).
            self.checkpoint("marked", plan.subscription_id)
            for key in batch:
                change = plan.changes[key]
                events.emit_new_failure(
                    new_failure_event(change.alert_run_id, plan.findings[key], change, sent_by=plan.run_id)
                )
            with self._lock:
                self.extra_transactions += sent
                self.run.summary.alerts_sent += len(batch)
            self.checkpoint("alerted", plan.subscription_id)
        if plan.gone:
            log.info("Run %s: %d resources of %s are gone", plan.run_id, len(plan.gone), plan.subscription_id)
        self._tidy(plan)
        self._let_go(tracked)

    def _tidy(self, plan: SubscriptionPlan) -> None:
        stale = plan.stale_copies()
        if not stale:
            return
        try:
            deleted, sent = self.store.delete_state_copies(stale)
        except AzureError as exc:  # the copies are harmless (the newer one wins); retried next run
            log.warning("Could not delete %d old state rows of %s: %s", len(stale), plan.subscription_id, one_line(exc))
            return
        with self._lock:
            self.extra_transactions += sent
        log.info("Run %s: moved %d state rows of %s to tonight's layout", plan.run_id, deleted, plan.subscription_id)

    def _write_state(self, rows: list[dict[str, Any]]) -> int:
        """The state writer's transaction: conditional on each row's ETag; remembers the new ETag
        of every row whose alert is owed, for its mark."""
        sent, etags = self.store.write_state(rows)
        owed = {(str(r["PartitionKey"]), str(r["RowKey"])) for r in rows if r.get("AlertPending")}
        if owed:
            with self._lock:
                self._owed_etags.update((at, etags[at]) for at in owed)
        return sent

    def _let_go(self, tracked: _Tracked) -> None:
        if tracked.hold is not None:
            tracked.hold.release()

    def _send_partial_batches(self) -> bool:
        """Every listing waits at the memory cap: send the partial batches and wait for the steps
        they start, twice (rows, then state), so that the subscriptions waiting for their shared
        partitions complete (rows, state, alerts) and let go of what they hold. Not while a batch
        is being sent or a step runs or waits to (returns False): it will let go of something or
        fill a batch, and batches sent half-empty then only cost transactions (on the next night at
        130k with ARM, 283 such flushes took the run from 1.03 to 1.24 transactions per 100 rows)."""
        if self._in_flight():
            return False
        now = time.monotonic()
        with self._lock:  # two waiting listings may ask at once
            self._stall_flushes += 1
            due = now - self._stall_logged >= STALL_LOG_SECONDS
            flushes = self._stall_flushes
            if due:
                self._stall_logged, self._stall_flushes = now, 0
        if due:
            log.info(
                "Sending partial batches early: %d records and state rows held (cap %d), every listing waits (%d flushes "
                "since the last such line); holding most: %s",
                self.budget.held,
                self.budget.cap,
                flushes,
                "; ".join(self.budget.largest()),
            )
        for writer in (self._results, self._state):
            writer.flush()
            self._wait_steps()
        return True

    def _in_flight(self) -> bool:
        """A batch is being sent, or a step (the next one of a subscription whose rows are stored) runs or is queued."""
        with self._lock:
            steps = any(not future.done() for future in self._futures)
        return steps or self._results.sending or self._state.sending

    def _failure(self) -> BaseException | None:
        """The first failed step or write, if any (what it holds may never be released)."""
        with self._lock:
            if self._errors:
                return self._errors[0][1]
        return self._results.error or self._state.error

    def check(self) -> None:
        """Raise the first failed step's error, named after its subscription."""
        with self._lock:
            failed = self._errors[0] if self._errors else None
        if failed is not None:
            subscription_id, exc = failed
            raise AuditFailed(f"subscription {subscription_id}: {one_line(exc)}") from exc

    def drain(self) -> None:
        """Send the last partial batches and wait until every continuation has run (a step may
        queue rows that need another flush, whose signal submits another step)."""
        while True:
            self._results.flush()
            waited = self._wait_steps()
            self._state.flush()
            waited = self._wait_steps() or waited
            self.check()
            if not waited and not self._results.buffered and not self._state.buffered:
                break
        unfinished = self._results.waiting_owners + self._state.waiting_owners
        if unfinished:
            raise AuditFailed(f"{unfinished} subscriptions' rows or state could not be stored")
        log.info(
            "Run %s: at most %d records and state rows held in memory at once (cap %d); listings waited %d times, "
            "%d partial flushes for them",
            self.run.summary.run_id,
            self.budget.peak,
            self.budget.cap,
            self.budget.waits,
            self.budget.stall_flushes,
        )

    def _wait_steps(self) -> bool:
        with self._lock:
            futures, self._futures = self._futures, []
        if futures:
            wait(futures)
        return bool(futures)

    def close(self) -> None:
        self._steps.shutdown(wait=True, cancel_futures=True)

    @property
    def transactions(self) -> int:
        return self._results.transactions + self._state.transactions + self.extra_transactions

    @property
    def partitions(self) -> int:
        return len(self._results.partitions) + len(self._state.partitions)
