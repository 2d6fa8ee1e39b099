"""A run's summary: what the RunSummary event, the runs table and the command line say about it.

Plain data (no I/O): the pure plan tallies into it, the ledger (``ledger.py``) records and emits it.
"""

from __future__ import annotations

import secrets
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .models import Status

#: The outcome of a nightly run that read no subscription (a contract: the run record, the RunSummary
#: event, the incomplete-run alert, the report header and ``run``'s exit code all say it).
BLIND = "blind"


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
    blind: bool = False  # a nightly run that read no subscription: never a pass (see audit.py)
    baseline: bool = False
    resumed: bool = False
    attempt: int = 1
    rows: int = 0
    transactions: int = 0
    partitions: int = 0  # results and state partitions written to
    retired: int = 0
    deleted_old_rows: int = 0
    error: str = ""
    kind: str = "nightly"  # or "changes": a change poll's run (see changes.py)
    fence: int = 0  # the lease holding this attempt writes under (stamped on every state row)

    @property
    def outcome(self) -> str:
        """``complete``, ``partial`` (ERROR rows), ``blind`` (no subscription read: nothing was
        audited, never a pass), ``failed``; ``running`` is written by :func:`running_row` only."""
        if self.failed:
            return "failed"
        if self.blind:
            return BLIND
        return "partial" if self.partial else "complete"

    @property
    def duration_seconds(self) -> float:
        end = self.ended_at or datetime.now(UTC)
        return round((end - self.started_at).total_seconds(), 3)

    def event(self) -> dict[str, Any]:
        """Payload of the ``ClientCertAudit.RunSummary`` event (a contract: see docs/design.md)."""
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
            "Kind": self.kind,
        }


def new_run_id(now: datetime) -> str:
    """Sortable and unique: later runs sort later (microseconds; runs never overlap, see the
    lease), and a random suffix keeps ids distinct across deployments sharing a table."""
    return f"{run_id_prefix(now)}Z-{secrets.token_hex(3)}"


def run_id_prefix(at: datetime) -> str:
    """The time part of a RunId; RunIds (and result PartitionKeys) sort like these."""
    return at.astimezone(UTC).strftime("%Y%m%dT%H%M%S%f")
