"""The audit engine: inventory → evaluate → store → alert, one subscription at a time.

Per subscription, in this order: list its sites and slots, evaluate them, read its
last-known state, write tonight's result rows, then advance the state, then emit the events.
A crash at any point leaves a state that a re-run (which resumes the same RunId) completes
without flagging anything twice or losing a row.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from azure.core.credentials import TokenCredential
from azure.core.exceptions import AzureError

from . import events
from .config import Settings
from .evaluate import error_finding, evaluate
from .exemptions import Exemption, apply_exemption, exemption_request, load_exemptions
from .identity import build_credential
from .inventory import ArmInventory, SubscriptionInfo
from .keys import resource_key
from .layout import partition_batches, results_partition, state_partition, state_shards
from .lease import LeaseKeeper, LeaseLost
from .models import IDENTITY_FIELDS, Finding, InventoryError, SiteRecord, Status
from .owners import tags_text
from .state import Transition, gone_entity, observed, state_entity, transition
from .store import RUNS_PARTITION, SUBSCRIPTIONS_PARTITION, RunInProgressError, TableStore
from .threads import NO_CONTEXT, ThreadInit, executor
from .writer import PackedWriter

log = logging.getLogger(__name__)

RESUME_WINDOW = timedelta(hours=12)
# Findings and prior-state rows held for subscriptions whose rows are not all stored yet (small
# subscriptions wait for their shared partitions to fill). Past this, the partial batches are sent
# early so they can be let go: ~2 KB each keeps this under ~50 MB, at the cost of ≤ 17 partly
# filled transactions per early flush.
MAX_HELD_RESOURCES = 20_000
Checkpoint = Callable[[str, str], None]


class AuditFailed(RuntimeError):
    """The run could not audit (or could not record) anything trustworthy."""


class Inventory(Protocol):
    """What the engine needs from an inventory source (ARM or Resource Graph)."""

    def subscriptions(self) -> list[SubscriptionInfo]: ...

    def confirm_empty(self, subscription_id: str) -> InventoryError | None: ...

    def scan(self, subscription_id: str) -> Iterable[SiteRecord | InventoryError]: ...

    def close(self) -> None: ...


@dataclass
class SubscriptionResult:
    """What one subscription contributed to the run."""

    subscription_id: str
    counts: Counter[str] = field(default_factory=Counter)
    new_failures: int = 0
    read: bool = True
    partial: bool = False
    rows: int = 0
    retired: int = 0


@dataclass
class _PendingState:
    """A readable subscription between queuing its result rows and storing its state."""

    subscription_id: str
    run_id: str
    now_iso: str
    findings: dict[str, Finding]
    changes: dict[str, Transition]
    prior: dict[str, Any]
    extra: list[tuple[str, str]]  # older copies of state rows in other partitions
    partial: bool
    written: dict[str, str] = field(default_factory=dict)
    counted: bool = False  # in AuditRun._held
    released: bool = False  # state stored

    @property
    def held(self) -> int:
        return len(self.findings) + len(self.prior)

    def _gone(self) -> Iterator[tuple[str, Mapping[str, Any]]]:
        if self.partial:  # only a fully read subscription can prove that a resource is gone
            return
        for key, state in self.prior.items():
            if key not in self.findings and not state.get("Gone"):
                yield key, state

    def retiring(self) -> int:
        return sum(1 for _ in self._gone())

    def state_rows(self) -> Iterator[dict[str, Any]]:
        """Tonight's state rows, each in tonight's layout; gone resources are retired in place."""
        size = len(self.changes)
        for key, change in self.changes.items():
            partition = state_partition(self.subscription_id, size, key)
            self.written[key] = partition
            yield self.state_row(key, change, alerted=False)
        for key, state in self._gone():
            self.written[key] = str(state["PartitionKey"])
            yield gone_entity(state, self.run_id, self.now_iso)

    def state_row(self, key: str, change: Transition, *, alerted: bool) -> dict[str, Any]:
        return state_entity(
            self.findings[key],
            change,
            self.prior.get(key),
            self.run_id,
            self.now_iso,
            key,
            self.written[key],
            alerted=alerted,
        )

    def alerts_due(self) -> list[str]:
        """Owed alerts: tonight's new failures and those an earlier run stored but never sent."""
        return [key for key, change in self.changes.items() if change.alert_pending]

    def alerts_dropped(self) -> list[str]:
        """Owed alerts of resources that no longer fail (the alert is not sent, and not owed)."""
        return [key for key, change in self.changes.items() if change.dropped_alert]

    def stale_copies(self) -> list[tuple[str, str]]:
        """Keys of state rows left in a partition other than the one holding the current copy."""
        stale: set[tuple[str, str]] = set()
        for key, state in self.prior.items():
            old = str(state["PartitionKey"])
            if self.written.get(key, old) != old:
                stale.add((old, key))
        for partition, key in self.extra:
            keep = self.written.get(key) or str(self.prior[key]["PartitionKey"])
            if partition != keep:
                stale.add((partition, key))
        return sorted(stale)


@dataclass
class RunSummary:
    """The run as the RunSummary event, the runs table and the CLI report it."""

    run_id: str
    started_at: datetime
    ended_at: datetime | None = None
    counts: Counter[str] = field(default_factory=Counter)
    new_failures: int = 0
    alerts_sent: int = 0  # NewFailure events this run logged: its new failures and owed ones
    subscriptions_read: int = 0
    subscriptions_failed: int = 0
    partial: bool = False
    failed: bool = False
    baseline: bool = False
    resumed: bool = False
    attempt: int = 1
    rows: int = 0
    transactions: int = 0
    partitions: int = 0  # results and state partitions written to
    retired: int = 0
    deleted_old_rows: int = 0
    error: str = ""

    @property
    def outcome(self) -> str:
        return "failed" if self.failed else ("partial" if self.partial else "complete")

    @property
    def duration_seconds(self) -> float:
        end = self.ended_at or datetime.now(UTC)
        return round((end - self.started_at).total_seconds(), 3)

    def event(self) -> dict[str, Any]:
        """Payload of the ``ClientCertAudit.RunSummary`` event (a contract: see README)."""
        return {
            "RunId": self.run_id,
            "Outcome": self.outcome,
            "Complete": self.outcome == "complete",
            "Baseline": self.baseline,
            "Resumed": self.resumed,
            "Counts": {s.value: self.counts.get(s.value, 0) for s in Status},
            "Total": sum(self.counts.values()),
            "NewFailures": self.new_failures,
            "AlertsSent": self.alerts_sent,
            "SubscriptionsRead": self.subscriptions_read,
            "SubscriptionsFailed": self.subscriptions_failed,
            "DurationSeconds": self.duration_seconds,
            "StartedAt": self.started_at.isoformat(),
            "EndedAt": (self.ended_at or datetime.now(UTC)).isoformat(),
            "Error": self.error,
        }


def new_run_id(now: datetime) -> str:
    """Sortable and unique: later runs sort later (microseconds; runs never overlap, see the
    lease), and a random suffix keeps ids distinct across deployments sharing a table."""
    return f"{run_id_prefix(now)}Z-{secrets.token_hex(3)}"


def run_id_prefix(at: datetime) -> str:
    """The time part of a RunId; RunIds (and result PartitionKeys) sort like these."""
    return at.astimezone(UTC).strftime("%Y%m%dT%H%M%S%f")


def result_entity(
    run_id: str,
    finding: Finding,
    change: Transition | None,
    audited_at: datetime,
    row_key: str,
    *,
    request_tag: str | None = None,
    subscription_name: str = "",
) -> dict[str, Any]:
    """One row of the results table (the schema in the README)."""
    slot_kind = "slot" if finding.slot else ("site" if finding.app_name else "scope")
    return {
        "PartitionKey": "",  # set by the results writer: rows are packed into run partitions
        "RowKey": row_key,
        "RunId": run_id,
        **finding.identity(),
        "SubscriptionName": subscription_name,
        "Owner": finding.owner,
        "Tags": tags_text(finding.tags),
        "ResourceType": slot_kind,
        "State": finding.state,
        "Location": finding.location,
        "ClientCertEnabled": finding.client_cert_enabled,
        "ClientCertMode": finding.client_cert_mode,
        "ExclusionPaths": ", ".join(finding.exclusion_paths),
        "Status": finding.status.value,
        "Reason": finding.reason,
        "Remediation": finding.remediation,
        "Exemption": finding.exemption,
        "ExemptionRequest": exemption_request(finding, request_tag),
        "HttpsOnly": finding.https_only,
        "PublicNetworkAccess": finding.public_network_access or "",
        "NewFailure": bool(change and change.new_failure),
        "PreviousStatus": change.previous_status if change else "",
        "FirstFailedAt": change.first_failed_at if change else "",
        "AuditedAt": audited_at,
    }


def refused_result_row(row: dict[str, Any], refusal: str) -> dict[str, Any]:
    """An ERROR row in place of a result row the store refused: the resource keeps a visible row
    that says why, and the rest of its batch is stored normally."""
    return {
        **{k: row[k] for k in ("PartitionKey", "RowKey", "RunId", *IDENTITY_FIELDS) if k in row},
        "ResourceType": row.get("ResourceType", ""),
        "Status": Status.ERROR.value,
        "Reason": f"The results store refused this resource's row ({refusal[:500]}); its verdict was "
        f"{row.get('Status', '?')}.",
        "Remediation": "Look at the resource's properties in the portal; the next run tries again.",
        "NewFailure": False,
        "AuditedAt": row.get("AuditedAt"),
    }


def new_failure_event(run_id: str, finding: Finding, change: Transition, *, sent_by: str) -> dict[str, Any]:
    """Payload of one ``ClientCertAudit.NewFailure`` event (a contract: see README).

    ``RunId`` is the run that found the new failure (its result row has ``NewFailure`` true);
    ``SentByRunId`` the run that logged the event, later when the alert was owed (``Owed``).
    """
    return {
        **finding.identity(),
        "ClientCertMode": finding.client_cert_mode,
        "Status": finding.status.value,
        "Reason": finding.reason,
        "RunId": run_id,
        "SentByRunId": sent_by,
        "Owed": run_id != sent_by,
        "FirstFailedAt": change.first_failed_at,
    }


class AuditRun:
    """One run of the audit. Construct, then :meth:`execute`."""

    def __init__(
        self,
        settings: Settings,
        store: TableStore,
        inventory: Inventory,
        *,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        checkpoint: Checkpoint | None = None,
        thread_init: ThreadInit = NO_CONTEXT,
    ) -> None:
        self.settings = settings
        self.thread_init = thread_init
        self.store = store
        self.inventory = inventory
        self.now = now
        self.checkpoint = checkpoint or (lambda stage, sub: None)
        self.owner = secrets.token_hex(8)
        store.fallbacks[store.results.table_name] = refused_result_row
        self.lease = LeaseKeeper(store, self.owner, settings.lease_seconds, self.now, thread_init)
        self._deadline = float("inf")
        self.exemptions: Sequence[Exemption] = ()
        self._tally_lock = threading.Lock()
        self._held = 0
        self._extra_transactions = 0
        self._alerts_sent = 0
        self._vanished: dict[str, Mapping[str, Any]] = {}
        self._run_id = ""
        self._subscription_names: dict[str, str] = {}  # lower-cased id -> display name
        self._results = PackedWriter(
            lambda rows: store.write_batch(store.results, rows),
            sequential=lambda index: results_partition(self._run_id, index),
            name="results",
        )
        self._state = PackedWriter(lambda rows: store.write_batch(store.latest, rows), name="state")

    # -- run lifecycle --------------------------------------------------------------------
    def execute(self) -> RunSummary:
        started = self.now()
        self._deadline = time.monotonic() + self.settings.run_deadline_minutes * 60
        try:
            self.store.ensure_tables()
            self.lease.acquire(started)
        except RunInProgressError:
            raise
        except AzureError as exc:
            failed = RunSummary(new_run_id(started), started, failed=True, ended_at=self.now())
            failed.error = f"results store unreachable: {_short(exc)}"
            log.error("Audit run %s failed before it started: %s", failed.run_id, failed.error)
            events.emit_run_summary(failed.event(), failed=True)
            raise AuditFailed(failed.error) from exc
        self.store.guard = self.lease.check  # from here on, every write needs the lease
        self.lease.start()
        try:
            summary = self._begin(started)
        except BaseException:
            self.lease.release(keep_run=True)
            raise
        try:
            self._run(summary)
            summary.ended_at = self.now()
            self._record_run(summary)
        except BaseException as exc:
            self._fail(summary, exc)
            if isinstance(exc, Exception) and not isinstance(exc, AuditFailed):
                raise AuditFailed(f"audit run {summary.run_id} failed: {summary.error}") from exc
            raise
        summary.deleted_old_rows = self._retention(summary)
        events.emit_run_summary(summary.event(), failed=summary.partial)
        self.lease.release(keep_run=False)
        return summary

    def _fail(self, summary: RunSummary, exc: BaseException) -> None:
        """A failed run is loud: its record (unless another run holds the lease and so the run),
        a failed RunSummary, and the lease kept for a resume."""
        summary.failed = True
        summary.alerts_sent = self._alerts_sent
        summary.error = _short(exc)
        summary.ended_at = self.now()
        log.error("Audit run %s failed: %s", summary.run_id, summary.error)
        if self.lease.lost:
            log.error("Run %s lost its lease: its record is left to the run that holds it now", summary.run_id)
        else:
            self._record_run(summary, best_effort=True)
        events.emit_run_summary(summary.event(), failed=True)
        self.lease.release(keep_run=True)

    def _begin(self, started: datetime) -> RunSummary:
        """Start a new run, or resume the one a crashed attempt left unfinished."""
        previous = str(self.lease.entity.get("RunId") or "")
        record = self.store.get(self.store.runs, RUNS_PARTITION, previous) if previous else None
        if record and record.get("Outcome") in ("running", "failed") and not record.get("StateAdvanced"):
            begun = _as_utc(record.get("StartedAt"))
            if begun and started - begun < RESUME_WINDOW:
                log.warning("Resuming unfinished run %s (started %s)", previous, begun.isoformat())
                summary = RunSummary(
                    previous,
                    begun,
                    baseline=bool(record.get("Baseline")),
                    resumed=True,
                    attempt=int(record.get("Attempts") or 1) + 1,
                )
                self._write_run_record(summary)
                return summary
        run_id = new_run_id(started)
        baseline = not self.store.has_any(self.store.latest)
        summary = RunSummary(run_id, started, baseline=baseline)
        self._write_run_record(summary)
        self.lease.update(RunId=run_id)
        if baseline:
            log.info("Run %s is the baseline: no last-known state yet, so nothing is a new failure", run_id)
        return summary

    def _run(self, summary: RunSummary) -> None:
        try:
            self.exemptions = load_exemptions(self.store)
            subscriptions = self.inventory.subscriptions()
        except AzureError as exc:
            raise AuditFailed(f"cannot list subscriptions: {_short(exc)}") from exc
        log.info("Run %s: auditing %d subscriptions", summary.run_id, len(subscriptions))
        if summary.resumed:  # rows of the crashed attempt: written again below, in new partitions
            deleted = self.store.delete_run_results(summary.run_id)
            log.info("Run %s: removed %d rows of the interrupted attempt", summary.run_id, deleted)
        self._run_id = summary.run_id
        self._subscription_names = {s.subscription_id.lower(): s.display_name for s in subscriptions}
        known = self.store.known_subscriptions()
        self._vanished = self._vanished_subscriptions(known, subscriptions, summary.started_at)
        for sub_id, row in self._vanished.items():
            self._subscription_names.setdefault(sub_id.lower(), str(row.get("SubscriptionName") or ""))
        subscriptions = subscriptions + [
            SubscriptionInfo(str(row["SubscriptionId"])) for row in self._vanished.values()
        ]
        results = self._fan_out(summary, subscriptions)
        self._results.flush()  # the last partial batches; their subscriptions' state follows
        self._state.flush()
        unfinished = self._results.waiting_owners + self._state.waiting_owners
        if unfinished:
            raise AuditFailed(f"{unfinished} subscriptions' rows or state could not be stored")
        self._remember_subscriptions(summary, results, known)
        summary.transactions = self._results.transactions + self._state.transactions + self._extra_transactions
        summary.partitions = len(self._results.partitions) + len(self._state.partitions)
        summary.alerts_sent = self._alerts_sent
        for result in results:
            summary.counts.update(result.counts)
            summary.new_failures += result.new_failures
            summary.subscriptions_read += int(result.read)
            summary.subscriptions_failed += int(not result.read)
            summary.partial = summary.partial or result.partial or not result.read
            summary.rows += result.rows
            summary.retired += result.retired

    def _fan_out(self, summary: RunSummary, subscriptions: list[SubscriptionInfo]) -> list[SubscriptionResult]:
        """Audit subscriptions concurrently (bounded); the lease renews itself meanwhile."""
        results: list[SubscriptionResult] = []
        with executor(self.settings.concurrency, "audit", self.thread_init) as pool:
            pending: set[Future[SubscriptionResult]] = {
                pool.submit(self.audit_subscription, summary, sub.subscription_id) for sub in subscriptions
            }
            try:
                while pending:
                    done, pending = wait(pending, timeout=5, return_when=FIRST_COMPLETED)
                    for future in done:
                        results.append(future.result())
            except BaseException:
                for future in pending:
                    future.cancel()
                raise
        return results

    # -- one subscription -----------------------------------------------------------------
    def _vanished_subscriptions(
        self, known: Mapping[str, Mapping[str, Any]], listed: list[SubscriptionInfo], now: datetime
    ) -> dict[str, Mapping[str, Any]]:
        """Subscriptions an earlier run read that the subscription list no longer shows (disabled,
        moved out of the management group, access removed). Each gets an ERROR row and keeps its
        state until it was last read longer ago than AUDIT_RETENTION_DAYS, or the security team
        retires it (``clientcert-audit subscriptions retire``). With AUDIT_SUBSCRIPTIONS set, that
        list is the audit's scope, so nothing outside it is reported."""
        if self.settings.subscriptions:
            return {}
        seen = {s.subscription_id.lower() for s in listed}
        cutoff = now - timedelta(days=self.settings.retention_days)
        vanished: dict[str, Mapping[str, Any]] = {}
        for key, row in known.items():
            last = _as_utc(row.get("LastAuditedAt"))
            if key in seen:
                continue
            if last is not None and last < cutoff:
                log.info("Subscription %s not seen since %s: no longer reported", row.get("SubscriptionId"), last)
                continue
            vanished[str(row.get("SubscriptionId") or key)] = row
        return vanished

    def _remember_subscriptions(
        self, summary: RunSummary, results: list[SubscriptionResult], known: Mapping[str, Mapping[str, Any]]
    ) -> None:
        """Record each subscription read tonight, so a later run notices when one vanishes."""
        rows = [
            {
                "PartitionKey": SUBSCRIPTIONS_PARTITION,
                "RowKey": r.subscription_id.lower(),
                "SubscriptionId": r.subscription_id,
                "SubscriptionName": self._subscription_names.get(r.subscription_id.lower(), ""),
                "FirstAuditedAt": _as_utc((known.get(r.subscription_id.lower()) or {}).get("FirstAuditedAt"))
                or summary.started_at,
                "LastAuditedAt": summary.started_at,
                "LastRunId": summary.run_id,
            }
            for r in results
            if r.read
        ]
        if rows:
            self._extra_transactions += self.store.upsert_many(self.store.runs, rows)

    def audit_subscription(self, summary: RunSummary, subscription_id: str) -> SubscriptionResult:
        """Inventory and evaluate one subscription and queue its rows; the state and the events
        follow when the writers report its rows durable (:meth:`_advance_state`, :meth:`_alert`)."""
        run_id = summary.run_id
        result = SubscriptionResult(subscription_id)
        audited_at = self.now()
        now_iso = audited_at.isoformat()
        findings: dict[str, Finding] = {}
        for item in self._scan(subscription_id):
            if isinstance(item, InventoryError):
                finding = error_finding(item)
                result.partial = True
                if item.scope_id.lower() == f"/subscriptions/{subscription_id}".lower():
                    result.read = False
                log.warning("Run %s: cannot read %s: %s", run_id, item.scope_id, item.message)
            else:
                finding = apply_exemption(replace(evaluate(item), owner=item.owner), self.exemptions, audited_at)
            findings.setdefault(resource_key(finding.resource_id), finding)

        # Read even when the subscription was not fully read (a Table read, not ARM): its rows then show
        # the stored state as it stays (nothing new, streaks kept), never a change the state does not hold.
        prior, extra = self.store.subscription_state(subscription_id, findings)
        silent = self._unconfirmed_silence(subscription_id, findings, prior) if result.read else None
        if silent is not None:  # nothing listed, yet resources were known: nothing is retired
            log.warning("Run %s: cannot read %s: %s", run_id, silent.scope_id, silent.message)
            findings[resource_key(silent.scope_id)] = error_finding(silent)
            result.read, result.partial = False, True
        changes: dict[str, Transition] = {}
        subscription_name = self._subscription_names.get(subscription_id.lower(), "")

        # Rows are generated as the writer takes them (it holds at most one batch per partition).
        def result_rows() -> Iterator[dict[str, Any]]:
            for key, finding in findings.items():
                change = None
                if finding.status is not Status.ERROR:
                    change = (
                        transition(finding, prior.get(key), run_id, now_iso, baseline=summary.baseline)
                        if result.read
                        else observed(finding, prior.get(key), run_id)
                    )
                    changes[key] = change
                yield result_entity(
                    run_id,
                    finding,
                    change,
                    audited_at,
                    key,
                    request_tag=self.settings.exemption_request_tag,
                    subscription_name=subscription_name,
                )
                result.counts[finding.status.value] += 1
                result.rows += 1

        if not result.read:  # unreadable: its last-known state stays exactly as it was
            self._results.add(subscription_id, result_rows(), lambda: self.checkpoint("rows_written", subscription_id))
            return result
        pending = _PendingState(subscription_id, run_id, now_iso, findings, changes, prior, extra, result.partial)
        self._results.add(subscription_id, result_rows(), lambda: self._advance_state(pending))
        self._hold(pending)
        result.new_failures = sum(1 for change in changes.values() if change.new_failure)
        result.retired = pending.retiring()
        return result

    def _unconfirmed_silence(
        self, subscription_id: str, findings: Mapping[str, Finding], prior: Mapping[str, Any]
    ) -> InventoryError | None:
        """A subscription that listed nothing tonight while its state holds live resources is asked
        once more (the inventory decides how) before those resources are retired as gone."""
        if any(f.status is not Status.ERROR for f in findings.values()):
            return None
        if not any(not state.get("Gone") for state in prior.values()):
            return None
        return self.inventory.confirm_empty(subscription_id)

    def _advance_state(self, pending: _PendingState) -> None:
        """The subscription's result rows are stored: advance its last-known state."""
        self.checkpoint("rows_written", pending.subscription_id)
        size = len(pending.changes)
        own = state_shards(size) > 0
        self._state.add(pending.subscription_id, pending.state_rows(), lambda: self._alert(pending), flush_own=own)

    def _alert(self, pending: _PendingState) -> None:
        """The subscription's state is stored: send its owed alerts, then tidy moved rows.

        Each batch of owed rows is marked sent (``AlertPending`` cleared) *before* its events are
        logged: a store failure leaves them owed and unsent (any later run that still sees them
        failing sends them), and a mark that was stored means its events follow at once, so none
        is sent twice.
        """
        self.checkpoint("state_advanced", pending.subscription_id)
        for key in pending.alerts_dropped():
            log.info(
                "Run %s: dropped the owed NewFailure alert of %s: it no longer fails (now %s)",
                pending.run_id,
                pending.findings[key].resource_id,
                pending.findings[key].status.value,
            )
        for batch in partition_batches(pending.alerts_due(), pending.written.__getitem__):
            marks = [pending.state_row(key, pending.changes[key], alerted=True) for key in batch]
            sent = self.store.write_batch(self.store.latest, marks)
            with self._tally_lock:
                self._extra_transactions += sent
                self._alerts_sent += len(batch)
            for key in batch:
                change = pending.changes[key]
                events.emit_new_failure(
                    new_failure_event(change.alert_run_id, pending.findings[key], change, sent_by=pending.run_id)
                )
            self.checkpoint("alerted", pending.subscription_id)
        retired = pending.retiring()
        if retired:
            log.info("Run %s: %d resources of %s are gone", pending.run_id, retired, pending.subscription_id)
        stale = pending.stale_copies()
        if stale:
            try:
                deleted, sent = self.store.delete_keys(self.store.latest, stale)
                with self._tally_lock:
                    self._extra_transactions += sent
                log.info(
                    "Run %s: moved %d state rows of %s to tonight's layout",
                    pending.run_id,
                    deleted,
                    pending.subscription_id,
                )
            except AzureError as exc:  # the copies are harmless (the newer one wins); retried next run
                log.warning(
                    "Could not delete %d old state rows of %s: %s", len(stale), pending.subscription_id, _short(exc)
                )
        self._let_go(pending)

    def _hold(self, pending: _PendingState) -> None:
        """Count a subscription that waits for shared partitions to fill (its findings and prior
        state stay in memory until its state is stored). Past :data:`MAX_HELD_RESOURCES` waiting,
        the partial batches go out early, which lets every waiting subscription go at once."""
        with self._tally_lock:
            if pending.released:  # stored already (its batches filled while it was being added)
                return
            pending.counted = True
            self._held += pending.held
            over = self._held > MAX_HELD_RESOURCES
        if over:
            log.info("Sending partial batches early: %d resources wait for shared partitions", self._held)
            self._results.flush()
            self._state.flush()

    def _let_go(self, pending: _PendingState) -> None:
        with self._tally_lock:
            pending.released = True
            if pending.counted:
                self._held -= pending.held

    def _past_deadline(self) -> bool:
        return time.monotonic() > self._deadline

    def _scan(self, subscription_id: str) -> Iterable[SiteRecord | InventoryError]:
        """The inventory of one subscription; an unexpected failure or the run's deadline
        becomes an ERROR row for the subscription, so a gap is always visible."""
        scope = f"/subscriptions/{subscription_id}"
        vanished = self._vanished.get(subscription_id)
        if vanished is not None:
            last = _as_utc(vanished.get("LastAuditedAt"))
            yield InventoryError(
                scope,
                subscription_id,
                "no longer visible to the auditor: the subscription list does not show it (disabled, moved out "
                "of the management group, or access removed); last audited "
                f"{last.isoformat() if last else 'before'} in run {vanished.get('LastRunId', '')}. Its "
                "last-known state is kept. It is reported until it is visible again, it was last audited "
                f"over AUDIT_RETENTION_DAYS ({self.settings.retention_days}) ago, or it is retired with "
                f"'clientcert-audit subscriptions retire {subscription_id}'.",
            )
            return
        deadline_note = (
            f"the run reached its deadline (AUDIT_RUN_DEADLINE_MINUTES={self.settings.run_deadline_minutes})"
        )
        if self._past_deadline():
            yield InventoryError(scope, subscription_id, f"not audited: {deadline_note}")
            return
        try:
            for item in self.inventory.scan(subscription_id):
                yield item
                if self._past_deadline():
                    yield InventoryError(scope, subscription_id, f"listing incomplete: {deadline_note}")
                    return
        except Exception as exc:  # noqa: BLE001 - one broken subscription never stops the run
            yield InventoryError(scope, subscription_id, _short(exc))

    # -- bookkeeping ----------------------------------------------------------------------
    def _write_run_record(self, summary: RunSummary) -> None:
        self.store.upsert_many(
            self.store.runs,
            [
                {
                    "PartitionKey": RUNS_PARTITION,
                    "RowKey": summary.run_id,
                    "RunId": summary.run_id,
                    "StartedAt": summary.started_at,
                    "Outcome": "running",
                    "Complete": False,
                    "Baseline": summary.baseline,
                    "Attempts": summary.attempt,
                    "StateAdvanced": False,
                    "ResultsTable": self.settings.results_table,
                }
            ],
        )

    def _record_run(self, summary: RunSummary, *, best_effort: bool = False) -> None:
        event = summary.event()
        entity = {
            "PartitionKey": RUNS_PARTITION,
            "RowKey": summary.run_id,
            "RunId": summary.run_id,
            "StartedAt": summary.started_at,
            "EndedAt": summary.ended_at,
            "Outcome": summary.outcome,
            "Complete": summary.outcome == "complete",
            "Baseline": summary.baseline,
            "StateAdvanced": not summary.failed,
            "Attempts": summary.attempt,
            "Total": event["Total"],
            "NewFailures": summary.new_failures,
            "AlertsSent": summary.alerts_sent,
            "SubscriptionsRead": summary.subscriptions_read,
            "SubscriptionsFailed": summary.subscriptions_failed,
            "DurationSeconds": summary.duration_seconds,
            "Rows": summary.rows,
            "Transactions": summary.transactions,
            "Partitions": summary.partitions,
            "Retired": summary.retired,
            "Error": summary.error,
            "ResultsTable": self.settings.results_table,
            **{f"Count{status}": count for status, count in event["Counts"].items()},
        }
        try:
            self.store.upsert_many(self.store.runs, [entity])
        except (AzureError, LeaseLost):
            if not best_effort:
                raise
            log.exception("Could not record the failed run %s", summary.run_id)

    def _retention(self, summary: RunSummary) -> int:
        """Delete result rows older than ``AUDIT_RETENTION_DAYS``; state is never aged out."""
        cutoff = summary.started_at - timedelta(days=self.settings.retention_days)
        try:
            deleted = self.store.delete_results_before(run_id_prefix(cutoff))
        except (AzureError, LeaseLost) as exc:
            log.warning("Retention clean-up failed (retried next run): %s", _short(exc))
            return 0
        if deleted:
            log.info("Retention: deleted %d result rows older than %d days", deleted, self.settings.retention_days)
        return deleted


def _short(exc: BaseException) -> str:
    text = (str(exc).splitlines() or [""])[0]
    return f"{type(exc).__name__}: {text}"[:2000]


def _as_utc(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return None


def build_inventory(settings: Settings, credential: TokenCredential, thread_init: ThreadInit = NO_CONTEXT) -> Inventory:
    """The configured inventory source; its threads run ``thread_init`` first."""
    if settings.inventory_source.value == "resourcegraph":
        from .resourcegraph import ResourceGraphInventory

        return ResourceGraphInventory(credential, settings, thread_init)
    return ArmInventory(credential, settings, thread_init)


def run_audit(
    settings: Settings,
    *,
    credential: TokenCredential | None = None,
    checkpoint: Checkpoint | None = None,
    thread_init: ThreadInit = NO_CONTEXT,
    now: Callable[[], datetime] | None = None,
) -> RunSummary:
    """Run the audit once with the configured identity, store and inventory. ``thread_init`` runs
    first on every thread the run starts (the Functions invocation context, see ``threads``);
    ``now`` is the clock (tests move it across nights)."""
    credential = credential or build_credential(settings.client_id)
    store = TableStore(settings, None if settings.table_connection_string else credential)
    try:
        inventory = build_inventory(settings, credential, thread_init)
        try:
            clock = {"now": now} if now else {}
            return AuditRun(
                settings, store, inventory, checkpoint=checkpoint, thread_init=thread_init, **clock
            ).execute()
        finally:
            inventory.close()
    finally:
        store.close()
