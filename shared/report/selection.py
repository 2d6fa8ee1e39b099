"""What a report covers: which rows (:class:`RowFilter`) and which runs (the latest finished one,
one by id, every one since a date, the trend's). Pure: run records and rows in, decisions out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..core.errors import NoDataError
from ..core.keys import odata_quote, resource_key
from ..core.models import Status
from ..core.names import same
from .values import STATUSES

#: What the table and HTML formats list when no ``--status`` is given: what someone must act on.
ACTIONABLE: frozenset[str] = frozenset({Status.FAIL.value, Status.WARN.value, Status.ERROR.value})
#: Outcomes of a run that finished writing its rows: the runs a report reads and the trend draws
#: (``blind``: a run that read no subscription; its only rows are ERROR rows that say why).
TREND_OUTCOMES = ("complete", "partial", "blind")


# -- rows -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RowFilter:
    """The report's ``--status/--new/--subscription/--resource-group/--kind/--resource`` selection.

    :meth:`odata` is the part the Table service can evaluate (exact, case-sensitive values);
    :meth:`matches` re-checks everything client-side, including what OData cannot do
    case-insensitively (resource group names and kinds come back in whatever casing ARM used).
    """

    statuses: frozenset[str] = frozenset()
    new_only: bool = False
    subscription: str = ""
    resource_group: str = ""
    kinds: tuple[str, ...] = ()
    resource: str = ""
    owner: str = ""  # case-insensitive part of the Owner column

    def matches(self, row: Mapping[str, Any]) -> bool:
        if self.statuses and str(row.get("Status") or "") not in self.statuses:
            return False
        if self.new_only and row.get("NewFailure") is not True:
            return False
        if self.subscription and not same(str(row.get("SubscriptionId") or ""), self.subscription):
            return False
        if self.resource_group and not same(str(row.get("ResourceGroup") or ""), self.resource_group):
            return False
        if self.kinds and not set(self.kinds) <= kind_tokens(row.get("Kind")):
            return False
        if self.owner and self.owner.casefold() not in str(row.get("Owner") or "").casefold():
            return False
        return not self.resource or resource_key(str(row.get("ResourceId") or "")) == resource_key(self.resource)

    def odata(self) -> str:
        """The server-side part of the filter, ``""`` when there is none."""
        parts = []
        if self.statuses:
            parts.append("(" + " or ".join(f"Status eq {odata_quote(s)}" for s in sorted(self.statuses)) + ")")
        if self.new_only:
            parts.append("NewFailure eq true")
        return " and ".join(parts)

    def describe(self) -> str:
        """The selection in words, printed above every report so nobody misreads a filtered one."""
        parts = []
        if self.statuses:
            parts.append("status " + "/".join(s for s in STATUSES if s in self.statuses))
        if self.new_only:
            parts.append("new failures only")
        if self.subscription:
            parts.append(f"subscription {self.subscription}")
        if self.resource_group:
            parts.append(f"resource group {self.resource_group}")
        if self.kinds:
            parts.append("kind " + ",".join(self.kinds))
        if self.resource:
            parts.append(f"resource {self.resource}")
        if self.owner:
            parts.append(f"owner containing '{self.owner}'")
        return ", ".join(parts) or "all resources"

    def as_dict(self) -> dict[str, Any]:
        return {
            "statuses": [s for s in STATUSES if s in self.statuses],
            "newOnly": self.new_only,
            "subscription": self.subscription,
            "resourceGroup": self.resource_group,
            "kinds": list(self.kinds),
            "resource": self.resource,
            "owner": self.owner,
        }


def kind_tokens(kind: Any) -> set[str]:
    """``"functionapp,linux"`` -> ``{"functionapp", "linux"}``: ``--kind linux`` matches every Linux app."""
    return {part.strip().lower() for part in str(kind or "").split(",") if part.strip()}


def listed_statuses(flt: RowFilter) -> frozenset[str]:
    """Statuses the table and HTML formats list: the filter's, every one for a single resource, else the actionable."""
    if flt.statuses:
        return flt.statuses
    return frozenset(STATUSES) if flt.resource else ACTIONABLE


# -- runs -----------------------------------------------------------------------------------------
def no_run_message(table: str) -> str:
    """Why there is nothing to report yet, and what makes a run."""
    return (
        f"No audit run is recorded in table {table} yet. Run `clientcert-audit run` "
        "(or `make demo` locally), or wait for the nightly timer, then report again."
    )


def is_nightly(run: Mapping[str, Any]) -> bool:
    """A nightly run (every app), as opposed to a change poll's run (``Kind`` ``changes``)."""
    return str(run.get("Kind") or "nightly") != "changes"


def latest_finished(runs: Sequence[Mapping[str, Any]], table: str) -> Mapping[str, Any]:
    """The newest run that finished writing its rows (Outcome ``complete`` or ``partial``).

    A partial run is included on purpose: a tenant with one subscription the audit may not read
    has *only* partial runs, and its readable subscriptions still need reporting. The report's
    header says "partial" and the unreadable scopes are ERROR rows. A run that failed or is still
    running is never picked silently. Change runs (``Kind`` ``changes``) hold only the resources that
    changed, so the default is the latest *nightly* run; ``--since`` includes change runs.
    """
    finished = [run for run in runs if run.get("Outcome") in TREND_OUTCOMES and is_nightly(run)]
    if finished:
        return finished[-1]
    if not runs:
        raise NoDataError(no_run_message(table))
    last = runs[-1]
    raise NoDataError(
        f"No finished run yet; the latest is {last.get('RowKey')} ({last.get('Outcome')}). "
        f"Report on it anyway with --run {last.get('RowKey')}."
    )


def find_run(runs: Sequence[Mapping[str, Any]], run_id: str, table: str) -> Mapping[str, Any]:
    for run in runs:
        if str(run.get("RowKey")) == run_id:
            return run
    if not runs:
        raise NoDataError(no_run_message(table))
    recent = ", ".join(str(r.get("RowKey")) for r in runs[-5:])
    raise NoDataError(f"No run {run_id!r} in table {table}. Most recent runs: {recent}")


def runs_since(runs: Sequence[Mapping[str, Any]], since: datetime) -> list[Mapping[str, Any]]:
    """Complete and partial runs started at or after ``since`` (failed ones hold no trustworthy rows)."""
    return [
        r
        for r in runs
        if r.get("Outcome") in TREND_OUTCOMES and isinstance(r.get("StartedAt"), datetime) and r["StartedAt"] >= since
    ]


def trend_runs(runs: Sequence[Mapping[str, Any]], last: Mapping[str, Any], count: int) -> list[Mapping[str, Any]]:
    """Up to ``count`` complete/partial runs ending with ``last``: the chart's x axis."""
    upto = str(last.get("RowKey"))
    eligible = [
        r for r in runs if r.get("Outcome") in TREND_OUTCOMES and is_nightly(r) and str(r.get("RowKey")) <= upto
    ]
    return eligible[-count:] if count > 0 else []
