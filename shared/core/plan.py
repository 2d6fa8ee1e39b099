"""A subscription's plan: what tonight means for it, decided as pure data before any write.

From its findings and its last-known state: each resource's transition (new failure, owed alert),
the state partition of each row, the resources that are gone, and the rows, state rows and alert
marks rendered from them. The pipeline (``pipeline.py``) only writes what the plan renders.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Container, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from .evaluate import evaluate
from .exemption_rules import Exemption, apply_exemption, exemption_request
from .layout import state_partition
from .models import Finding, SiteRecord, Status
from .schema import ETAG, SOURCE_GET, SOURCE_LIST, DeferredRow, StateCopy, gone_row, result_row, state_row
from .state import Transition, observed, transition
from .summary import RunSummary


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


# -- the plan (pure) -------------------------------------------------------------------------------
#: A subscription's inventory by key: the record of each resource (its finding is computed when
#: read, see :class:`Findings`), or the ERROR finding of a scope or item that could not be read.
Listed = dict[str, SiteRecord | Finding]


class Findings(Mapping[str, Finding]):
    """A subscription's findings by key, computed from its compact records each time one is read.

    A finding carries its reason and remediation text (most of its size); the record it comes from
    is a third of that. The evaluation is pure, so a finding read twice is the same finding, and a
    subscription waiting for its state to be stored holds only its records.
    """

    __slots__ = ("_at", "_exemptions", "_listed")

    def __init__(self, listed: Listed, exemptions: Sequence[Exemption], at: datetime) -> None:
        self._listed = listed
        self._exemptions = exemptions
        self._at = at

    def __getitem__(self, key: str) -> Finding:
        item = self._listed[key]
        if isinstance(item, Finding):
            return item
        finding = evaluate(item)
        if item.owner:
            finding = replace(finding, owner=item.owner)
        return apply_exemption(finding, self._exemptions, self._at)

    def __contains__(self, key: object) -> bool:
        return key in self._listed

    def __iter__(self) -> Iterator[str]:
        return iter(self._listed)

    def __len__(self) -> int:
        return len(self._listed)


@dataclass(frozen=True)
class SubscriptionPlan:
    """Everything one subscription's rows, state and alerts will be, decided before any write."""

    subscription_id: str
    subscription_name: str
    run_id: str
    fence: int  # the run's lease holding, stamped on every state row it writes
    audited_at: datetime
    findings: Mapping[str, Finding]
    changes: dict[str, Transition]  # audited resources (not ERROR rows)
    prior: dict[str, Any]  # last-known state by key
    extra: list[StateCopy]  # other copies of state rows: (PartitionKey, RowKey, key, ETag)
    read: bool  # the subscription was listed fully enough to advance its state
    partial: bool  # something in it could not be read: nothing is retired
    partitions: dict[str, str]  # state partition of each key written tonight (gone ones: where they are)
    gone: tuple[str, ...]  # resources a complete listing no longer shows
    request_tag: str | None
    #: A resumed run's rows its earlier attempt stored for resources whose state it advanced: those
    #: decisions stand (the alerts that name this run agree with them; the findings are replayed from
    #: these rows), so the rows are kept as they are, not written again.
    kept: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    source: str = SOURCE_LIST  # how the findings were read (each state row's ObservedBy) ...
    reread: frozenset[str] = frozenset()  # ... but these keys, read again by GET
    counts: Counter[str] = field(default_factory=Counter)  # findings by status (a kept row's own)
    #: The size of the whole subscription the state layout is chosen for (a slice's plan is part of it).
    layout_size: int = 0

    @property
    def now_iso(self) -> str:
        return self.audited_at.isoformat()

    @property
    def new_failures(self) -> int:
        return sum(1 for change in self.changes.values() if change.new_failure)

    @property
    def held(self) -> int:
        return len(self.findings) + len(self.prior)

    def result_rows(self) -> Iterator[dict[str, Any]]:
        """Tonight's result rows, rendered as the writer takes them (no side effects); a row an earlier
        attempt of this run stored and :attr:`kept` is not written again."""
        for key, finding in self.findings.items():
            if key in self.kept:
                continue
            yield result_row(
                self.run_id,
                finding,
                self.changes.get(key),
                self.audited_at,
                key,
                exemption_request=exemption_request(finding, self.request_tag),
                subscription_name=self.subscription_name,
            )

    def state_rows(self) -> Iterator[DeferredRow]:
        """Tonight's state rows, each in tonight's layout, rendered by :meth:`state_entity` when the
        writer sends them (a row waiting for its batch to fill holds only its key)."""
        render = self.state_entity
        for key in self.changes:
            yield DeferredRow(self.partitions[key], key, render)
        for key in self.gone:
            yield DeferredRow(self.partitions[key], key, render)

    def state_entity(self, key: str) -> dict[str, Any]:
        """Tonight's state row of ``key``; a gone resource is retired in place. It carries the ETag of
        the row it replaces (``None``: there is none, it is created), so it is written only while that
        row is as this run read it (``TableStore.write_state``)."""
        if key in self.changes:
            return {**self.state_row(key, alerted=False), ETAG: self._etag_at(key)}
        return {**gone_row(self.prior[key], self.run_id, self.now_iso, key, self.fence), ETAG: self._etag_at(key)}

    def _etag_at(self, key: str) -> str | None:
        """The ETag of the copy stored where tonight's row of ``key`` goes, ``None`` if none is."""
        target = (self.partitions[key], key)
        if key in self.prior and self._stored_at(key) == target:
            return str(self.prior[key].get(ETAG) or "") or None
        return next((etag or None for pk, rk, k, etag in self.extra if k == key and (pk, rk) == target), None)

    def state_row(self, key: str, *, alerted: bool) -> dict[str, Any]:
        return state_row(
            self.findings[key],
            self.changes[key],
            self.prior.get(key),
            self.run_id,
            self.now_iso,
            key,
            self.partitions[key],
            alerted=alerted,
            fence=self.fence,
            observed_by=SOURCE_GET if key in self.reread else self.source,
        )

    def alerts_due(self) -> list[str]:
        """Owed alerts: tonight's new failures and those an earlier run stored but never sent."""
        return [key for key, change in self.changes.items() if change.alert_pending]

    def alerts_dropped(self) -> list[str]:
        """Owed alerts of resources that no longer fail (the alert is not sent, and not owed)."""
        return [key for key, change in self.changes.items() if change.dropped_alert]

    def stale_copies(self) -> list[tuple[str, str, str]]:
        """``(PartitionKey, RowKey, ETag)`` of state rows other than the current copy of their
        resource: a copy in another partition, or under the key an older version gave it (``store``)."""
        stale: dict[tuple[str, str], str] = {}
        for key, state in self.prior.items():
            old = self._stored_at(key)
            if key in self.partitions and (self.partitions[key], key) != old:
                stale[old] = str(state.get(ETAG) or "")
        for partition, row_key, key, etag in self.extra:
            current = (self.partitions[key], key) if key in self.partitions else self._stored_at(key)
            if (partition, row_key) != current:
                stale[(partition, row_key)] = etag
        return sorted((pk, rk, etag) for (pk, rk), etag in stale.items())

    def _stored_at(self, key: str) -> tuple[str, str]:
        """Where the current copy of a resource's prior state is stored."""
        state = self.prior[key]
        return str(state["PartitionKey"]), str(state.get("RowKey") or key)


def plan_subscription(
    subscription_id: str,
    findings: Mapping[str, Finding],
    prior: dict[str, Any],
    extra: list[StateCopy],
    *,
    summary: RunSummary,
    audited_at: datetime,
    read: bool,
    partial: bool,
    subscription_name: str = "",
    request_tag: str | None = None,
    retire: Iterable[str] = (),
    in_place: bool = False,
    kept: Mapping[str, Mapping[str, Any]] | None = None,
    source: str = SOURCE_LIST,
    reread: frozenset[str] = frozenset(),
    layout_size: int | None = None,
) -> SubscriptionPlan:
    """Decide, as data, what tonight means for one subscription (or a slice of it, of a subscription
    of ``layout_size``, ``run/slices.py``). One not read fully enough shows its stored state
    (``observed``) and changes nothing. ``retire`` names resources confirmed deleted, retired even
    when the listing was partial; ``in_place`` (a change poll) writes each row where it already is."""
    kept = {k: v for k, v in (kept or {}).items() if k in findings}
    counts, changes = _transitions(findings, prior, kept, summary, audited_at.isoformat(), read=read)
    size = len(changes) if layout_size is None else layout_size
    partitions = _partitions(subscription_id, size, changes, prior, in_place=in_place) if read else {}
    gone = _gone(findings, prior, read=read, partial=partial, retire=retire)
    partitions.update((k, str(prior[k]["PartitionKey"])) for k in gone)
    return SubscriptionPlan(
        subscription_id=subscription_id,
        subscription_name=subscription_name,
        run_id=summary.run_id,
        fence=summary.fence,
        audited_at=audited_at,
        findings=findings,
        changes=changes,
        prior=prior,
        extra=extra,
        read=read,
        partial=partial,
        partitions=partitions,
        gone=gone,
        request_tag=request_tag,
        kept=kept,
        source=source,
        reread=reread,
        counts=counts,
        layout_size=size,
    )


def _transitions(
    findings: Mapping[str, Finding],
    prior: Mapping[str, Any],
    kept: Mapping[str, Mapping[str, Any]],
    summary: RunSummary,
    now_iso: str,
    *,
    read: bool,
) -> tuple[Counter[str], dict[str, Transition]]:
    """Each resource's counted status and state transition. A kept row (a resume's earlier
    decision) counts as it was stored; an ERROR finding moves no state. Most resources share one
    of a few transitions, so equal ones are kept once."""
    counts: Counter[str] = Counter()
    changes: dict[str, Transition] = {}
    shared: dict[Transition, Transition] = {}
    for key, finding in findings.items():
        counts[str(kept[key].get("Status")) if key in kept else finding.status.value] += 1
        if finding.status is Status.ERROR:
            continue
        change = (
            transition(finding, prior.get(key), summary.run_id, now_iso, baseline=summary.baseline)
            if read
            else observed(finding, prior.get(key), summary.run_id)
        )
        changes[key] = shared.setdefault(change, change)
    return counts, changes


def _partitions(
    subscription_id: str, size: int, changes: Mapping[str, Transition], prior: Mapping[str, Any], *, in_place: bool
) -> dict[str, str]:
    """Where each changed resource's state row goes: laid out by the size of what was read, or,
    for a change poll (``in_place``), where the row already is. A few distinct partitions serve
    tens of thousands of keys, so each is one interned string."""
    return {
        key: str(prior[key]["PartitionKey"])
        if in_place and key in prior
        else sys.intern(state_partition(subscription_id, size, key))
        for key in changes
    }


def _gone(
    findings: Mapping[str, Finding], prior: Mapping[str, Any], *, read: bool, partial: bool, retire: Iterable[str]
) -> tuple[str, ...]:
    """Resources to retire: only a fully read subscription can prove that a resource is gone by
    not listing it; a partial read retires only what was confirmed deleted (``retire``)."""
    if not read:
        return ()
    confirmed = None if not partial else set(retire)
    return tuple(
        k for k, s in prior.items() if k not in findings and not s.get("Gone") and (confirmed is None or k in confirmed)
    )


@dataclass
class Totals:
    """What the subscriptions audited so far contributed to the run, added as each one ends.

    A run keeps no result per subscription (it would hold one per subscription, allocated one by
    one over the run's length, until the run ends): only these sums, and the ids of the
    subscriptions read (the ledger remembers them)."""

    counts: Counter[str] = field(default_factory=Counter)
    new_failures: int = 0
    audited: int = 0
    read: list[str] = field(default_factory=list)
    partial: bool = False
    rows: int = 0
    retired: int = 0

    def add(self, result: SubscriptionResult) -> None:
        self.counts.update(result.counts)
        self.new_failures += result.new_failures
        self.audited += 1
        if result.read:
            self.read.append(result.subscription_id)
        self.partial = self.partial or result.partial or not result.read
        self.rows += result.rows
        self.retired += result.retired


def tally(summary: RunSummary, totals: Totals) -> None:
    """Add the subscriptions' contributions to the run's summary."""
    summary.counts.update(totals.counts)
    summary.new_failures += totals.new_failures
    summary.subscriptions_read += len(totals.read)
    summary.subscriptions_failed += totals.audited - len(totals.read)
    summary.partial = summary.partial or totals.partial
    summary.rows += totals.rows
    summary.retired += totals.retired


def targeted(
    prior: dict[str, Any], extra: list[StateCopy], findings: Container[str], deleted: set[str]
) -> tuple[dict[str, Any], list[StateCopy], set[str]]:
    """Narrow a subscription's state to the resources a targeted read saw or confirmed deleted (a
    deleted site takes its slots with it: they cannot outlive it)."""
    sites = tuple(f"{key}|slots|" for key in deleted)
    retire = deleted | {k for k in prior if sites and k.startswith(sites)}
    keep = {k: v for k, v in prior.items() if k in findings or k in retire}
    return keep, [copy for copy in extra if copy[2] in keep], retire


def new_failure_event(run_id: str, finding: Finding, change: Transition, *, sent_by: str) -> dict[str, Any]:
    """Payload of one ``ClientCertAudit.NewFailure`` event (a contract: see docs/design.md).

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
