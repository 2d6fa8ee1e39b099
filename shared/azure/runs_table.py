"""The runs table: each run's record, the baseline marker, the registry of subscriptions read, a
run's result rows, and the lease entity every run holds (judged by the table service's clock)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping
from datetime import timedelta
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import (
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.data.tables import UpdateMode

from ..core.clock import ServiceTime
from ..core.errors import RunInProgressError
from ..core.keys import odata_quote
from ..core.layout import (
    SUBSCRIPTION_KEY_PREFIX,
    in_subscription,
    run_range,
    subscription_row_range,
)
from ..core.names import fold
from ..core.schema import (
    BASELINE_ROW,
    RUNS_PARTITION,
    SUBSCRIPTIONS_PARTITION,
    WATERMARK_PARTITION,
)
from ..core.when import as_utc
from .fastpaths import odata_entity as odata_entity  # re-exported: the fast $batch writer's serialiser
from .tables import Tables

log = logging.getLogger("shared.store")


LEASE_PARTITION = "lease"


LEASE_ROW = "audit"


def fence_of(row: Mapping[str, Any] | None) -> int:
    """The ``Fence`` a lease or state row carries (0 when it has none: written by an older version)."""
    value = row.get("Fence") if row else None
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


class RunsTable(Tables):
    """What the ledger and the lease read and write in the runs table (and a run's result rows)."""

    def baseline(self) -> Any | None:
        """The baseline marker (``RunId``, ``StartedAt``): written when a nightly run first advanced
        the state and ended (complete or partial). Until then nothing may page: the next nightly run
        is a baseline too, and the change poll leaves every change to it. A table an older version
        wrote has no marker: a nightly run record that advanced the state stands for it (and the
        marker is written from it, once)."""
        marker = self.get(self.runs, WATERMARK_PARTITION, BASELINE_ROW)
        if marker is not None or not self.has_any(self.latest):
            return marker
        done = [r for r in self.runs_list() if r.get("Kind", "nightly") == "nightly" and r.get("StateAdvanced")]
        if not done:
            return None
        self.mark_baseline(str(done[0]["RunId"]), done[0].get("StartedAt"))
        return self.get(self.runs, WATERMARK_PARTITION, BASELINE_ROW)

    def mark_baseline(self, run_id: str, started_at: Any) -> None:
        """Write the baseline marker, unless there is one."""
        marker = {"PartitionKey": WATERMARK_PARTITION, "RowKey": BASELINE_ROW, "RunId": run_id, "StartedAt": started_at}
        with contextlib.suppress(ResourceExistsError):
            self.guard()
            self.runs.create_entity(marker)

    def runs_list(self) -> list[Any]:
        """All run records, oldest first (one per night: small)."""
        rows = list(self.partition(self.runs, RUNS_PARTITION))
        return sorted(rows, key=lambda e: str(e["RowKey"]))

    def known_subscriptions(self) -> dict[str, dict[str, Any]]:
        """Subscriptions an earlier run read, by lower-cased id (one small row each)."""
        return {str(r["RowKey"]): dict(r) for r in self.partition(self.runs, SUBSCRIPTIONS_PARTITION)}

    def forget_subscription(self, subscription_id: str) -> bool:
        """Stop reporting a vanished subscription (the security team retired it); True if it was known."""
        key = fold(subscription_id.strip())
        if self.get(self.runs, SUBSCRIPTIONS_PARTITION, key) is None:
            return False
        self.runs.delete_entity(SUBSCRIPTIONS_PARTITION, key)
        return True

    def delete_run_results(self, run_id: str, *, outside_subscriptions: bool = False) -> int:
        """Delete every result row of one run, or only those of no subscription (the tenant's)."""
        low, high = run_range(run_id)
        flt = f"PartitionKey ge {odata_quote(low)} and PartitionKey lt {odata_quote(high)}"
        if outside_subscriptions:
            prefix = SUBSCRIPTION_KEY_PREFIX
            flt += f" and (RowKey lt {odata_quote(prefix)} or RowKey ge {odata_quote(prefix[:-1] + '}')})"
        return self._delete_results(flt)

    def run_rows(self, run_id: str, subscription_id: str) -> Iterator[dict[str, Any]]:
        """One subscription's result rows in one run: what a resumed run's earlier attempt stored
        (read page by page, as they come)."""
        low, high = run_range(run_id)
        first, last = subscription_row_range(subscription_id)
        flt = (
            f"PartitionKey ge {odata_quote(low)} and PartitionKey lt {odata_quote(high)} "
            f"and RowKey ge {odata_quote(first)} and RowKey lt {odata_quote(last)}"
        )
        rows = self.results.query_entities(flt)
        return (dict(r) for r in rows if in_subscription(str(r["RowKey"]), subscription_id))

    def delete_results_before(self, cutoff_run_prefix: str) -> int:
        """Delete result rows whose PartitionKey (RunId first) sorts before the cutoff."""
        return self._delete_results(f"PartitionKey lt {odata_quote(cutoff_run_prefix)}")

    def _delete_results(self, flt: str) -> int:
        rows = self.results.query_entities(flt, select=["PartitionKey", "RowKey"])
        deleted, _ = self.delete_keys(self.results, ((str(r["PartitionKey"]), str(r["RowKey"])) for r in rows))
        return deleted

    def read_lease(self, service: ServiceTime) -> Any | None:
        """The lease entity (``None`` before the first run), recording the ``Date`` of the answer in
        ``service``: the lease is judged by the table service's clock, never a host's."""
        sent = service.clock.monotonic()
        dates: list[str | None] = []

        def date_of(response: Any) -> None:
            dates.append(response.http_response.headers.get("Date"))

        try:
            entity = self.runs.get_entity(LEASE_PARTITION, LEASE_ROW, raw_response_hook=date_of)
        except ResourceNotFoundError:
            entity = None
        service.observe(dates[-1] if dates else None, sent)
        return entity

    def acquire_lease(self, owner: str, seconds: int, kind: str, service: ServiceTime) -> Any:
        """Take the run lease, or raise :class:`RunInProgressError` while another holds it.

        Whether the holder's lease has expired is judged by the table service's clock (the
        ``Date`` of the read), against an expiry the holder also wrote in the service's time: a
        host whose clock runs ahead cannot take a lease early. Optimistic concurrency (ETag)
        makes two racing runs see exactly one winner, and every acquisition increments ``Fence``,
        the number each state row this run writes carries (the later writer's copy wins, see
        :meth:`subscription_state`). The lease entity also remembers the run it protects, so a
        run that died can be resumed.
        """
        current = self.read_lease(service)
        now = service.now()
        entity = dict(current) if current else {"PartitionKey": LEASE_PARTITION, "RowKey": LEASE_ROW}
        if current:
            expires = as_utc(current.get("ExpiresAt"))
            if current.get("Owner") and current.get("Owner") != owner and expires and expires > now:
                holder = str(current.get("HolderKind") or "nightly")
                raise RunInProgressError(
                    f"a {holder} run ({current.get('RunId') or current.get('Owner')}) holds the audit lease until "
                    f"{expires.isoformat()}; not starting a second, overlapping run",
                    holder,
                )
        fence = fence_of(current) + 1
        entity.update(Owner=owner, ExpiresAt=now + timedelta(seconds=seconds), HolderKind=kind, Fence=fence)
        try:
            if current:
                self.runs.update_entity(
                    entity,
                    mode=UpdateMode.REPLACE,
                    etag=current.metadata["etag"],
                    match_condition=MatchConditions.IfNotModified,
                )
            else:
                self.runs.create_entity(entity)
        except (ResourceModifiedError, ResourceExistsError) as exc:
            raise RunInProgressError("another run took the audit lease at the same moment") from exc
        except HttpResponseError as exc:
            if exc.status_code in (409, 412):
                raise RunInProgressError("another run took the audit lease at the same moment") from exc
            raise
        return self.read_lease(service) or entity

    def update_lease(self, lease: Any, service: ServiceTime, **changes: Any) -> Any:
        """Renew or annotate the lease; raises :class:`RunInProgressError` if it was lost."""
        entity = {k: v for k, v in lease.items()}
        entity.update(changes)
        try:
            self.runs.update_entity(
                entity,
                mode=UpdateMode.REPLACE,
                etag=lease.metadata["etag"],
                match_condition=MatchConditions.IfNotModified,
            )
        except (ResourceModifiedError, ResourceNotFoundError) as exc:
            raise RunInProgressError("the audit lease was taken over by another run") from exc
        except HttpResponseError as exc:
            if exc.status_code in (404, 409, 412):
                raise RunInProgressError("the audit lease was taken over by another run") from exc
            raise
        fresh = self.read_lease(service)
        if fresh is None:
            raise RunInProgressError("the audit lease disappeared")
        return fresh
