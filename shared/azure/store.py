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

import logging
import sys
from collections.abc import Callable, Container, Iterable, Iterator, Mapping
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

from ..core.config import Settings
from ..core.errors import LeaseLost, StoreError, WriteConflict
from ..core.keys import legacy_key, resource_key
from ..core.layout import (
    partition_batches,
    state_filters,
)
from ..core.models import valid_text
from ..core.schema import (
    STATE_MODEL_FIELDS,
    StateCopy,
)
from . import fastpaths
from .fastpaths import ETAG
from .fastpaths import odata_entity as odata_entity  # re-exported: the fast $batch writer's serialiser
from .http import client_kwargs, pooled_session, table_connections
from .runs_table import LEASE_PARTITION as LEASE_PARTITION
from .runs_table import LEASE_ROW as LEASE_ROW
from .runs_table import RunsTable
from .runs_table import fence_of as fence_of
from .tables import ENTITY_BUDGET_BYTES as ENTITY_BUDGET_BYTES
from .tables import MAX_ENTITY_BYTES as MAX_ENTITY_BYTES
from .tables import MAX_STRING_UNITS as MAX_STRING_UNITS
from .tables import Fallback, _no_fence, _no_guard
from .tables import clean_entity as clean_entity
from .tables import truncate as truncate
from .tables import utf16_units as utf16_units

log = logging.getLogger(__name__)


class TableStore(RunsTable):
    """Thin wrapper over the four tables; every method is safe to repeat."""

    def __init__(self, settings: Settings, credential: TokenCredential | None) -> None:
        # The Tables clients' pool, sized by table_connections (the client owns the session).
        session = pooled_session(table_connections(settings.concurrency))
        kwargs = client_kwargs(settings.retry_total, settings.http_timeout, session, session_owner=True)
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
        return merge_state(self.state_pairs(subscription_id, filters), present)

    def state_pairs(self, subscription_id: str, filters: Iterable[str] | None = None) -> Iterator[tuple[str, Any]]:
        """A subscription's state rows as they come, each with the key of the resource it belongs to
        (every copy of one, see :meth:`subscription_state`), read page by page: a caller that
        keeps them elsewhere (``run/spill.py``) never holds them all."""
        for flt in state_filters(subscription_id) if filters is None else filters:
            for raw in fastpaths.query_json(self.latest, flt, etags=True):
                raw.pop("Timestamp", None)  # a system property: never written back
                yield _current_key(raw), raw


def slim_state_row(key: str, raw: dict[str, Any], present: Container[str]) -> dict[str, Any]:
    """What a run keeps of a state row it read: the state model's fields of a resource listed tonight
    (in ``present``) or already gone; the whole row of one not listed (it is retired from it)."""
    # A gone resource's row is rewritten from its last row; the others need the model's fields.
    return _state_model_row(raw, key) if key in present or raw.get("Gone") else raw


def merge_state(
    pairs: Iterable[tuple[str, Any]], present: Container[str] = (), *, slimmed: bool = False
) -> tuple[dict[str, dict[str, Any]], list[StateCopy]]:
    """State rows by key, one per resource (the one written later wins), and the other copies; see
    :meth:`TableStore.subscription_state`. ``slimmed``: the rows went through :func:`slim_state_row`."""
    state: dict[str, dict[str, Any]] = {}
    extra: list[StateCopy] = []
    for key, raw in pairs:
        row = raw if slimmed else slim_state_row(key, raw, present)
        other = state.get(key)
        if other is None:
            state[key] = row
            continue
        keep, drop = (row, other) if _written_later(row, other) else (other, row)
        state[key] = keep
        extra.append((str(drop["PartitionKey"]), str(drop["RowKey"]), key, str(drop.get(ETAG) or "")))
    return state, extra


#: What tells a row this run wrote from one another run wrote (see :meth:`TableStore.write_state`).
_OWN_WRITE_FIELDS = ("Fence", "LastRunId", "Status", "AlertPending", "AlertSentAt", "Gone")


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
