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
from datetime import datetime, timedelta
from typing import Any

from azure.core import MatchConditions
from azure.core.credentials import TokenCredential
from azure.core.exceptions import (
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.data.tables import TableClient, TableServiceClient, UpdateMode

from . import fastpaths
from .config import Settings
from .errors import RunInProgressError, StoreError
from .fastpaths import odata_entity as odata_entity  # re-exported: the fast $batch writer's serialiser
from .http import client_kwargs, table_transport
from .keys import legacy_key, odata_quote, resource_key
from .layout import partition_batches, run_range, state_filters
from .models import valid_text
from .names import fold
from .schema import RUNS_PARTITION, STATE_MODEL_FIELDS, SUBSCRIPTIONS_PARTITION
from .when import as_utc

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

    def close(self) -> None:
        self.service.close()

    def ensure_tables(self) -> None:
        """Create missing tables (the Bicep creates them too; locally nothing else does)."""
        for table in (self.results, self.latest, self.runs, self.exemptions):
            with contextlib.suppress(ResourceExistsError):
                self.service.create_table(table.table_name)

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

    def runs_list(self) -> list[Any]:
        """All run records, oldest first (one per night: small)."""
        rows = list(self.partition(self.runs, RUNS_PARTITION))
        return sorted(rows, key=lambda e: str(e["RowKey"]))

    def subscription_state(
        self, subscription_id: str, present: Container[str] = (), filters: Iterable[str] | None = None
    ) -> tuple[dict[str, dict[str, Any]], list[tuple[str, str, str]]]:
        """A subscription's last-known state by resource key, wherever an earlier run's layout put it,
        and the extra copies as ``(PartitionKey, RowKey, key)`` (a row moved to another partition
        whose old copy remains, or a row an older version keyed by ``lower()``).

        Rows of resources in ``present`` (listed tonight), and rows already gone, keep only what
        the state model reads (:data:`STATE_MODEL_FIELDS`; the ``RowKey`` only when it is not the
        key), one read-only dict shared by every row with the same values; the others keep every
        property, since a resource that is gone is rewritten from its last row. Read as plain JSON: on a nightly run this is a row per
        resource, and the SDK's entity conversion would double its memory and CPU.
        When a resource has two copies (a crash between moving it and deleting the old one), the
        one written by the later run wins. ``filters`` narrows the read (see
        :func:`~shared.layout.narrowed_state_filters`); by default it is the whole subscription's.
        A row stored under the key an older version made with ``lower()`` (an id with non-ASCII
        letters, see :mod:`shared.names`) is found by its ``ResourceId`` and adopted: it counts as a
        copy of the resource's key (its own ``RowKey`` stays in the row, so it is moved and deleted
        like any other copy), with its status, streak and owed alert.
        """
        state: dict[str, dict[str, Any]] = {}
        extra: list[tuple[str, str, str]] = []
        shared: dict[tuple[Any, ...], dict[str, Any]] = {}
        for flt in state_filters(subscription_id) if filters is None else filters:
            for raw in fastpaths.query_json(self.latest, flt):
                key = _current_key(raw)
                raw.pop("Timestamp", None)  # a system property: never written back
                # A gone resource's row is rewritten from its last row; the others need the model's fields.
                row = _state_model_row(raw, key, shared) if key in present or raw.get("Gone") else raw
                other = state.get(key)
                if other is None:
                    state[key] = row
                    continue
                keep, drop = (
                    (row, other)
                    if str(row.get("LastRunId") or "") > str(other.get("LastRunId") or "")
                    else (other, row)
                )
                state[key] = keep
                extra.append((str(drop["PartitionKey"]), str(drop.get("RowKey") or key), key))
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

    def delete_run_results(self, run_id: str) -> int:
        """Delete every result row of one run (before a resumed run writes them again)."""
        low, high = run_range(run_id)
        return self._delete_results(f"PartitionKey ge {odata_quote(low)} and PartitionKey lt {odata_quote(high)}")

    def delete_results_before(self, cutoff_run_prefix: str) -> int:
        """Delete result rows whose PartitionKey (RunId first) sorts before the cutoff."""
        return self._delete_results(f"PartitionKey lt {odata_quote(cutoff_run_prefix)}")

    def _delete_results(self, flt: str) -> int:
        rows = self.results.query_entities(flt, select=["PartitionKey", "RowKey"])
        deleted, _ = self.delete_keys(self.results, ((str(r["PartitionKey"]), str(r["RowKey"])) for r in rows))
        return deleted

    # -- lease ----------------------------------------------------------------------------
    def acquire_lease(self, owner: str, seconds: int, now: datetime, kind: str = "nightly") -> Any:
        """Take the run lease, or raise :class:`RunInProgressError` while another holds it.

        Optimistic concurrency (ETag) makes two racing runs see exactly one winner. The lease
        entity also remembers the run it protects, so a run that died can be resumed.
        """
        current = self.get(self.runs, LEASE_PARTITION, LEASE_ROW)
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
        entity.update(Owner=owner, ExpiresAt=now + timedelta(seconds=seconds), HolderKind=kind)
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
        return self.get(self.runs, LEASE_PARTITION, LEASE_ROW) or entity

    def update_lease(self, lease: Any, **changes: Any) -> Any:
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
        fresh = self.get(self.runs, LEASE_PARTITION, LEASE_ROW)
        if fresh is None:
            raise RunInProgressError("the audit lease disappeared")
        return fresh


#: The state model's fields but the key (a row's ``RowKey`` is its resource's key but for rows an
#: older version keyed differently, see :func:`_current_key`).
_MODEL_FIELDS = tuple(f for f in STATE_MODEL_FIELDS if f != "RowKey")


def _state_model_row(raw: Mapping[str, Any], key: str, shared: dict[tuple[Any, ...], dict[str, Any]]) -> dict[str, Any]:
    """The fields of a state row the state model reads, as one dict shared by every row with the
    same values (read-only: nothing writes to a prior-state row).

    A nightly run holds one such row per resource of a subscription until its state is stored
    (tens of thousands in a large one); apart from the key (the state dict's), they hold few
    distinct values: a status, the runs that wrote them, a streak's start, the partition. So most
    rows are the same row, kept once. A row stored under another key keeps its ``RowKey`` (its own)."""
    values = tuple(raw.get(name) for name in _MODEL_FIELDS)
    if str(raw["RowKey"]) != key:
        own: dict[str, Any] = {name: value for name, value in zip(_MODEL_FIELDS, values, strict=True) if name in raw}
        own["RowKey"] = str(raw["RowKey"])
        return own
    row = shared.get(values)
    if row is None:
        row = {
            name: sys.intern(value) if type(value) is str else value
            for name, value in zip(_MODEL_FIELDS, values, strict=True)
            if name in raw
        }
        shared[values] = row
    return row


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
