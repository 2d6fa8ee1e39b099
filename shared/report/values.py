"""How one value of a result row or run record reads: as JSON, in a cell, in a label.

Pure and shared by every format: a datetime, a boolean or a missing value looks the same in the
table, the CSV, the HTML page and the fix script.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from ..azure.exemptions import BrokenExemption, Exemption
from ..core.models import Status
from ..core.when import as_utc

STATUSES: tuple[str, ...] = tuple(s.value for s in Status)


def plain(value: Any) -> Any:
    """A JSON-ready value: datetimes as ISO 8601 UTC, everything else unchanged."""
    if isinstance(value, datetime):
        return (as_utc(value) or value).isoformat().replace("+00:00", "Z")
    return value


def text(value: Any) -> str:
    """A CSV/table cell: ``""`` for missing, ``true``/``false`` for booleans."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(plain(value))


def single_line(value: Any) -> str:
    """Text from the estate (an owner tag may hold anything) on one line of a terminal or a label."""
    return " ".join(text(value).split())


def fit(value: str, width: int) -> str:
    """``value`` cut to ``width`` characters, with an ellipsis where it was cut."""
    return value if len(value) <= width else value[: width - 1] + "…"


def short_id(subscription_id: str) -> str:
    """The first block of a subscription id: enough to tell two subscriptions of one name apart."""
    return subscription_id.split("-", 1)[0]


def subscription_label(row: Mapping[str, Any]) -> str:
    """``Prod (d7a7a3cc)``: the name people know, with a short id; the whole id when there is no name."""
    sub = str(row.get("SubscriptionId") or "")
    name = str(row.get("SubscriptionName") or "").strip()
    return f"{name} ({short_id(sub)})" if name and sub else (name or sub)


def resource_label(row: Mapping[str, Any]) -> str:
    """``app``, ``app/slot``, or the scope id for an ERROR row that is not a single app."""
    app = str(row.get("AppName") or "")
    if not app:
        return str(row.get("ResourceId") or "")
    slot = str(row.get("Slot") or "")
    return f"{app}/{slot}" if slot else app


def run_started(run: Mapping[str, Any]) -> str:
    """When a run started, to the minute (its RunId's start when the record has no time)."""
    started = run.get("StartedAt")
    if isinstance(started, datetime):
        return started.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return str(run.get("RowKey") or "")[:16]


def run_counts(run: Mapping[str, Any]) -> dict[str, int]:
    """The per-status totals a run recorded (``Count<STATUS>``) - the trend's data points."""
    return {s: int(run.get(f"Count{s}") or 0) for s in STATUSES}


def run_view(run: Mapping[str, Any]) -> dict[str, Any]:
    """A run record for JSON: stable names, no table metadata."""
    return {
        "runId": run.get("RowKey"),
        "outcome": run.get("Outcome"),
        "startedAt": plain(run.get("StartedAt")),
        "endedAt": plain(run.get("EndedAt")),
        "counts": run_counts(run),
        "newFailures": int(run.get("NewFailures") or 0),
    }


def broken_exemption_view(broken: BrokenExemption) -> dict[str, Any]:
    """A broken exemption row for JSON and CSV: it exempts nothing, and says why."""
    return {"scope": broken.scope, "state": "broken", "problem": broken.problem, "row": broken.row}


def exemption_view(exemption: Exemption) -> dict[str, Any]:
    """An exemption for JSON and CSV (``report --format json``, ``exempt list``)."""
    return {
        "scope": exemption.scope,
        "reason": exemption.reason,
        "approver": exemption.approver,
        "createdAt": plain(exemption.created),
        "expiresAt": plain(exemption.expires),
        "recordedBy": exemption.recorded_by,
    }
