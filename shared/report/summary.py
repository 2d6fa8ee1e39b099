"""Counting a selection while its rows stream past: per status, per subscription and per
``--group-by`` group (subscription, owner or resource group), plus the exemption requests; and
:class:`ReportContext`, everything a format shows besides the rows.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ..azure.exemptions import BrokenExemption, Exemption
from ..core.models import Status
from ..core.names import fold
from ..core.schema import REPORT_COLUMNS
from .selection import RowFilter, listed_statuses
from .values import STATUSES, run_started, single_line, subscription_label

#: ``--group-by`` choices: what the summary table counts per row ("subscription" is the default).
GROUPINGS: tuple[str, ...] = ("subscription", "owner", "resource-group")
NO_OWNER = "(no owner)"
MAX_REQUESTS_SHOWN = 500


def group_of(row: Mapping[str, Any], group_by: str) -> tuple[str, str]:
    """``(key, label)`` of a row's group: keys compare case-insensitively, labels are for people."""
    if group_by == "owner":
        owner = single_line(row.get("Owner"))
        return owner.casefold(), owner or NO_OWNER
    sub = str(row.get("SubscriptionId") or "").lower()
    if group_by == "resource-group":
        rg = str(row.get("ResourceGroup") or "")
        return f"{sub}/{fold(rg)}", f"{rg or '-'} in {subscription_label(row)}"
    return sub, subscription_label(row)


@dataclass
class Summary:
    """Counts of a selection, built while the rows stream past."""

    group_by: str = "subscription"
    by_status: Counter[str] = field(default_factory=Counter)
    by_subscription: dict[str, Counter[str]] = field(default_factory=dict)
    by_group: dict[str, Counter[str]] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)  # group key -> label (first seen)
    subscription_names: dict[str, str] = field(default_factory=dict)
    new_failures: int = 0
    fixed: int = 0  # PASS now, FAIL or WARN the last time the audit saw it
    requests: list[Mapping[str, Any]] = field(default_factory=list)
    requests_total: int = 0

    def add(self, row: Mapping[str, Any]) -> None:
        status = str(row.get("Status") or "")
        self.by_status[status] += 1
        sub = str(row.get("SubscriptionId") or "").lower()
        self.by_subscription.setdefault(sub, Counter())[status] += 1
        if row.get("SubscriptionName"):
            self.subscription_names.setdefault(sub, str(row.get("SubscriptionName")))
        key, label = group_of(row, self.group_by)
        self.by_group.setdefault(key, Counter())[status] += 1
        self.labels.setdefault(key, label)
        if row.get("NewFailure") is True:
            self.new_failures += 1
        if status == Status.PASS.value and row.get("PreviousStatus") in (Status.FAIL.value, Status.WARN.value):
            self.fixed += 1
        if row.get("ExemptionRequest") and status in (Status.FAIL.value, Status.WARN.value):
            self.requests_total += 1
            if len(self.requests) < MAX_REQUESTS_SHOWN:
                self.requests.append({k: row.get(k) for k in REPORT_COLUMNS})

    @property
    def total(self) -> int:
        return sum(self.by_status.values())

    @property
    def with_verdict(self) -> int:
        """Resources the audit could judge: every row but ERROR (a scope that could not be read)."""
        return self.total - self.by_status.get(Status.ERROR.value, 0)

    @property
    def compliant(self) -> int:
        """PASS, and EXEMPT (a risk the security team accepted, until its expiry)."""
        return self.by_status.get(Status.PASS.value, 0) + self.by_status.get(Status.EXEMPT.value, 0)

    def compliance_percent(self) -> float | None:
        """:attr:`compliant` of :attr:`with_verdict`, in percent; ``None`` when nothing had a verdict."""
        return 100.0 * self.compliant / self.with_verdict if self.with_verdict else None

    @property
    def has_fail(self) -> bool:
        """Whether the selection contains FAIL: the report's exit code for pipelines."""
        return self.by_status.get(Status.FAIL.value, 0) > 0

    def subscriptions_worst_first(self) -> list[tuple[str, Counter[str]]]:
        return sorted(self.by_subscription.items(), key=lambda kv: (-kv[1]["FAIL"], -kv[1]["WARN"], kv[0]))

    def groups_worst_first(self) -> list[tuple[str, Counter[str]]]:
        """``(label, counts)`` per group: most FAIL first, then most WARN, then most ERROR."""
        ranked = sorted(
            self.by_group.items(),
            key=lambda kv: (-kv[1]["FAIL"], -kv[1]["WARN"], -kv[1]["ERROR"], self.labels[kv[0]].casefold()),
        )
        return [(self.labels[key], counts) for key, counts in ranked]

    def as_dict(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "byStatus": {s: self.by_status.get(s, 0) for s in STATUSES},
            "newFailures": self.new_failures,
            "fixedSinceLastRun": self.fixed,
            "bySubscription": {
                sub: {s: counts.get(s, 0) for s in STATUSES} for sub, counts in self.subscriptions_worst_first()
            },
            "subscriptionNames": dict(sorted(self.subscription_names.items())),
            "groupBy": self.group_by,
            "byGroup": [
                {"group": label, **{s: counts.get(s, 0) for s in STATUSES}, "total": sum(counts.values())}
                for label, counts in self.groups_worst_first()
            ],
            "exemptionRequests": self.requests_total,
        }


@dataclass(frozen=True)
class ReportContext:
    """Everything a renderer shows besides the rows: which runs, what filter, which exemptions expire."""

    runs: tuple[Mapping[str, Any], ...]
    flt: RowFilter = field(default_factory=RowFilter)
    trend: tuple[Mapping[str, Any], ...] = ()
    expiring: tuple[Exemption, ...] = ()
    expiring_days: int = 14
    broken: tuple[BrokenExemption, ...] = ()  # exemption rows that exempt nothing (always shown)
    html_rows: int = 5000  # a page with 100,000 rows helps nobody; CSV has them all
    group_by: str = ""  # --group-by; "" is the default summary (per subscription)
    generated_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    #: Lower-cased subscription id -> its tenant, from the subscription registry (portal links).
    tenants: Mapping[str, str] = field(default_factory=dict)

    def tenant_of(self, row: Mapping[str, Any]) -> str:
        return self.tenants.get(str(row.get("SubscriptionId") or "").lower(), "")

    @property
    def gone(self) -> int | None:
        """Resources the last selected run retired as gone (deleted or moved since they were last seen)."""
        if not self.runs or self.runs[-1].get("Retired") is None:
            return None
        return int(self.runs[-1].get("Retired") or 0)

    @property
    def multi_run(self) -> bool:
        return len(self.runs) != 1

    @property
    def listed(self) -> frozenset[str]:
        return listed_statuses(self.flt)

    def summary(self) -> Summary:
        """An empty summary that counts per the requested group."""
        return Summary(group_by=self.group_by or "subscription")

    def title(self) -> str:
        if not self.runs:
            return "no run in the selected period"
        if self.multi_run:
            return f"{len(self.runs)} runs from {run_started(self.runs[0])} to {run_started(self.runs[-1])}"
        run = self.runs[0]
        outcome = str(run.get("Outcome") or "")
        if outcome == "partial":
            unreadable = int(run.get("SubscriptionsFailed") or 0)
            outcome = f"partial: {unreadable} subscription(s) unreadable, see the ERROR rows"
        elif outcome == "blind":
            outcome = (
                "blind: it could read no subscription, this is NOT A PASS; the ERROR rows say why and what to grant"
            )
        return f"run {run.get('RowKey')} ({outcome}, started {run_started(run)})"
