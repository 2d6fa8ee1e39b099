"""Resource Graph's ``resourcechanges``: the change records of sites and slots since an instant, paged
(its ``$skipToken`` guarded), each a hint that a resource changed; grouped per subscription as ARM
compares ids. The change poll (``changes.py``) reads them.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from azure.core.credentials import TokenCredential
from azure.mgmt.resourcegraph import ResourceGraphClient

from ..core.config import Settings
from ..core.models import valid_text
from ..core.names import fold
from ..core.when import as_utc
from .resourcegraph import graph_client, next_skip_token, query_page, quota_wait

log = logging.getLogger(__name__)


#: The change query; ``{since}`` is an ISO 8601 UTC instant. The emulator recognises this text.
CHANGES_QUERY = (
    "resourcechanges"
    " | extend changeTime = todatetime(properties.changeAttributes.timestamp),"
    " targetResourceId = tostring(properties.targetResourceId),"
    " targetResourceType = tostring(properties.targetResourceType),"
    " changeType = tostring(properties.changeType)"
    " | where changeTime > datetime({since})"
    " | where targetResourceType =~ 'microsoft.web/sites' or targetResourceType =~ 'microsoft.web/sites/slots'"
    " | project changeTime, targetResourceId, targetResourceType, changeType"
    " | order by changeTime asc, targetResourceId asc"
)


def fingerprint(change: Change) -> str:
    """A change record's identity: the resource, the instant and the kind of change."""
    when = change.at.isoformat() if change.at else ""
    text = f"{fold(change.resource_id)}|{when}|{change.change_type}"
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def changes_query(since: datetime) -> str:
    return CHANGES_QUERY.format(since=since.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"))


@dataclass(frozen=True, slots=True)
class Change:
    """One ``resourcechanges`` record: a hint that a site or slot changed."""

    resource_id: str
    resource_type: str
    change_type: str  # Create, Update, Delete
    at: datetime | None


class ChangeFeed:
    """Reads the change records since an instant: one paged Resource Graph query, within its quota."""

    def __init__(self, credential: TokenCredential, settings: Settings) -> None:
        self._settings = settings
        self._client: ResourceGraphClient = graph_client(credential, settings)
        self.requests = 0

    def close(self) -> None:
        self._client.close()

    def since(self, since: datetime) -> list[Change]:
        """Every change record since ``since``; raises (the poll fails, its watermark stays) when
        Resource Graph's answer is truncated or its paging loops (:func:`next_skip_token`)."""
        changes: list[Change] = []
        skip_token: str | None = None
        followed: set[str] = set()
        while True:
            body, headers = self._page(changes_query(since), skip_token)
            for row in body.get("data") or ():
                change = _change(row)
                if change is not None:
                    changes.append(change)
            skip_token = next_skip_token(body, followed, "the change query")
            if not skip_token:
                return changes
            pause = quota_wait(headers)
            if pause:
                time.sleep(pause)

    def _page(self, query: str, skip_token: str | None) -> tuple[Mapping[str, Any], Mapping[str, str]]:
        self.requests += 1
        return query_page(self._client, query, self._settings.subscriptions, skip_token)


def _change(row: Any) -> Change | None:
    if not isinstance(row, Mapping) or not isinstance(row.get("targetResourceId"), str):
        return None
    return Change(
        resource_id=valid_text(row["targetResourceId"]),  # estate text: no lone surrogate (models.valid_text)
        resource_type=str(row.get("targetResourceType") or ""),
        change_type=str(row.get("changeType") or ""),
        at=as_utc(row.get("changeTime")),
    )


def by_subscription(changes: list[Change]) -> dict[str, list[str]]:
    """The changed resource ids per subscription, each subscription and each resource once as ARM
    compares ids (``resourcechanges`` spells an id in whatever casing its writer used: two casings
    of one subscription are one subscription); a record whose id names no subscription is dropped
    with a warning (no scope could own it)."""
    spelled: dict[str, str] = {}
    out: dict[str, dict[str, str]] = {}
    for change in changes:
        parts = change.resource_id.strip("/").split("/")
        if len(parts) < 2 or fold(parts[0]) != "subscriptions" or not parts[1]:
            log.warning("Change record for %r names no subscription; ignored", change.resource_id[:200])
            continue
        sub = spelled.setdefault(fold(parts[1]), parts[1])
        out.setdefault(sub, {}).setdefault(fold(change.resource_id), change.resource_id)
    return {sub: list(ids.values()) for sub, ids in out.items()}
