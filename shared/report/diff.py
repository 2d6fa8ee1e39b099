"""What changed between two runs: per resource, its status before and after (pure; streamed).

Only the older run is held in memory, one small tuple per resource, and only what reporting a
disappearance needs.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from ..core.keys import resource_key
from ..core.names import fold
from ..core.schema import row_identity
from .selection import RowFilter

#: Columns of a diff as CSV and of each ``changes`` item of its JSON (a contract for tooling).
DIFF_COLUMNS: tuple[str, ...] = (
    "Change",
    "Before",
    "After",
    "SubscriptionId",
    "ResourceGroup",
    "AppName",
    "Slot",
    "Reason",
    "ResourceId",
)


@dataclass(frozen=True, slots=True)
class Change:
    """A resource whose status differs between two runs (``""``: absent from that run)."""

    before: str
    after: str
    resource_id: str
    subscription_id: str
    resource_group: str
    app_name: str
    slot: str
    reason: str

    @property
    def kind(self) -> str:
        """``appeared``, ``disappeared`` or ``changed``."""
        if not self.before:
            return "appeared"
        return "disappeared" if not self.after else "changed"

    @property
    def transition(self) -> str:
        """``BEFORE->AFTER`` (``-`` for absent): what a diff's summary counts."""
        return f"{self.before or '-'}->{self.after or '-'}"

    def as_row(self) -> dict[str, str]:
        """The change in :data:`DIFF_COLUMNS` order."""
        values = (self.kind, self.before, self.after, self.subscription_id, self.resource_group)
        return dict(zip(DIFF_COLUMNS, (*values, self.app_name, self.slot, self.reason, self.resource_id), strict=True))


_KEPT = ("ResourceId", "SubscriptionId", "ResourceGroup", "AppName", "Slot")


def _row_key(row: Mapping[str, Any]) -> tuple[str, str]:
    # The resource's key by today's rule (a row an older version wrote may carry another RowKey).
    return fold(str(row.get("SubscriptionId") or "")), resource_key(str(row.get("ResourceId") or row.get("RowKey")))


def _change(before: str, after: str, row: Mapping[str, Any]) -> Change:
    return Change(before=before, after=after, **row_identity(row), reason=str(row.get("Reason") or ""))


def diff_rows(older: Iterable[Mapping[str, Any]], newer: Iterable[Mapping[str, Any]]) -> Iterator[Change]:
    """Changes from ``older`` to ``newer``: status changes first (in ``newer``'s order), then disappearances.

    Only the older run is held in memory, and only what a disappearance needs to be reported.
    """
    before: dict[tuple[str, str], tuple[str, ...]] = {}  # a tuple per row: 100,000 of them stay small
    for row in older:
        before[_row_key(row)] = (str(row.get("Status") or ""), *(str(row.get(k) or "") for k in _KEPT))
    for row in newer:
        previous = before.pop(_row_key(row), None)
        status = str(row.get("Status") or "")
        if previous is None or previous[0] != status:
            yield _change(previous[0] if previous else "", status, row)
    for status, *kept in sorted(before.values(), key=lambda item: item[1].lower()):
        gone = dict(zip(_KEPT, kept, strict=True))
        yield _change(status, "", {**gone, "Reason": "No longer listed (deleted, moved, or its scope was unreadable)."})


def change_selected(change: Change, flt: RowFilter) -> bool:
    """``--status`` keeps changes from or to those statuses; ``--new`` keeps changes into FAIL."""
    if flt.statuses and change.before not in flt.statuses and change.after not in flt.statuses:
        return False
    return not flt.new_only or (change.after == "FAIL" and change.before != "FAIL")
