"""Exemptions: owned by the security team, stored centrally, and always expiring.

An exemption accepts that one resource (or everything under a resource group or subscription)
does not require client certificates, for a stated reason, approved by a named person, until a
date. It lives in the ``ClientCertAuditExemptions`` table, which only the security team can write,
never in resource tags that app owners set themselves: a tag can at most *request* one (see
:func:`exemption_request`), and the report lists such requests for approval.

This module is their table: thin storage functions that take the :class:`~shared.azure.store.TableStore`.
The rules (matching, validation, entity mapping) are pure and live in ``exemption_rules.py``; they
are re-exported here, so ``from shared.azure.exemptions import new_exemption`` keeps working.
"""

from __future__ import annotations

import contextlib
import getpass
import logging
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, NamedTuple

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.data.tables import UpdateMode

from ..core.exemption_rules import EXPIRING_SOON_DAYS as EXPIRING_SOON_DAYS
from ..core.exemption_rules import MAX_EXEMPTION_DAYS as MAX_EXEMPTION_DAYS
from ..core.exemption_rules import BrokenExemption as BrokenExemption
from ..core.exemption_rules import Exemption as Exemption
from ..core.exemption_rules import apply_exemption as apply_exemption
from ..core.exemption_rules import exemption_from_entity as exemption_from_entity
from ..core.exemption_rules import exemption_request as exemption_request
from ..core.exemption_rules import expiring_soon as expiring_soon
from ..core.exemption_rules import in_force as in_force
from ..core.exemption_rules import new_exemption as new_exemption
from ..core.exemption_rules import parse_expiry as parse_expiry
from ..core.exemption_rules import read_exemption as read_exemption
from ..core.exemption_rules import validate_scope as validate_scope
from ..core.keys import lookup_keys, odata_quote, resource_key
from ..core.names import fold
from ..core.schema import EXEMPTIONS_PARTITION, exemption_row

if TYPE_CHECKING:
    from .store import TableStore

log = logging.getLogger(__name__)

PARTITION = EXEMPTIONS_PARTITION


# -- storage --------------------------------------------------------------------------------------
class ExemptionRows(NamedTuple):
    """What the exemptions table holds: the exemptions, and the rows that exempt nothing."""

    valid: list[Exemption]
    broken: list[BrokenExemption]


def _rows(store: TableStore) -> list[Mapping[str, Any]]:
    try:
        return list(store.exemptions.query_entities(f"PartitionKey eq {odata_quote(PARTITION)}"))
    except ResourceNotFoundError:
        return []  # no table yet: nothing is exempt


def load_exemption_rows(store: TableStore) -> ExemptionRows:
    """Every row of the table (tens, not thousands), read: valid exemptions (expired ones
    included) and broken rows. A read error other than "no table" propagates."""
    rows = ExemptionRows([], [])
    for entity in _rows(store):
        read = read_exemption(entity)
        if isinstance(read, Exemption):
            rows.valid.append(read)
        else:
            rows.broken.append(read)
    return rows


def load_exemptions(store: TableStore) -> list[Exemption]:
    """The valid exemptions for a run or a poll; each broken row is logged (WARNING) and exempts nothing.

    The engine checks validity per resource with :meth:`Exemption.active`. A read error other
    than "no table" propagates and fails the run: auditing without the exemptions would page
    the owners of every accepted exception. A broken row is that exemption's error only.
    """
    rows = load_exemption_rows(store)
    for broken in rows.broken:
        log.warning(
            "Exemption %s (%s) is broken and exempts nothing: %s. Its resources are audited as if unexempted; "
            "fix the row, or remove it with `clientcert-audit exempt remove`",
            broken.row,
            broken.scope,
            broken.problem,
        )
    return rows.valid


def list_exemptions(store: TableStore, now: datetime, *, include_expired: bool = False) -> list[Exemption]:
    """The valid exemptions, soonest expiry first (see :func:`in_force`)."""
    return in_force(load_exemption_rows(store).valid, now, include_expired=include_expired)


def add_exemption(store: TableStore, exemption: Exemption) -> Exemption | BrokenExemption | None:
    """Store ``exemption``; return the one it replaced for the same scope (or the broken row), if any.

    The table is created only when it is missing (locally): in Azure the Bicep creates it, and the
    security team may write to that one table but create none.
    """
    entity = exemption_row(exemption)
    previous = store.get(store.exemptions, PARTITION, entity["RowKey"])
    try:
        store.exemptions.upsert_entity(entity, mode=UpdateMode.REPLACE)
    except ResourceNotFoundError:
        with contextlib.suppress(ResourceExistsError):
            store.exemptions.create_table()
        store.exemptions.upsert_entity(entity, mode=UpdateMode.REPLACE)
    for legacy in _legacy_keys(exemption.scope):  # the same scope, keyed by an older version: replaced
        old = store.get(store.exemptions, PARTITION, legacy)
        if old is not None:
            previous = previous or old
            store.exemptions.delete_entity(PARTITION, legacy)
    return read_exemption(previous) if previous else None


def _legacy_keys(scope: str) -> list[str]:
    """Other RowKeys an exemption of ``scope`` may be stored under (an older version keyed scopes
    with non-ASCII letters by ``lower()``; see :mod:`shared.core.names`)."""
    scope = scope.strip().rstrip("/")
    return sorted(lookup_keys(scope) - {resource_key(scope)})


def remove_exemption(store: TableStore, scope: str) -> Exemption | BrokenExemption | None:
    """Delete the exemption for ``scope`` (a broken row too); return it, or ``None`` when there was none.

    The scope is matched exactly (as ARM compares names), never as a prefix: removing a
    subscription-wide exemption must not silently remove the resource-level ones under it. A row
    written by hand under a key of its own is found by its ``Scope``, or by that key (what
    ``exempt list`` shows for a broken row without a scope).
    """
    wanted = scope.strip().rstrip("/")
    previous = None
    for row_key in [resource_key(wanted), *_legacy_keys(wanted)]:
        try:
            found = store.get(store.exemptions, PARTITION, row_key)
        except ResourceNotFoundError:
            return None
        if found is not None:
            previous = previous or found
            store.exemptions.delete_entity(PARTITION, row_key)
    if previous is None:
        previous = _written_for(store, wanted)
        if previous is None:
            return None
        store.exemptions.delete_entity(PARTITION, str(previous["RowKey"]))
    return read_exemption(previous)


def _written_for(store: TableStore, wanted: str) -> Mapping[str, Any] | None:
    """The row whose ``Scope`` is exactly ``wanted`` (as ARM compares names), or whose RowKey is."""
    for entity in _rows(store):
        written = entity.get("Scope")
        if isinstance(written, str) and fold(written.strip().rstrip("/")) == fold(wanted):
            return entity
        if str(entity.get("RowKey")) == wanted:
            return entity
    return None


def current_user() -> str:
    """Who ran ``exempt add`` on this machine (recorded beside the approver, for the trail)."""
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return ""
