"""Table Storage's shortcuts, each behind a self-check and a public fallback (``shortcuts.py``).

Two shortcuts reach past azure-data-tables' public surface, because the public one costs most of
the audit's own CPU at 100k sites (each function says how much; ARM's one is ``armpager.py``):

* :data:`TABLE_REQUEST`: ``TableClient._client.send_request``, the table client's own pipeline
  (auth, retry, timeouts, headers) for a request we build: the state reads as plain JSON
  (:func:`query_json`), the results' ``$batch`` transactions (:func:`send_upsert_batch`) and the
  state's conditional ones (:func:`send_conditional_batch`).
* :data:`BATCH_BODY`: the entity JSON those transactions carry (:func:`odata_entity`), built here
  instead of by the SDK's per-row request objects.

Each is checked once per process, locally (no network, ``fastpaths_check.py``): a table client
built there answers canned responses through its real pipeline, and our entity JSON is compared
with the SDK's serializer. A shortcut that fails is replaced by the public API
(``query_entities``, ``submit_transaction``) for the rest of the process, with one WARNING.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import re
import sys
import uuid
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime
from types import ModuleType
from typing import Any
from urllib.parse import quote

from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.core.rest import HttpRequest
from azure.data.tables import EdmType, EntityProperty, TableClient, TableTransactionError, UpdateMode

from ..core import schema
from ..core.errors import WriteConflict
from . import fastpaths_check
from .shortcuts import register, usable

log = logging.getLogger(__name__)


def _this() -> ModuleType:
    """This module, as its self-checks drive it (monkeypatched functions included)."""
    return sys.modules[__name__]


#: The shortcuts, named by the internal each relies on (the names the fallback WARNING uses).
TABLE_REQUEST = register(
    "TableClient._client.send_request",
    "TableClient.query_entities and submit_transaction",
    lambda: fastpaths_check.check_table_request(_this()),
)
BATCH_BODY = register(
    "$batch entity JSON (as azure.data.tables serializes it)",
    "TableClient.submit_transaction",
    lambda: fastpaths_check.check_batch_body(_this()),
)


# -- reads: table entities as plain JSON -------------------------------------------------------------
#: Where a read entity carries its ETag (``schema.ETAG``, re-exported: the rows' contract).
ETAG = schema.ETAG

#: Entities per page of a read (``$top``; the service's own page is 1,000). Each audit thread holds
#: one parsed page while it reads a subscription's state: 1,000 state rows decode into about
#: 21,000 objects (2.2 MiB), so with eight threads the pages alone moved the peak by tens of MB
#: with the tenant's size (bench/README.md, "Measured: smaller pages in flight"). 200 costs five requests where one did,
#: at the same wall time in the bench.
READ_PAGE = 200


def query_json(table: TableClient, flt: str, *, etags: bool = False) -> Iterator[dict[str, Any]]:
    """Entities matching an OData filter as plain JSON objects (``odata=nometadata``: strings,
    booleans and numbers; Int64, DateTime, Guid and binary values as the strings the service
    sends), through :func:`query_json_fast`, or ``query_entities`` converted to the same shape.
    With ``etags``, each also carries its ETag as :data:`ETAG` (for a conditional write)."""
    if usable(TABLE_REQUEST):
        return query_json_fast(table, flt, etags=etags)
    pages = table.query_entities(flt, results_per_page=READ_PAGE)
    return (plain_entity(entity, etag=etags) for entity in pages)


def query_json_fast(table: TableClient, flt: str, *, etags: bool = False) -> Iterator[dict[str, Any]]:
    """Page after page, through the table client's own pipeline (its auth, retry and headers
    policies), following the service's continuation headers as the SDK does.

    ``TableClient.query_entities`` deserializes every page into a model and converts every entity
    into a ``TableEntity`` (about 50 µs and 1.4 KB per entity); the state reads of a nightly run
    hold one row per resource. Pages are :data:`READ_PAGE` entities (``$top``, sent again with
    each continuation: the service applies it per request).
    """
    base = _account_url(table)
    first = {"$filter": flt, "$top": str(READ_PAGE)}
    params = first
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
                # minimalmetadata adds the ETag, and type annotations we drop (values are spelled alike)
                "Accept": f"application/json;odata={'minimalmetadata' if etags else 'nometadata'}",
            },
        )
        response = table._client.send_request(request)
        if response.status_code != 200:
            if response.status_code == 404:
                raise ResourceNotFoundError(message=f"table {table.table_name} not found", response=response)
            raise HttpResponseError(message=f"query answered HTTP {response.status_code}", response=response)
        body = response.json()
        values = body.get("value") or () if isinstance(body, dict) else ()
        yield from (_without_annotations(value) for value in values) if etags else values
        next_pk = response.headers.get("x-ms-continuation-NextPartitionKey")
        next_rk = response.headers.get("x-ms-continuation-NextRowKey")
        if not next_pk and not next_rk:
            return
        params = {**first, **({"NextPartitionKey": next_pk} if next_pk else {})}
        if next_rk:
            params["NextRowKey"] = next_rk


def _without_annotations(value: dict[str, Any]) -> dict[str, Any]:
    """A ``minimalmetadata`` entity as ``nometadata`` has it, plus its :data:`ETAG`."""
    return {key: item for key, item in value.items() if "@odata." not in key}


def plain_entity(entity: Any, *, etag: bool = False) -> dict[str, Any]:
    """A ``TableEntity`` as ``odata=nometadata`` JSON has it, ``Timestamp`` included (and with
    ``etag``, its ETag as :data:`ETAG`)."""
    out = {str(key): _plain_value(value) for key, value in entity.items()}
    metadata = getattr(entity, "metadata", None) or {}
    stamp = metadata.get("timestamp")
    if stamp is not None:
        out["Timestamp"] = _plain_value(stamp)
    if etag and metadata.get("etag"):
        out[ETAG] = str(metadata["etag"])
    return out


def _plain_value(value: Any) -> Any:
    if isinstance(value, EntityProperty):  # a NamedTuple: before any other type test
        value = value.value
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else _plain_value(value)
    if isinstance(value, datetime):
        service_value = getattr(value, "tables_service_value", None)  # the service's own spelling
        return service_value or _utc_text(value)
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    return value


# -- writes: one transaction of upserts ---------------------------------------------------------------
def upsert_batch(table: TableClient, entities: list[dict[str, Any]]) -> None:
    """Upsert (insert-or-replace) ≤100 entities of one partition as one transaction.

    Raises :class:`TableTransactionError` when the service rejects it (rolled back whole) and
    :class:`HttpResponseError` when the request fails, on either path.
    """
    if usable(TABLE_REQUEST, BATCH_BODY):
        bodies = [odata_entity(e) for e in entities]
        if all(b is not None for b in bodies):
            send_upsert_batch(table, entities, [b for b in bodies if b is not None])
            return
    # The public path; also a property type the fast path does not serialise (the SDK does).
    submit_upserts(table, entities)


def submit_upserts(table: TableClient, entities: Iterable[Mapping[str, Any]]) -> None:
    """The same transaction through ``TableClient.submit_transaction``, storing the same types
    :func:`odata_entity` sends (an int beyond 32 bits as Int64, a naive datetime as UTC)."""
    table.submit_transaction(
        [("upsert", sdk_entity(e), {"mode": UpdateMode.REPLACE}) for e in entities],
        retry_on_methods=_IDEMPOTENT_BATCH,
    )


def sdk_entity(entity: Mapping[str, Any]) -> dict[str, Any]:
    """An entity the SDK serialises as :func:`odata_entity` does (the SDK refuses an int beyond
    32 bits unless told it is Int64, and reads a naive datetime as local time)."""
    out: dict[str, Any] = {}
    for key, value in entity.items():
        if type(value) is int and value not in _INT32:
            value = EntityProperty(value, EdmType.INT64)
        elif isinstance(value, datetime) and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        out[key] = value
    return out


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
            out[key] = service_value or _utc_text(value)
            out[key + "@odata.type"] = "Edm.DateTime"
        elif kind is float and math.isfinite(value):
            out[key] = value
            out[key + "@odata.type"] = "Edm.Double"
        else:
            return None
    return json.dumps(out, ensure_ascii=False)


def _utc_text(value: datetime) -> str:
    """A datetime as Table Storage's DateTime text (a naive one is taken as UTC)."""
    utc = value.astimezone(UTC) if value.tzinfo else value
    return utc.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def send_upsert_batch(table: TableClient, entities: list[dict[str, Any]], bodies: list[str]) -> None:
    """One entity-group transaction of upserts (insert-or-replace), built as Table Storage's
    ``$batch`` multipart body and sent through the table client's own pipeline (``send_request``:
    its auth, retry, timeouts and headers policies), as ``TableClient.submit_transaction`` does.

    Raises :class:`TableTransactionError` when the service rejects the transaction (it is then
    rolled back whole) and :class:`HttpResponseError` when the request itself fails.
    """
    # Every operation is an upsert (insert-or-replace), so the whole transaction is idempotent: a
    # connection dropped before the answer (a kept-alive connection the service closed) is sent
    # again. azure-core retries no POST after a read error by default.
    response = _send_batch(table, entities, bodies)
    statuses = _PART_STATUS.findall(response.text())
    if len(statuses) != len(entities) or any(not code.startswith("2") for code in statuses):
        failed = next((code for code in statuses if not code.startswith("2")), "missing parts")
        raise TableTransactionError(message=f"transaction rejected: {failed}", response=response)


def _send_batch(
    table: TableClient, entities: list[dict[str, Any]], bodies: list[str], etags: list[str | None] | None = None
) -> Any:
    """Send one ``$batch`` (see :func:`batch_body`) through the generated client's pipeline,
    exactly as the SDK's own ``$batch`` (streamed: azure-core cannot decode multipart/mixed), and
    read the answer whole. Raises :class:`HttpResponseError` unless the service accepted it (202);
    the parts' own statuses are the caller's to judge."""
    base = _account_url(table)
    batch_id, changeset = f"batch_{uuid.uuid4()}", f"changeset_{uuid.uuid4()}"
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
        content=batch_body(f"{base}/{table.table_name}", batch_id, changeset, entities, bodies, etags),
    )
    response = table._client.send_request(request, stream=True, retry_on_methods=_IDEMPOTENT_BATCH)
    response.read()
    if response.status_code != 202:
        raise HttpResponseError(message=f"$batch answered HTTP {response.status_code}", response=response)
    return response


# -- writes: one transaction of conditional operations (the state: fenced by each row's ETag) ------------
def conditional_batch(table: TableClient, entities: list[dict[str, Any]], etags: list[str | None]) -> list[str]:
    """≤100 entities of one partition as one transaction, each conditional: replaced only while it
    still has the ETag given, or created only while it does not exist (``None``). Returns their new
    ETags. Raises :class:`WriteConflict` when a condition failed (the transaction is rolled back
    whole), :class:`TableTransactionError` or :class:`HttpResponseError` for any other failure."""
    if usable(TABLE_REQUEST, BATCH_BODY):
        bodies = [odata_entity(e) for e in entities]
        if all(b is not None for b in bodies):
            return send_conditional_batch(table, entities, [b for b in bodies if b is not None], etags)
    return submit_conditional(table, entities, etags)


def submit_conditional(table: TableClient, entities: list[dict[str, Any]], etags: list[str | None]) -> list[str]:
    """The same transaction through ``TableClient.submit_transaction``."""
    operations: list[Any] = [
        (
            "update",
            sdk_entity(e),
            {"mode": UpdateMode.REPLACE, "etag": etag, "match_condition": MatchConditions.IfNotModified},
        )
        if etag
        else ("create", sdk_entity(e))
        for e, etag in zip(entities, etags, strict=True)
    ]
    try:
        results = table.submit_transaction(operations, retry_on_methods=_IDEMPOTENT_BATCH)
    except TableTransactionError as exc:
        if exc.status_code in _CONFLICTS:
            raise WriteConflict(f"conditional transaction rejected: HTTP {exc.status_code}") from exc
        raise
    return [str(result.get("etag") or "") for result in results]


def send_conditional_batch(
    table: TableClient, entities: list[dict[str, Any]], bodies: list[str], etags: list[str | None]
) -> list[str]:
    """:func:`conditional_batch` as a ``$batch`` request we build (see :func:`send_upsert_batch`):
    ``PUT`` with ``If-Match`` for a replacement, ``POST`` for a creation; the ETags from the parts.
    A retry after an answer that was lost finds its own write there and fails its condition: the
    caller tells its own write from another writer's (``store.write_state``)."""
    response = _send_batch(table, entities, bodies, etags)
    parts = batch_parts(response.text())
    failed = next((code for code, _ in parts if not code.startswith("2")), None)
    if failed in _CONFLICT_CODES:
        raise WriteConflict(f"conditional transaction rejected: HTTP {failed}")
    if failed is not None or len(parts) != len(entities):
        raise TableTransactionError(message=f"transaction rejected: {failed or 'missing parts'}", response=response)
    return [etag for _, etag in parts]


_CONFLICTS = (409, 412)  # the entity exists already / it changed since it was read
_CONFLICT_CODES = frozenset(str(code) for code in _CONFLICTS)
_PART = re.compile(r"^HTTP/1\.1 (\d{3})[^\n]*\n(.*?)(?=^HTTP/1\.1 |\Z)", re.MULTILINE | re.DOTALL)
_PART_ETAG = re.compile(r"^ETag:\s*(.+?)\s*$", re.MULTILINE | re.IGNORECASE)


def batch_parts(text: str) -> list[tuple[str, str]]:
    """``(status, ETag)`` of each operation's answer in a ``$batch`` response, in order."""
    out = []
    for match in _PART.finditer(text):
        etag = _PART_ETAG.search(match.group(2))
        out.append((match.group(1), etag.group(1) if etag else ""))
    return out


def batch_body(
    table_url: str,
    batch_id: str,
    changeset: str,
    entities: list[dict[str, Any]],
    bodies: list[str],
    etags: list[str | None] | None = None,
) -> bytes:
    """The ``$batch`` multipart body: one changeset of ``PUT`` (insert-or-replace) parts; with
    ``etags``, conditional ones: ``PUT`` with ``If-Match`` (replace while unchanged) for an ETag,
    ``POST`` to the table (create, refused if it exists) for ``None`` (``""``: no condition)."""
    parts = [f"--{batch_id}\r\nContent-Type: multipart/mixed; boundary={changeset}\r\n\r\n"]
    conditions = etags if etags is not None else [_UPSERT] * len(entities)
    for index, (entity, body, etag) in enumerate(zip(entities, bodies, conditions, strict=True)):
        pk = quote(str(entity["PartitionKey"]).replace("'", "''"), safe="")
        rk = quote(str(entity["RowKey"]).replace("'", "''"), safe="")
        data = body.encode("utf-8")
        if etag is None:
            request_line, condition = f"POST {table_url} HTTP/1.1", "Prefer: return-no-content\r\n"
        else:
            request_line = f"PUT {table_url}(PartitionKey='{pk}',RowKey='{rk}') HTTP/1.1"
            condition = f"If-Match: {etag}\r\n" if etag else ""
        parts.append(
            f"--{changeset}\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n"
            f"Content-ID: {index}\r\n\r\n{request_line}\r\n"
            "Content-Type: application/json\r\nAccept: application/json;odata=minimalmetadata\r\n"
            f"{condition}DataServiceVersion: 3.0\r\nContent-Length: {len(data)}\r\n\r\n{body}\r\n"
        )
    parts.append(f"--{changeset}--\r\n\r\n--{batch_id}--\r\n")
    return "".join(parts).encode("utf-8")


_IDEMPOTENT_BATCH = frozenset({"HEAD", "GET", "PUT", "DELETE", "OPTIONS", "TRACE", "POST"})
_UPSERT = ""  # in batch_body's etags: a part with no condition (insert-or-replace)
_PART_STATUS = re.compile(r"^HTTP/1\.1 (\d{3})", re.MULTILINE)


def _account_url(table: TableClient) -> str:
    """The account endpoint a table client talks to (path-style, account included, for Azurite)."""
    return table.url.split("?", 1)[0].rstrip("/")
