"""Inventory adapter (optional): one tenant-wide Azure Resource Graph query for sites and slots.

Resource Graph saves requests (1,000 rows a page instead of one list call per subscription
and resource group) but has its own quota (about 15 queries per 5 seconds per user), so it
saves requests, not necessarily time. It only returns what the identity can read and does
not report unreadable subscriptions; those are the ones the subscription list shows and the
query returns nothing for, which is indistinguishable from "no apps" — see docs/design.md.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from azure.core.credentials import TokenCredential
from azure.core.exceptions import AzureError
from azure.mgmt.resourcegraph import ResourceGraphClient
from azure.mgmt.resourcegraph.models import QueryRequest, QueryRequestOptions

from ..core.config import Settings
from ..core.keys import resource_key
from ..core.models import GoneRecord, InventoryError, SiteRecord
from ..core.names import fold
from .arm_errors import PagingLoopError, TruncatedAnswerError
from .http import client_kwargs, pooled_session
from .inventory import ArmInventory, Found, SubscriptionInfo
from .links import pinned_client_kwargs
from .reads import ChangedResources
from .sites import describe_error, site_record
from .threads import NO_CONTEXT, ThreadInit, thread

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


def quota_wait(headers: Mapping[str, str]) -> float:
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


#: Resources missing from Resource Graph's answer confirmed by a GET each; more than this, by the
#: subscription's ARM list (a few calls, however many are missing).
CONFIRM_BY_GET = 25
#: Records the loader may read ahead of the scans that take them (it waits for room beyond that):
#: with the page being parsed, all the Resource Graph source holds, whatever the tenant.
MAX_BUFFERED = 2_000
#: A loader nobody takes anything from for this long gives up (the run is gone).
ABANDON_SECONDS = 600.0
#: Records a scan takes from the loader at once.
TAKE = 100


#: Connections a Resource Graph client keeps (its own pool, closed with it): requests' default; one
#: loader thread queries, or the change poll's thread.
GRAPH_CONNECTIONS = 10


def graph_client(credential: TokenCredential, settings: Settings) -> ResourceGraphClient:
    """A Resource Graph client on the ARM endpoint, pinned to it, with the audit's bounded retries."""
    return ResourceGraphClient(
        credential,
        base_url=settings.arm_endpoint,
        credential_scopes=[settings.arm_scope],
        api_version=API_VERSION,
        # Pages come by $skipToken in the POST body (no link is followed); pinned all the same, and
        # a redirect is refused (a 307 would re-send the query, and its answer, elsewhere).
        **pinned_client_kwargs(settings.arm_endpoint, "Resource Graph"),
        **client_kwargs(
            settings.retry_total, settings.http_timeout, pooled_session(GRAPH_CONNECTIONS), session_owner=True
        ),
    )


def next_skip_token(body: Mapping[str, Any], followed: set[str], what: str) -> str | None:
    """The ``$skipToken`` of the page after ``body``, or ``None`` after the last page.

    Guarded like ARM's paging (``paging.guarded_pages``): a truncated answer (``resultTruncated``:
    rows are missing and no token leads to them) raises :class:`TruncatedAnswerError`, and a token
    already in ``followed`` (a paging loop) raises :class:`PagingLoopError`. Either way the caller
    treats its answer as incomplete, never as a short list to trust; ``followed`` gains the token.
    """
    if str(body.get("resultTruncated", "false")).lower() == "true":
        raise TruncatedAnswerError(
            f"{what}: Resource Graph truncated its answer (resultTruncated is true): rows are missing"
        )
    token = body.get("$skipToken") or None
    if token is None:
        return None
    token = str(token)
    if token in followed:
        raise PagingLoopError(f"{what}: Resource Graph returned the same $skipToken twice (paging loop)")
    followed.add(token)
    return token


def query_page(
    client: ResourceGraphClient, query: str, subscriptions: Sequence[str], skip_token: str | None
) -> tuple[Mapping[str, Any], Mapping[str, str]]:
    """One page of a Resource Graph query as its JSON body and headers (the quota headers pace
    the next page); ``subscriptions`` empty means every subscription the identity can read."""
    request = QueryRequest(
        query=query,
        subscriptions=list(subscriptions) or None,
        options=QueryRequestOptions(skip_token=skip_token, top=PAGE_SIZE, result_format="objectArray"),
    )
    result: Any = client.resources(
        request,
        cls=lambda response, _deserialized, _h: (response.http_response.json(), response.http_response.headers),
    )
    return result[0], result[1]


class ResourceGraphInventory:
    """Same interface as :class:`~shared.azure.inventory.ArmInventory`, fed by one paged query.

    The query's rows come ordered by subscription, and :meth:`subscriptions` lists subscriptions in
    that order. A background loader reads the pages and hands each subscription's records over as
    they come, to the scan of that subscription, through a buffer of at most :data:`MAX_BUFFERED`
    records: when the buffer is full, the loader waits for the scans (back-pressure). So the source
    holds one page and that buffer, never a whole subscription or the tenant.
    """

    source = "graph"  # its index may lag behind a GET (see pipeline._reread_fresher)

    def __init__(self, credential: TokenCredential, settings: Settings, thread_init: ThreadInit = NO_CONTEXT) -> None:
        self._arm = ArmInventory(credential, settings, thread_init)
        self._thread_init = thread_init
        self._client = graph_client(credential, settings)
        self._settings = settings
        self._cond = threading.Condition()
        self._loader: threading.Thread | None = None
        self._buffers: dict[str, deque[Found]] = {}  # records read and not taken yet, by subscription
        self._position: str | None = None  # the subscription the query is reading (folded)
        self._wanted: set[str] | None = None  # subscriptions the run audits (None: keep all)
        self._buffered = 0
        self._finished = False
        self._closed = False
        self._error: str | None = None
        self.requests = 0
        self.peak_buffered = 0

    def close(self) -> None:
        with self._cond:
            self._closed = True  # a loader waiting for room stops
            self._cond.notify_all()
        self._client.close()
        self._arm.close()

    def subscriptions(self) -> list[SubscriptionInfo]:
        subs = sorted(self._arm.subscriptions(), key=lambda s: fold(s.subscription_id))
        with self._cond:
            self._wanted = {fold(s.subscription_id) for s in subs}
        return subs

    def confirm_empty(self, subscription_id: str) -> InventoryError | None:
        """Resource Graph answers a subscription the identity can no longer read with no rows, not an
        error, so silence is not absence: before anything is retired, one ARM call (the first page
        of the site list) must agree that the subscription holds no sites. Returns the ERROR to
        record instead when ARM lists sites, or refuses or fails the call."""
        scope = f"/subscriptions/{subscription_id}"
        try:
            if not self._arm.lists_any_site(subscription_id):
                return None
            message = (
                "Resource Graph returned no sites for this subscription, but ARM lists some: the identity may "
                "have lost Resource Graph access to it; its last-known state is kept"
            )
            return InventoryError(scope, subscription_id, message)
        except AzureError as exc:
            message, status = describe_error(exc)
            return InventoryError(
                scope,
                subscription_id,
                f"Resource Graph returned no sites and ARM could not confirm that there are none: {message}",
                status_code=status,
            )

    def reread(
        self, subscription_id: str, resource_ids: Sequence[str]
    ) -> Iterator[SiteRecord | InventoryError | GoneRecord]:
        """Resources Resource Graph answered for otherwise than a fresher GET stored (its index may
        lag behind a change the poll read): ARM's answer, one GET each."""
        reads = ChangedResources(self._arm, {subscription_id: list(resource_ids)}, self._settings, self._thread_init)
        yield from reads.scan(subscription_id)

    def confirm_missing(
        self, subscription_id: str, resource_ids: Sequence[str]
    ) -> Iterator[SiteRecord | InventoryError | GoneRecord]:
        """Resources the state holds live that Resource Graph's answer left out are asked of ARM before
        anything is retired: Resource Graph answers silence for what it may not show (a deny assignment
        on one group trims its rows without an error), so a missing row proves nothing.

        Up to :data:`CONFIRM_BY_GET` of them are read one GET each (the change poll's reads: the
        resource's own ``ResourceNotFound`` confirms it gone, any other failure is its ERROR row);
        more than that, the subscription's ARM list answers for all of them at once. A resource ARM
        still has is audited from ARM's answer."""
        if len(resource_ids) <= CONFIRM_BY_GET:
            reads = ChangedResources(
                self._arm, {subscription_id: list(resource_ids)}, self._settings, self._thread_init
            )
            found: Iterable[Found | GoneRecord] = reads.scan(subscription_id)
        else:
            found = self._confirm_by_list(subscription_id, resource_ids)
        confirmed = 0
        for item in found:
            if isinstance(item, InventoryError):
                item = InventoryError(
                    item.scope_id,
                    item.subscription_id,
                    f"Resource Graph did not return it, and ARM could not confirm that it is gone: {item.message}",
                    item.resource_group,
                    item.status_code,
                )
            elif isinstance(item, SiteRecord):
                confirmed += 1
            yield item
        if confirmed:
            log.warning(
                "Resource Graph left out %d resources of subscription %s that ARM still has (audited from ARM)",
                confirmed,
                subscription_id,
            )

    def _confirm_by_list(self, subscription_id: str, resource_ids: Sequence[str]) -> Iterator[Found | GoneRecord]:
        """The subscription's ARM list decides for every missing resource: listed (audited), absent
        from a complete list (gone), or, when the list was not complete, unconfirmed (its ERROR row)."""
        wanted = {resource_key(rid): rid for rid in resource_ids}
        problem: InventoryError | None = None
        for item in self._arm.scan(subscription_id):
            if isinstance(item, InventoryError):
                problem = problem or item
            elif wanted.pop(resource_key(item.resource_id), None) is not None:
                yield item
        for rid in wanted.values():
            if problem is None:
                yield GoneRecord(rid, subscription_id)
            else:
                yield InventoryError(
                    rid, subscription_id, f"ARM's list of the subscription was incomplete: {problem.message}"
                )

    def _page(self, skip_token: str | None) -> tuple[Mapping[str, Any], Mapping[str, str]]:
        self.requests += 1
        return query_page(self._client, SITES_QUERY, self._settings.subscriptions, skip_token)

    def _is_complete(self, key: str) -> bool:
        """The query has moved past this subscription (rows come ordered by subscription id), or ended."""
        return self._finished or (self._position is not None and key < self._position)

    def _move_to(self, previous: str | None, subscription: str | None) -> None:
        """``previous`` is complete; the query reads ``subscription`` now (None: the end)."""
        if previous is not None and subscription is not None and subscription < previous:
            raise AzureError(f"Resource Graph returned rows of subscription {subscription} out of order")
        with self._cond:
            self._position = subscription if subscription is not None else "\uffff"
            self._cond.notify_all()

    def _put(self, subscription: str, found: Found) -> None:
        """Hand one record to its subscription's scan; wait while the buffer is full (back-pressure)."""
        with self._cond:
            idle_since = time.monotonic()
            while self._buffered >= MAX_BUFFERED:
                if self._closed:
                    raise AzureError("Resource Graph loader stopped: the inventory was closed")
                if not self._cond.wait(timeout=5.0) and time.monotonic() - idle_since > ABANDON_SECONDS:
                    raise AzureError("Resource Graph loader abandoned: nothing takes its rows")
            self._buffers.setdefault(subscription, deque()).append(found)
            self._buffered += 1
            self.peak_buffered = max(self.peak_buffered, self._buffered)
            self._cond.notify_all()

    def _load(self) -> None:
        """Run the query (all pages), handing each record over as it is read."""
        tokens: set[str] = set()
        token: str | None = None
        current: str | None = None
        while True:
            body, headers = self._page(token)
            for row in body.get("data") or []:
                if not isinstance(row, Mapping):
                    continue
                found = site_record(row, str(row.get("subscriptionId") or ""))
                subscription = fold(found.subscription_id)
                if isinstance(found, InventoryError) and not subscription:
                    # No subscription column and no id to read one from: no subscription's audit can own it.
                    log.warning("Resource Graph returned a row of no subscription: %s", found.message)
                    continue
                if subscription != current:
                    self._move_to(current, subscription)
                    current = subscription
                if self._wanted is not None and subscription not in self._wanted:
                    continue
                self._put(subscription, found)  # a row repeated across pages: the pipeline keeps the first
            token = next_skip_token(body, tokens, "the sites query")
            if not token:
                break
            wait = quota_wait(headers)
            if wait:
                log.info("Resource Graph quota exhausted; waiting %.1fs", wait)
                time.sleep(wait)
        self._move_to(current, None)

    def _run_loader(self) -> None:
        error: str | None = None
        try:
            self._load()
        except AzureError as exc:
            error = describe_error(exc)[0]
        except Exception as exc:  # noqa: BLE001 - reported on every subscription not yet handed over
            error = f"{type(exc).__name__}: {exc}"
        with self._cond:
            self._error = error
            self._finished = True
            self._cond.notify_all()

    def scan(self, subscription_id: str) -> Iterator[SiteRecord | InventoryError]:
        """The subscription's records as the loader reads them (owners are set by the pipeline,
        ``core.owners.set_owners``; a row the answer repeats comes twice, the first is audited)."""
        key = fold(subscription_id)
        while True:
            with self._cond:
                if self._loader is None:
                    self._loader = thread(self._run_loader, "resourcegraph", self._thread_init)
                    self._loader.start()
                while not self._buffers.get(key) and not self._is_complete(key):
                    self._cond.wait()
                buffer = self._buffers.get(key)
                taken = [buffer.popleft() for _ in range(min(TAKE, len(buffer)))] if buffer else []
                if taken:
                    self._buffered -= len(taken)
                    self._cond.notify_all()
                else:
                    self._buffers.pop(key, None)
                    # A subscription the query had moved past before it failed is complete; the others are not.
                    passed = self._position is not None and key < self._position
                    error = None if passed else self._error
                    break
            yield from taken
        if error is not None:
            yield InventoryError(
                f"/subscriptions/{subscription_id}", subscription_id, f"Resource Graph query failed: {error}"
            )
