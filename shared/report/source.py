"""Reading a report's rows from the tables: the one part of the report that does I/O.

Run records are few (one a night); result rows stream page by page (1,000 a page), through the
narrowest query that answers the selection, and are re-checked client-side by the filter.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from azure.core.exceptions import ResourceNotFoundError

from ..azure.store import TableStore
from ..core import layout
from ..core.keys import odata_quote, resource_key
from .selection import RowFilter


class ReportSource:
    """Reads run records and result rows; result rows stream page by page (1,000 per page)."""

    def __init__(self, store: TableStore) -> None:
        self.store = store

    def runs(self) -> list[Mapping[str, Any]]:
        """Every run record, oldest first (one per night: small)."""
        try:
            return list(self.store.runs_list())
        except ResourceNotFoundError:
            return []

    def results(self, run_id: str, flt: RowFilter) -> Iterator[Mapping[str, Any]]:
        """The rows of one run that match ``flt``; the narrowest query that can answer it.

        A run is the ``PartitionKey`` range of its partitions (``<RunId>_`` up to the character after
        ``_``, see :func:`layout.run_range`). Rows of many subscriptions share those partitions, so
        one subscription is that range narrowed to the subscription's ``RowKey`` range, and one
        resource is that range with ``RowKey eq`` its key: neither partition can be derived from
        the id any more, so there is no point read.
        """
        low, high = layout.run_range(run_id)
        parts = [f"PartitionKey ge {odata_quote(low)}", f"PartitionKey lt {odata_quote(high)}"]
        if flt.resource:
            parts.append(f"RowKey eq {odata_quote(resource_key(flt.resource))}")
        elif flt.subscription:
            first, after = layout.subscription_row_range(flt.subscription)
            parts += [f"RowKey ge {odata_quote(first)}", f"RowKey lt {odata_quote(after)}"]
        if server := flt.odata():
            parts.append(server)
        try:
            for row in self.store.results.query_entities(" and ".join(parts), results_per_page=1000):
                if flt.matches(row) and _in_subscription(row, flt.subscription):
                    yield row
        except ResourceNotFoundError:
            return


def _in_subscription(row: Mapping[str, Any], subscription: str) -> bool:
    """Exactly ``subscription``'s rows (its RowKey range also admits a longer id with the same start)."""
    return not subscription or layout.in_subscription(str(row.get("RowKey") or ""), subscription)
