"""Results store adapter: Azure Table Storage (or Azurite) for results, state, runs and the lease.

Schema (documented in docs/design.md; the partition layout and its reasons are in ``layout.py``):

* results ``ClientCertAudit``: PartitionKey ``<RunId>_<NNNNN>`` (≤ 1,000 rows each), RowKey the
  encoded, lower-cased resource id. A run is a PartitionKey range, one subscription in a run a
  RowKey range inside it.
* last-known state ``ClientCertAuditLatest``: PartitionKey a shared bucket or the subscription's own
  shard, RowKey as above.
* runs ``ClientCertAuditRuns``: PartitionKey ``run``, RowKey RunId; plus the lease entity.

Writes are upserts with stable keys, so repeating any step after a crash is harmless.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Callable, Container, Iterable, Iterator, Mapping
from datetime import timedelta
from typing import Any

from azure.core import MatchConditions
from azure.core.credentials import TokenCredential
from azure.core.exceptions import (
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.data.tables import TableClient, TableServiceClient, TableTransactionError, UpdateMode

from ..core.clock import ServiceTime
from ..core.config import Settings
from ..core.errors import LeaseLost, RunInProgressError, StoreError, WriteConflict
from ..core.keys import legacy_key, odata_quote, resource_key
from ..core.layout import (
    SUBSCRIPTION_KEY_PREFIX,
    in_subscription,
    partition_batches,
    run_range,
    state_filters,
    subscription_row_range,
)
from ..core.models import valid_text
from ..core.names import fold
from ..core.schema import (
    BASELINE_ROW,
    RUNS_PARTITION,
    STATE_MODEL_FIELDS,
    SUBSCRIPTIONS_PARTITION,
    WATERMARK_PARTITION,
    StateCopy,
)
from ..core.when import as_utc
from . import fastpaths
from .fastpaths import ETAG
from .fastpaths import odata_entity as odata_entity  # re-exported: the fast $batch writer's serialiser
from .http import client_kwargs, table_transport

log = logging.getLogger(__name__)

# Table Storage's limits: a string property holds at most 64 KiB as UTF-16 (32,768 code units; a
# character outside the BMP takes two), one entity at most 1 MiB. Leave room for names and keys.
MAX_STRING_UNITS = 32_000
MAX_ENTITY_BYTES = 1024 * 1024
ENTITY_BUDGET_BYTES = MAX_ENTITY_BYTES - 64 * 1024
LEASE_PARTITION = "lease"
LEASE_ROW = "audit"


def _no_guard() -> None:
    """Writes outside a run (the CLI's exemptions, tests) need no lease."""


def _no_fence(why: str) -> None:
    """Outside a run there is no lease to stop."""


def utf16_units(value: str) -> int:
    """Length as Table Storage counts it: UTF-16 code units (two for a character outside the BMP)."""
    if value.isascii():
        return len(value)
    return len(value) + sum(1 for ch in value if ord(ch) > 0xFFFF)


def truncate(value: str, limit: int = MAX_STRING_UNITS) -> str:
    """Cut an over-long string visibly (by UTF-16 code units, never inside a surrogate pair), so
    the row is written and the cut is obvious."""
    if len(value) * 2 <= limit or utf16_units(value) <= limit:
        return value
    marker_room = 48
    # surrogatepass: a lone surrogate (which no codec takes as text) is cut like any other unit, and a
    # pair cut in half loses its dangling high half; the value is stored or refused as it is.
    kept = value.encode("utf-16-le", "surrogatepass")[: (limit - marker_room) * 2].decode("utf-16-le", "surrogatepass")
    if kept and "\ud800" <= kept[-1] <= "\udbff":
        kept = kept[:-1]
    return f"{kept}…[truncated {len(value) - len(kept)} chars]"


def _entity_bytes(entity: Mapping[str, Any]) -> int:
    """An upper estimate of an entity's size as Table Storage measures it."""
    size = 0
    for key, value in entity.items():
        size += 2 * len(key) + 8
        if isinstance(value, str):
            size += 2 * utf16_units(value)
        elif isinstance(value, bytes):
            size += len(value)
    return size


def clean_entity(entity: Mapping[str, Any]) -> dict[str, Any]:
    """Drop ``None`` (Tables has no null) and cut strings that would be rejected: each property to
    64 KiB of UTF-16, then the longest ones until the entity fits in 1 MiB."""
    out: dict[str, Any] = {}
    for key, value in entity.items():
        if value is None:
            continue
        out[key] = truncate(value) if isinstance(value, str) else value
    while _entity_bytes(out) > ENTITY_BUDGET_BYTES:
        longest = max(
            (k for k, v in out.items() if isinstance(v, str) and k not in ("PartitionKey", "RowKey")),
            key=lambda k: utf16_units(out[k]),
        )
        out[longest] = truncate(out[longest], max(1_000, utf16_units(out[longest]) // 2))
    return out


#: What to store instead of a row the service refuses: ``(row, refusal) -> replacement`` or ``None``.
Fallback = Callable[[dict[str, Any], str], dict[str, Any] | None]


class TableStore:
    """Thin wrapper over the four tables; every method is safe to repeat."""

    def __init__(self, settings: Settings, credential: TokenCredential | None) -> None:
        kwargs = {
            **client_kwargs(settings.retry_total, settings.http_timeout),
            "transport": table_transport(settings.concurrency, settings.http_timeout),
        }
        if settings.table_connection_string:
            self.service = TableServiceClient.from_connection_string(settings.table_connection_string, **kwargs)
        else:
            if credential is None or settings.table_service_uri is None:
                raise ValueError("identity-based table access needs AUDIT_TABLE_SERVICE_URI and a credential")
            self.service = TableServiceClient(endpoint=settings.table_service_uri, credential=credential, **kwargs)
        self.settings = settings
        self.results = self.service.get_table_client(settings.results_table)
        self.latest = self.service.get_table_client(settings.latest_table)
        self.runs = self.service.get_table_client(settings.runs_table)
        self.exemptions = self.service.get_table_client(settings.exemptions_table)
        #: Called before every write; the run sets it to its lease guard (raises once the lease is lost).
        self.guard: Callable[[], None] = _no_guard
        #: Per table name: what to store in place of a row the service refuses (see write_batch).
        self.fallbacks: dict[str, Fallback] = {}
        #: Told why when a state write finds a row another run wrote (the run sets it to its lease's).
        self.fence_lost: Callable[[str], None] = _no_fence

    def close(self) -> None:
        self.service.close()

    def ensure_tables(self) -> None:
        """Create missing tables (the Bicep creates them too; locally nothing else does).

        In Azure the app's roles are scoped to the tables themselves (read only on the exemptions
        table), which does not allow creating a table: a 403 here means "not yours to create", not
        "unusable". The template created the tables; one that is really missing or unreadable fails
        the first read or write, loudly."""
        for table in (self.results, self.latest, self.runs, self.exemptions):
            try:
                self.service.create_table(table.table_name)
            except ResourceExistsError:
                pass
            except HttpResponseError as exc:
                if exc.status_code != 403:
                    raise
                log.debug("Not allowed to create table %s (403); the deployment creates it", table.table_name)

    # -- batched writes -------------------------------------------------------------------
    def upsert_many(self, table: TableClient, entities: Iterable[Mapping[str, Any]]) -> int:
        """Upsert entities in transactions of ≤100 per partition; returns transactions sent."""
        self.guard()
        rows = (dict(entity) for entity in entities)
        return sum(self.write_batch(table, batch) for batch in partition_batches(rows, _partition_key))

    def write_batch(self, table: TableClient, entities: list[dict[str, Any]]) -> int:
        """Upsert ≤100 entities of one partition as one transaction; returns transactions used.

        A transaction that fails for any reason (rejected by the service, or refused on this side,
        say a value no encoder takes) is split: its entities are written one by one, so one bad row
        cannot take its 99 neighbours down with it (a store that is down fails the first of them
        too, and that error is raised). A row still refused is replaced by what the table's
        :attr:`fallbacks` entry makes of it (an ERROR row that says why, for results); without one,
        or when the replacement is refused too, :class:`StoreError` is raised.
        """
        self.guard()
        fallback = self.fallbacks.get(table.table_name)
        batch = [clean_entity(e) for e in entities]
        if len(batch) == 1:
            self._upsert_or_fallback(table, batch[0], fallback)
            return 1
        try:
            fastpaths.upsert_batch(table, batch)
            return 1
        except Exception as exc:  # noqa: BLE001 - any failure: each row is tried on its own below
            log.warning(
                "Transaction of %d rows failed (%s); writing them one by one",
                len(batch),
                getattr(exc, "error_code", None) or getattr(exc, "status_code", None) or type(exc).__name__,
            )
        for entity in batch:
            self.guard()
            self._upsert_or_fallback(table, entity, fallback)
        return 1 + len(batch)

    def _upsert_or_fallback(self, table: TableClient, entity: dict[str, Any], fallback: Fallback | None) -> None:
        try:
            self._upsert_one(table, entity)
        except StoreError as exc:
            replacement = fallback(entity, str(exc)) if fallback else None
            if replacement is None:
                raise
            log.error("%s; stored in its place: %s", exc, replacement.get("Reason", "a reduced row"))
            self._upsert_one(table, clean_entity(_valid_entity(replacement)))

    def _upsert_one(self, table: TableClient, entity: dict[str, Any]) -> None:
        try:
            table.upsert_entity(entity, mode=UpdateMode.REPLACE)
        except HttpResponseError as exc:
            raise StoreError(
                f"{table.table_name} rejected row {entity.get('PartitionKey')}/{entity.get('RowKey')}: "
                f"{getattr(exc, 'error_code', None) or exc.status_code}"
            ) from exc
        except (ValueError, TypeError) as exc:  # refused on this side: a value the SDK cannot send
            raise StoreError(
                f"{table.table_name} could not send row {entity.get('PartitionKey')}/{entity.get('RowKey')}: "
                f"{type(exc).__name__}"
            ) from exc

    # -- the state: every write fenced by the row's ETag ---------------------------------
    def write_state(self, entities: list[dict[str, Any]]) -> tuple[int, dict[tuple[str, str], str]]:
        """≤100 state rows of one partition as one conditional transaction; returns (transactions,
        the new ETag of each row by ``(PartitionKey, RowKey)``).

        Each row carries the ETag it must still have as :data:`~shared.azure.fastpaths.ETAG` (``None``: it
        must not exist yet): the row this run read, or the one it wrote itself. A row someone else
        wrote since fails the whole transaction, so no run overwrites or re-marks a row behind
        another's back, whatever its lease says: this is the fence that holds *with* the write.
        A condition that fails because this very transaction was applied and its answer lost (a
        retry) is recognised by reading the rows back; any other is another writer, and then this
        run has lost its fence: :attr:`fence_lost` is told (the lease stops every later write) and
        :class:`~shared.core.errors.LeaseLost` raised.
        """
        self.guard()
        etags = [entity.get(ETAG) for entity in entities]
        batch = [clean_entity({k: v for k, v in entity.items() if k != ETAG}) for entity in entities]
        try:
            written = fastpaths.conditional_batch(self.latest, batch, etags)
        except WriteConflict as exc:
            written = self._own_writes(batch, exc)
        return 1, {
            (str(row["PartitionKey"]), str(row["RowKey"])): etag for row, etag in zip(batch, written, strict=True)
        }

    def _own_writes(self, batch: list[dict[str, Any]], conflict: WriteConflict) -> list[str]:
        """The ETags of ``batch`` if the store holds exactly what it says (our retried transaction
        was applied); else this run has lost its fence."""
        etags: list[str] = []
        for row in batch:
            stored = self.get(self.latest, str(row["PartitionKey"]), str(row["RowKey"]))
            if stored is None or any(stored.get(name) != row.get(name) for name in _OWN_WRITE_FIELDS):
                why = (
                    f"state row {row['PartitionKey']}/{row['RowKey']} was written by another run since this run "
                    f"read it ({conflict})"
                )
                self.fence_lost(why)
                raise LeaseLost(why) from conflict
            etags.append(str(stored.metadata.get("etag") or ""))
        return etags

    def delete_state_copies(self, copies: Iterable[tuple[str, str, str]]) -> tuple[int, int]:
        """Delete old copies of state rows ``(PartitionKey, RowKey, ETag)``, each only while it is
        the copy that was read (a copy rewritten since is someone's current row: kept). Returns
        (rows deleted, transactions)."""
        deleted = sent = 0
        for batch in partition_batches(copies, lambda copy: copy[0]):
            self.guard()
            operations: list[Any] = [
                (
                    "delete",
                    {"PartitionKey": pk, "RowKey": rk},
                    {"etag": etag, "match_condition": MatchConditions.IfNotModified},
                )
                for pk, rk, etag in batch
            ]
            try:
                self.latest.submit_transaction(operations)
                deleted, sent = deleted + len(batch), sent + 1
                continue
            except TableTransactionError:
                pass  # one of them changed or is gone already: each on its own
            for pk, rk, etag in batch:
                self.guard()
                sent += 1
                try:
                    self.latest.delete_entity(pk, rk, etag=etag, match_condition=MatchConditions.IfNotModified)
                    deleted += 1
                except (ResourceModifiedError, ResourceNotFoundError):
                    log.info("State row %s/%s changed or went since it was read: not deleted", pk, rk)
        return deleted, sent

    def delete_keys(self, table: TableClient, keys: Iterable[tuple[str, str]]) -> tuple[int, int]:
        """Delete rows by key, batched per partition; returns (rows deleted, transactions)."""
        deleted = sent = 0
        for batch in partition_batches(keys, lambda key: key[0]):
            self.guard()
            table.submit_transaction([("delete", {"PartitionKey": pk, "RowKey": rk}) for pk, rk in batch])
            deleted, sent = deleted + len(batch), sent + 1
        return deleted, sent

    # -- reads ----------------------------------------------------------------------------
    def partition(self, table: TableClient, partition_key: str, select: list[str] | None = None) -> Iterator[Any]:
        return iter(table.query_entities(f"PartitionKey eq {odata_quote(partition_key)}", select=select))

    def get(self, table: TableClient, partition_key: str, row_key: str) -> Any | None:
        try:
            return table.get_entity(partition_key, row_key)
        except ResourceNotFoundError:
            return None

    def has_any(self, table: TableClient) -> bool:
        return next(iter(table.list_entities(results_per_page=1, select=["PartitionKey"])), None) is not None

    def write_if_unchanged(self, table: TableClient, entity: Mapping[str, Any], read: Any | None) -> bool:
        """Write ``entity`` only while the row is the one ``read`` (``None``: while there is none);
        ``False`` when another writer changed it meanwhile."""
        self.guard()
        row = clean_entity(entity)
        try:
            if read is None:
                table.create_entity(row)
            else:
                table.update_entity(
                    row,
                    mode=UpdateMode.REPLACE,
                    etag=read.metadata["etag"],
                    match_condition=MatchConditions.IfNotModified,
                )
        except (ResourceExistsError, ResourceModifiedError):
            return False
        except HttpResponseError as exc:
            if exc.status_code in (409, 412):
                return False
            raise
        return True

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

    def subscription_state(
        self, subscription_id: str, present: Container[str] = (), filters: Iterable[str] | None = None
    ) -> tuple[dict[str, dict[str, Any]], list[StateCopy]]:
        """A subscription's last-known state by resource key, wherever an earlier run's layout put it,
        and the extra copies as ``(PartitionKey, RowKey, key, ETag)`` (a row moved to another
        partition whose old copy remains, or a row an older version keyed by ``lower()``). Every
        row carries its ETag (:data:`~shared.azure.fastpaths.ETAG`): the state is written back only while
        it is still the row that was read (:meth:`write_state`).

        Rows of resources in ``present`` (listed tonight), and rows already gone, keep only what
        the state model reads (:data:`STATE_MODEL_FIELDS`, their repeated values shared); the
        others keep every property, since a resource that is gone is rewritten from its last row.
        Read as plain JSON: on a nightly run this is a row per
        resource, and the SDK's entity conversion would double its memory and CPU.
        When a resource has two copies (a crash between moving it and deleting the old one), the
        one written later wins: by the writers' lease ``Fence``, i.e. in write order. ``filters`` narrows the read (see
        :func:`~shared.core.layout.narrowed_state_filters`); by default it is the whole subscription's.
        A row stored under the key an older version made with ``lower()`` (an id with non-ASCII
        letters, see :mod:`shared.core.names`) is found by its ``ResourceId`` and adopted: it counts as a
        copy of the resource's key (its own ``RowKey`` stays in the row, so it is moved and deleted
        like any other copy), with its status, streak and owed alert.
        """
        state: dict[str, dict[str, Any]] = {}
        extra: list[StateCopy] = []
        for flt in state_filters(subscription_id) if filters is None else filters:
            for raw in fastpaths.query_json(self.latest, flt, etags=True):
                key = _current_key(raw)
                raw.pop("Timestamp", None)  # a system property: never written back
                # A gone resource's row is rewritten from its last row; the others need the model's fields.
                row = _state_model_row(raw, key) if key in present or raw.get("Gone") else raw
                other = state.get(key)
                if other is None:
                    state[key] = row
                    continue
                keep, drop = (row, other) if _written_later(row, other) else (other, row)
                state[key] = keep
                extra.append((str(drop["PartitionKey"]), str(drop["RowKey"]), key, str(drop.get(ETAG) or "")))
        return state, extra

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

    def run_rows(self, run_id: str, subscription_id: str) -> list[Any]:
        """One subscription's result rows in one run (keys, ``Status``, ``NewFailure``): what a resumed
        run's earlier attempt stored."""
        low, high = run_range(run_id)
        first, last = subscription_row_range(subscription_id)
        flt = (
            f"PartitionKey ge {odata_quote(low)} and PartitionKey lt {odata_quote(high)} "
            f"and RowKey ge {odata_quote(first)} and RowKey lt {odata_quote(last)}"
        )
        rows = self.results.query_entities(flt, select=["PartitionKey", "RowKey", "Status", "NewFailure"])
        return [r for r in rows if in_subscription(str(r["RowKey"]), subscription_id)]

    def delete_results_before(self, cutoff_run_prefix: str) -> int:
        """Delete result rows whose PartitionKey (RunId first) sorts before the cutoff."""
        return self._delete_results(f"PartitionKey lt {odata_quote(cutoff_run_prefix)}")

    def _delete_results(self, flt: str) -> int:
        rows = self.results.query_entities(flt, select=["PartitionKey", "RowKey"])
        deleted, _ = self.delete_keys(self.results, ((str(r["PartitionKey"]), str(r["RowKey"])) for r in rows))
        return deleted

    # -- lease ----------------------------------------------------------------------------
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


#: What tells a row this run wrote from one another run wrote (see :meth:`TableStore.write_state`).
_OWN_WRITE_FIELDS = ("Fence", "LastRunId", "Status", "AlertPending", "AlertSentAt", "Gone")


def fence_of(row: Mapping[str, Any] | None) -> int:
    """The ``Fence`` a lease or state row carries (0 when it has none: written by an older version)."""
    value = row.get("Fence") if row else None
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


#: State fields whose values repeat across a subscription's rows (the partition, a status, the run
#: that wrote them, ...): kept once (:func:`sys.intern`), not once per row as JSON decoding makes them.
_SHARED_STATE_FIELDS = frozenset(STATE_MODEL_FIELDS) - {"RowKey"}


def _state_model_row(raw: Mapping[str, Any], key: str) -> dict[str, Any]:
    """The fields of a state row the state model reads, with repeated string values shared.

    A nightly run holds one such row per resource of a subscription until its state is stored
    (tens of thousands in a large one); apart from the key and the ETag, they hold few distinct
    values (a status, the runs that wrote them, a streak's start, the partition): kept once
    (:func:`sys.intern`), not once per row as JSON decoding makes them. The ``RowKey`` is the state
    dict's own key object when it is the key (every row but those an older version keyed by
    ``lower()``), and the rows one transaction wrote share their ETag."""
    row: dict[str, Any] = {}
    for name in STATE_MODEL_FIELDS:
        if name in raw:
            value = raw[name]
            if name == "RowKey":
                row[name] = key if value == key else value
            else:
                row[name] = sys.intern(value) if type(value) is str and name in _SHARED_STATE_FIELDS else value
    if ETAG in raw:
        etag = raw[ETAG]
        row[ETAG] = sys.intern(etag) if type(etag) is str else etag
    return row


def _written_later(row: Mapping[str, Any], other: Mapping[str, Any]) -> bool:
    """Whether ``row`` was written after ``other``: by write order (the writers' lease ``Fence``),
    not by RunId (a resumed run keeps its first attempt's RunId, which sorts before any run between
    the two attempts); rows of an older version (no ``Fence``) by RunId, as that version did."""
    return (fence_of(row), str(row.get("LastRunId") or "")) > (fence_of(other), str(other.get("LastRunId") or ""))


def _current_key(raw: Mapping[str, Any]) -> str:
    """The key a state row belongs to: its RowKey, or for a row of an id with non-ASCII letters
    stored by an older version (keyed by ``lower()``), the key of its ``ResourceId`` today."""
    stored = str(raw["RowKey"])
    resource_id = raw.get("ResourceId")
    if isinstance(resource_id, str) and not resource_id.isascii() and stored == legacy_key(resource_id):
        return resource_key(resource_id)
    return stored


def _valid_entity(entity: Mapping[str, Any]) -> dict[str, Any]:
    """A replacement row with every string made valid text: it must be storable whatever refused
    the row it stands in for."""
    return {key: valid_text(value) if isinstance(value, str) else value for key, value in entity.items()}


def _partition_key(entity: Mapping[str, Any]) -> str:
    return str(entity["PartitionKey"])
