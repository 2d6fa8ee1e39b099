"""The four tables as the store sees them: Table Storage's limits, how an entity is cleaned to fit
them, and the :class:`Tables` every part of the store stands on (the clients, the write guard, the
generic reads and guarded writes). ``store.py``'s :class:`~shared.store.TableStore` is the whole."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import (
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.data.tables import TableClient, TableServiceClient, UpdateMode

from ..core.config import Settings
from ..core.keys import odata_quote
from ..core.layout import (
    partition_batches,
)
from .fastpaths import odata_entity as odata_entity  # re-exported: the fast $batch writer's serialiser

log = logging.getLogger("shared.store")


# Table Storage's limits: a string property holds at most 64 KiB as UTF-16 (32,768 code units; a
# character outside the BMP takes two), one entity at most 1 MiB. Leave room for names and keys.
MAX_STRING_UNITS = 32_000


MAX_ENTITY_BYTES = 1024 * 1024


ENTITY_BUDGET_BYTES = MAX_ENTITY_BYTES - 64 * 1024


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


class Tables:
    """The table clients and the guards (set by ``TableStore.__init__``), and what any table needs."""

    service: TableServiceClient
    settings: Settings
    results: TableClient
    latest: TableClient
    runs: TableClient
    exemptions: TableClient
    #: Called before every write; the run sets it to its lease guard (raises once the lease is lost).
    guard: Callable[[], None]
    #: Per table name: what to store in place of a row the service refuses (see ``TableStore.write_batch``).
    fallbacks: dict[str, Fallback]
    #: Told why when a state write finds a row another run wrote (the run sets it to its lease's).
    fence_lost: Callable[[str], None]

    def partition(self, table: TableClient, partition_key: str, select: list[str] | None = None) -> Iterator[Any]:
        return iter(table.query_entities(f"PartitionKey eq {odata_quote(partition_key)}", select=select))

    def get(self, table: TableClient, partition_key: str, row_key: str) -> Any | None:
        try:
            return table.get_entity(partition_key, row_key)
        except ResourceNotFoundError:
            return None

    def has_any(self, table: TableClient) -> bool:
        return next(iter(table.list_entities(results_per_page=1, select=["PartitionKey"])), None) is not None

    def delete_keys(self, table: TableClient, keys: Iterable[tuple[str, str]]) -> tuple[int, int]:
        """Delete rows by key, batched per partition; returns (rows deleted, transactions)."""
        deleted = sent = 0
        for batch in partition_batches(keys, lambda key: key[0]):
            self.guard()
            table.submit_transaction([("delete", {"PartitionKey": pk, "RowKey": rk}) for pk, rk in batch])
            deleted, sent = deleted + len(batch), sent + 1
        return deleted, sent

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
