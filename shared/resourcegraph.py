"""Inventory adapter (optional): one tenant-wide Azure Resource Graph query for sites and slots.

Resource Graph saves requests (1,000 rows a page instead of one list call per subscription
and resource group) but has its own quota (about 15 queries per 5 seconds per user), so it
saves requests, not necessarily time. It only returns what the identity can read and does
not report unreadable subscriptions; those are the ones the subscription list shows and the
query returns nothing for, which is indistinguishable from "no apps" — see the README.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any

from azure.core.credentials import TokenCredential
from azure.core.exceptions import AzureError
from azure.mgmt.resourcegraph import ResourceGraphClient
from azure.mgmt.resourcegraph.models import QueryRequest, QueryRequestOptions

from .config import Settings
from .http import client_kwargs
from .inventory import ArmInventory, SubscriptionInfo, describe_error, site_record
from .models import InventoryError, SiteRecord

log = logging.getLogger(__name__)

PAGE_SIZE = 1000
API_VERSION = "2024-04-01"  # newest stable; the SDK's default (2021-03-01) has the same shapes
# The query the emulator recognises verbatim: keep it in this one place.
SITES_QUERY = (
    "resources"
    " | where type =~ 'microsoft.web/sites' or type =~ 'microsoft.web/sites/slots'"
    " | project id, name, type, kind, location, subscriptionId, resourceGroup, tags,"
    " properties = pack('state', properties.state, 'clientCertEnabled', properties.clientCertEnabled,"
    " 'clientCertMode', properties.clientCertMode, 'clientCertExclusionPaths', properties.clientCertExclusionPaths,"
    " 'httpsOnly', properties.httpsOnly, 'publicNetworkAccess', properties.publicNetworkAccess)"
    " | order by subscriptionId asc, id asc"
)


def _quota_wait(headers: Mapping[str, str]) -> float:
    """Seconds to wait before the next query, from Resource Graph's quota headers."""
    remaining = headers.get("x-ms-user-quota-remaining")
    resets = headers.get("x-ms-user-quota-resets-after")
    if remaining is None or resets is None:
        return 0.0
    try:
        if int(remaining) > 0:
            return 0.0
        h, m, s = (float(x) for x in resets.split(":"))
    except ValueError:
        return 0.0
    return min(h * 3600 + m * 60 + s, 60.0)


class ResourceGraphInventory:
    """Same interface as :class:`~shared.inventory.ArmInventory`, fed by one paged query."""

    def __init__(self, credential: TokenCredential, settings: Settings) -> None:
        self._arm = ArmInventory(credential, settings)
        self._client = ResourceGraphClient(
            credential,
            base_url=settings.arm_endpoint,
            credential_scopes=[settings.arm_scope],
            api_version=API_VERSION,
            **client_kwargs(settings.retry_total, settings.http_timeout),
        )
        self._settings = settings
        self._lock = threading.Lock()
        self._by_subscription: dict[str, list[SiteRecord]] | None = None
        self._error: str | None = None
        self.requests = 0

    def subscriptions(self) -> list[SubscriptionInfo]:
        return self._arm.subscriptions()

    def _page(self, skip_token: str | None) -> tuple[Mapping[str, Any], Mapping[str, str]]:
        request = QueryRequest(
            query=SITES_QUERY,
            subscriptions=list(self._settings.subscriptions) or None,
            options=QueryRequestOptions(skip_token=skip_token, top=PAGE_SIZE, result_format="objectArray"),
        )
        self.requests += 1
        result: Any = self._client.resources(
            request,
            cls=lambda response, _deserialized, _h: (response.http_response.json(), response.http_response.headers),
        )
        return result[0], result[1]

    def _load(self) -> dict[str, list[SiteRecord]]:
        """Run the query once (all pages); rows grouped by subscription, duplicates dropped."""
        grouped: dict[str, list[SiteRecord]] = {}
        seen: set[str] = set()
        tokens: set[str] = set()
        token: str | None = None
        while True:
            body, headers = self._page(token)
            for row in body.get("data") or []:
                if not isinstance(row, Mapping):
                    continue
                record = site_record(row, str(row.get("subscriptionId") or ""))
                if record is None or record.key in seen:
                    continue
                seen.add(record.key)
                grouped.setdefault(record.subscription_id.lower(), []).append(record)
            token = body.get("$skipToken") or None
            if not token:
                return grouped
            if token in tokens:
                raise AzureError("Resource Graph returned the same $skipToken twice (paging loop)")
            tokens.add(token)
            wait = _quota_wait(headers)
            if wait:
                log.info("Resource Graph quota exhausted; waiting %.1fs", wait)
                time.sleep(wait)

    def scan(self, subscription_id: str) -> Iterator[SiteRecord | InventoryError]:
        with self._lock:
            if self._by_subscription is None and self._error is None:
                try:
                    self._by_subscription = self._load()
                except AzureError as exc:
                    self._error = describe_error(exc)[0]
        if self._error is not None:
            yield InventoryError(
                f"/subscriptions/{subscription_id}", subscription_id, f"Resource Graph query failed: {self._error}"
            )
            return
        assert self._by_subscription is not None
        yield from self._by_subscription.pop(subscription_id.lower(), [])
