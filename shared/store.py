"""Results store adapter: Azure Table Storage (or Azurite) for results, state, runs and the lease.

Schema (documented in the README; the partition layout and its reasons are in ``layout.py``):

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
import json
import logging
import math
import re
import sys
import uuid
from collections.abc import Callable, Container, Iterable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, cast
from urllib.parse import quote

from azure.core import MatchConditions
from azure.core.credentials import TokenCredential
from azure.core.exceptions import (
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.core.rest import HttpRequest
from azure.data.tables import TableClient, TableServiceClient, TableTransactionError, UpdateMode

from .config import Settings
from .http import client_kwargs
from .keys import odata_quote
from .layout import partition_batches, run_range, state_filters

log = logging.getLogger(__name__)

# Table Storage's limits: a string property holds at most 64 KiB as UTF-16 (32,768 code units; a
# character outside the BMP takes two), one entity at most 1 MiB. Leave room for names and keys.
MAX_STRING_UNITS = 32_000
MAX_ENTITY_BYTES = 1024 * 1024
ENTITY_BUDGET_BYTES = MAX_ENTITY_BYTES - 64 * 1024
RUNS_PARTITION = "run"
LEASE_PARTITION = "lease"
LEASE_ROW = "audit"


def _no_guard() -> None:
    """Writes outside a run (the CLI's exemptions, tests) need no lease."""


class StoreError(RuntimeError):
    """The results store rejected a write that the run cannot do without."""


class RunInProgressError(RuntimeError):
    """Another run holds the lease; running now would race it."""


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
    kept = value.encode("utf-16-le")[: (limit - marker_room) * 2].decode("utf-16-le", errors="ignore")
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
        kwargs = client_kwargs(settings.retry_total, settings.http_timeout)
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

        A rejected transaction is split: its entities are written one by one, so one bad row cannot
        take its 99 neighbours down with it. A row the service still refuses is replaced by what the
        table's :attr:`fallbacks` entry makes of it (an ERROR row that says why, for results);
        without one, or when the replacement is refused too, :class:`StoreError` is raised.
        """
        self.guard()
        fallback = self.fallbacks.get(table.table_name)
        batch = [clean_entity(e) for e in entities]
        if len(batch) == 1:
            self._upsert_or_fallback(table, batch[0], fallback)
            return 1
        try:
            bodies = [odata_entity(e) for e in batch]
            if all(b is not None for b in bodies):
                send_upsert_batch(table, batch, cast(list[str], bodies))
            else:  # a property type the fast path does not serialise: the SDK's own transaction
                table.submit_transaction([("upsert", e, {"mode": UpdateMode.REPLACE}) for e in batch])
            return 1
        except (TableTransactionError, HttpResponseError) as exc:
            log.warning(
                "Transaction of %d rows rejected (%s); writing them one by one",
                len(batch),
                getattr(exc, "error_code", None) or getattr(exc, "status_code", None),
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
            self._upsert_one(table, clean_entity(replacement))

    def _upsert_one(self, table: TableClient, entity: dict[str, Any]) -> None:
        try:
            table.upsert_entity(entity, mode=UpdateMode.REPLACE)
        except HttpResponseError as exc:
            raise StoreError(
                f"{table.table_name} rejected row {entity.get('PartitionKey')}/{entity.get('RowKey')}: "
                f"{getattr(exc, 'error_code', None) or exc.status_code}"
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
        self, subscription_id: str, present: Container[str] = ()
    ) -> tuple[dict[str, dict[str, Any]], list[tuple[str, str]]]:
        """A subscription's last-known state by RowKey, wherever an earlier run's layout put it,
        and the keys of extra copies (a row moved to another partition whose old copy remains).

        Rows of resources in ``present`` (listed tonight) keep only what the state model reads
        (:data:`STATE_MODEL_FIELDS`); the others keep every property, since a resource that is
        gone is rewritten from its last row. Read as plain JSON: on a nightly run this is a row per
        resource, and the SDK's entity conversion would double its memory and CPU.
        When a resource has two copies (a crash between moving it and deleting the old one), the
        one written by the later run wins.
        """
        state: dict[str, dict[str, Any]] = {}
        extra: list[tuple[str, str]] = []
        for flt in state_filters(subscription_id):
            for raw in query_json(self.latest, flt):
                key = str(raw["RowKey"])
                row = _state_model_row(raw) if key in present else raw
                row.pop("Timestamp", None)  # a system property: never written back
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
                extra.append((str(drop["PartitionKey"]), key))
        return state, extra

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
    def acquire_lease(self, owner: str, seconds: int, now: datetime) -> Any:
        """Take the run lease, or raise :class:`RunInProgressError` while another holds it.

        Optimistic concurrency (ETag) makes two racing runs see exactly one winner. The lease
        entity also remembers the run it protects, so a run that died can be resumed.
        """
        current = self.get(self.runs, LEASE_PARTITION, LEASE_ROW)
        entity = dict(current) if current else {"PartitionKey": LEASE_PARTITION, "RowKey": LEASE_ROW}
        if current:
            expires = _as_datetime(current.get("ExpiresAt"))
            if current.get("Owner") and current.get("Owner") != owner and expires and expires > now:
                raise RunInProgressError(
                    f"run {current.get('RunId') or current.get('Owner')} holds the audit lease until "
                    f"{expires.isoformat()}; not starting a second, overlapping run"
                )
        entity.update(Owner=owner, ExpiresAt=now + timedelta(seconds=seconds))
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


# What the state model (shared/state.py) reads from a resource's last-known state row.
STATE_MODEL_FIELDS = (
    "PartitionKey",
    "RowKey",
    "Status",
    "FirstFailedAt",
    "LastRunId",
    "PreviousStatus",
    "PreviousFirstFailedAt",
    "PreviousGone",
    "Gone",
    "AlertPending",
    "AlertRunId",
    "AlertSentAt",
    "AlertSentByRunId",
)


#: State fields whose values repeat across a subscription's rows (the partition, a status, the run
#: that wrote them, ...): kept once (:func:`sys.intern`), not once per row as JSON decoding makes them.
_SHARED_STATE_FIELDS = frozenset(STATE_MODEL_FIELDS) - {"RowKey"}


def _state_model_row(raw: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of a state row the state model reads, with repeated string values shared.

    A nightly run holds one such row per resource of a subscription until its state is stored
    (37,000 in the largest of the benchmark's tenant): the same values, far fewer objects."""
    row: dict[str, Any] = {}
    for name in STATE_MODEL_FIELDS:
        if name in raw:
            value = raw[name]
            row[name] = sys.intern(value) if type(value) is str and name in _SHARED_STATE_FIELDS else value
    return row


def query_json(table: TableClient, flt: str) -> Iterator[dict[str, Any]]:
    """Entities matching an OData filter as plain JSON objects (``odata=nometadata``: strings,
    booleans and numbers), page after page, through the table client's own pipeline (its auth,
    retry and headers policies), following the service's continuation headers as the SDK does.

    ``TableClient.query_entities`` deserializes every page into a model and converts every entity
    into a ``TableEntity`` (about 50 µs and 1.4 KB per entity); the state reads of a nightly run
    hold one row per resource.
    """
    base = _account_url(table)
    params = {"$filter": flt}
    while True:
        # The query string is encoded here, braces included: the client formats the URL as a template.
        query = "&".join(f"{quote(k, safe='$')}={quote(v, safe='')}" for k, v in params.items())
        request = HttpRequest(
            "GET",
            f"{base}/{table.table_name}()?{query}",
            headers={
                "x-ms-version": table.api_version,
                "DataServiceVersion": "3.0",
                "MaxDataServiceVersion": "3.0;NetFx",
                "Accept": "application/json;odata=nometadata",
            },
        )
        response = table._client.send_request(request)
        if response.status_code != 200:
            if response.status_code == 404:
                raise ResourceNotFoundError(message=f"table {table.table_name} not found", response=response)
            raise HttpResponseError(message=f"query answered HTTP {response.status_code}", response=response)
        body = response.json()
        yield from body.get("value") or () if isinstance(body, dict) else ()
        next_pk = response.headers.get("x-ms-continuation-NextPartitionKey")
        next_rk = response.headers.get("x-ms-continuation-NextRowKey")
        if not next_pk and not next_rk:
            return
        params = {"$filter": flt, **({"NextPartitionKey": next_pk} if next_pk else {})}
        if next_rk:
            params["NextRowKey"] = next_rk


_INT32 = range(-(2**31), 2**31)


def odata_entity(entity: Mapping[str, Any]) -> str | None:
    """An entity as the JSON body of one Table operation, or ``None`` for a type not handled here.

    The SDK's transaction builder costs about 0.5 ms of CPU per row (a typed property map, a
    request object and an ``http.client`` serialisation per entity, then ``email`` parsing of the
    response); this writes the same JSON with ``@odata.type`` only where Table Storage needs it
    (DateTime, Int64, Double; strings, booleans and Int32 are typed by JSON itself).
    """
    out: dict[str, Any] = {}
    for key, value in entity.items():
        kind = type(value)
        if kind is str or kind is bool:
            out[key] = value
        elif value is None:
            continue
        elif kind is int:
            if value in _INT32:
                out[key] = value
            else:
                out[key] = str(value)
                out[key + "@odata.type"] = "Edm.Int64"
        elif isinstance(value, datetime):
            service_value = getattr(value, "tables_service_value", None)  # read back unchanged
            if service_value:
                out[key] = service_value
            else:
                utc = value.astimezone(UTC) if value.tzinfo else value
                out[key] = utc.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            out[key + "@odata.type"] = "Edm.DateTime"
        elif kind is float and math.isfinite(value):
            out[key] = value
            out[key + "@odata.type"] = "Edm.Double"
        else:
            return None
    return json.dumps(out, ensure_ascii=False)


def send_upsert_batch(table: TableClient, entities: list[dict[str, Any]], bodies: list[str]) -> None:
    """One entity-group transaction of upserts (insert-or-replace), built as Table Storage's
    ``$batch`` multipart body and sent through the table client's own pipeline (``send_request``:
    its auth, retry, timeouts and headers policies), as ``TableClient.submit_transaction`` does.

    Raises :class:`TableTransactionError` when the service rejects the transaction (it is then
    rolled back whole) and :class:`HttpResponseError` when the request itself fails.
    """
    base = _account_url(table)
    table_url = f"{base}/{table.table_name}"
    batch_id, changeset = f"batch_{uuid.uuid4()}", f"changeset_{uuid.uuid4()}"
    parts = [f"--{batch_id}\r\nContent-Type: multipart/mixed; boundary={changeset}\r\n\r\n"]
    for index, (entity, body) in enumerate(zip(entities, bodies, strict=True)):
        pk = quote(str(entity["PartitionKey"]).replace("'", "''"), safe="")
        rk = quote(str(entity["RowKey"]).replace("'", "''"), safe="")
        data = body.encode("utf-8")
        parts.append(
            f"--{changeset}\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n"
            f"Content-ID: {index}\r\n\r\nPUT {table_url}(PartitionKey='{pk}',RowKey='{rk}') HTTP/1.1\r\n"
            "Content-Type: application/json\r\nAccept: application/json;odata=minimalmetadata\r\n"
            f"DataServiceVersion: 3.0\r\nContent-Length: {len(data)}\r\n\r\n{body}\r\n"
        )
    parts.append(f"--{changeset}--\r\n\r\n--{batch_id}--\r\n")
    request = HttpRequest(
        "POST",
        f"{base}/$batch",
        headers={
            "x-ms-version": table.api_version,
            "DataServiceVersion": "3.0",
            "MaxDataServiceVersion": "3.0;NetFx",
            "Content-Type": f"multipart/mixed; boundary={batch_id}",
            "Accept": "application/json",
        },
        content="".join(parts).encode("utf-8"),
    )
    # The generated client's pipeline, exactly as the SDK's own $batch (streamed: azure-core cannot
    # decode multipart/mixed), then read whole.
    # Every operation is an upsert (insert-or-replace), so the whole transaction is idempotent: a
    # connection dropped before the answer (a kept-alive connection the service closed) is sent
    # again. azure-core retries no POST after a read error by default.
    response = table._client.send_request(request, stream=True, retry_on_methods=_IDEMPOTENT_BATCH)
    response.read()
    if response.status_code != 202:
        raise HttpResponseError(message=f"$batch answered HTTP {response.status_code}", response=response)
    statuses = _PART_STATUS.findall(response.text())
    if len(statuses) != len(entities) or any(not code.startswith("2") for code in statuses):
        failed = next((code for code in statuses if not code.startswith("2")), "missing parts")
        raise TableTransactionError(message=f"transaction rejected: {failed}", response=response)


_IDEMPOTENT_BATCH = frozenset({"HEAD", "GET", "PUT", "DELETE", "OPTIONS", "TRACE", "POST"})


def _account_url(table: TableClient) -> str:
    """The account endpoint a table client talks to (path-style, account included, for Azurite)."""
    return table.url.split("?", 1)[0].rstrip("/")


def _partition_key(entity: Mapping[str, Any]) -> str:
    return str(entity["PartitionKey"])


_PART_STATUS = re.compile(r"^HTTP/1\.1 (\d{3})", re.MULTILINE)


def _as_datetime(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, str) and value:
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return None
