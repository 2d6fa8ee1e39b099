"""Inventory adapter: every App Service and deployment slot in the readable subscriptions.

Calls are read-only list calls, and no per-app call is made for data a list already returns:
production sites come from the subscription-wide list, slots from one
``list_by_resource_group(rg, include_slots=True)`` per resource group that holds sites, and
``list_slots`` only where that group list fails for a reason other than access. Paging,
retries and ``Retry-After`` are azure-core's; we only guard against a ``nextLink`` loop, and
against a ``nextLink`` off the ARM endpoint (refused, see :mod:`shared.azure.links`).
"""

from __future__ import annotations

import functools
import logging
import threading
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from azure.core.credentials import TokenCredential
from azure.core.exceptions import AzureError, HttpResponseError
from azure.mgmt.resource.subscriptions import SubscriptionClient
from azure.mgmt.web import WebSiteManagementClient

from ..core.config import Settings
from ..core.models import InventoryError, SiteRecord, valid_text
from ..core.names import fold
from .arm_errors import ForeignLinkError, RedirectRefusedError
from .group_apps import GroupApps
from .http import client_kwargs, pooled_session
from .links import pinned_client_kwargs
from .paging import ReadPacer, _raw, guarded_pages, guarded_records, raw_json_pages
from .sites import confirms_gone, describe_error, site_record
from .threads import NO_CONTEXT, HandOff, ThreadInit, executor

log = logging.getLogger(__name__)

SKIPPED_SUBSCRIPTION_STATES = {"disabled", "deleted"}
#: includeSlots group lists of one subscription in flight at once (paced by :class:`ReadPacer`).
GROUP_LIST_CONCURRENCY = 4


def arm_connections(concurrency: int) -> int:
    """Threads that may use the ARM session at once: per audit thread, its own list and its
    subscription's group lists (or, in a change poll, its GETs: ``GET_CONCURRENCY``, as many)."""
    return concurrency * (GROUP_LIST_CONCURRENCY + 1) + 4


@dataclass(frozen=True, slots=True)
class SubscriptionInfo:
    """A subscription the identity can see."""

    subscription_id: str
    display_name: str = ""
    state: str = ""
    tenant_id: str = ""  # its home tenant (portal links open in that directory)


def _subscription_info(raw: Mapping[str, Any]) -> SubscriptionInfo:
    """A subscription as ARM lists it, its text made valid (a display name is estate text too)."""
    return SubscriptionInfo(
        valid_text(str(raw.get("subscriptionId") or "").strip()),
        valid_text(str(raw.get("displayName") or "")),
        valid_text(str(raw.get("state") or "")),
        valid_text(str(raw.get("tenantId") or "")),
    )


class ArmInventory:
    """Lists subscriptions, sites and slots through the management SDKs."""

    source = "list"  # how its findings were read (a state row's ObservedBy; see schema.SOURCE_*)

    def __init__(self, credential: TokenCredential, settings: Settings, thread_init: ThreadInit = NO_CONTEXT) -> None:
        self._credential = credential
        self._settings = settings
        self._thread_init = thread_init
        # One connection pool for every subscription's client: a client per subscription with its own
        # transport opened new TLS connections (a handshake and a CA-bundle load each) for every one
        # of a thousand subscriptions. Sized for the audit's threads (subscriptions × group lists).
        self._session = pooled_session(arm_connections(settings.concurrency))

    def close(self) -> None:
        self._session.close()

    @property
    def _kwargs(self) -> dict[str, Any]:
        """Fresh for every client: a policy instance is linked into one pipeline (``policy.next``), so a
        retry policy shared by two clients sends one client's requests down the other's transport.
        The transport is per client too, over the shared session (``session_owner=False``: closing a
        client leaves the pool open). Every request is pinned to the ARM endpoint (no token leaves it,
        no redirect is followed)."""
        return {
            "base_url": self._settings.arm_endpoint,
            "credential_scopes": [self._settings.arm_scope],
            **pinned_client_kwargs(self._settings.arm_endpoint),
            **client_kwargs(
                self._settings.retry_total, self._settings.http_timeout, self._session, session_owner=False
            ),
        }

    def subscriptions(self) -> list[SubscriptionInfo]:
        """Every subscription to audit: ``AUDIT_SUBSCRIPTIONS`` if set, else all listable ones.

        Disabled and deleted subscriptions cannot be read and are skipped with a note.
        Raises when the list itself cannot be read: then the run audits nothing and must fail.
        """
        if self._settings.subscriptions:
            return self._named(self._settings.subscriptions)
        client = SubscriptionClient(self._credential, **self._kwargs)
        found: dict[str, SubscriptionInfo] = {}
        with client:
            for item in guarded_pages(client.subscriptions.list(), "subscription list"):
                raw = _raw(item)
                info = _subscription_info(raw)
                if not info.subscription_id:
                    continue
                if info.state.lower() in SKIPPED_SUBSCRIPTION_STATES:
                    log.info(
                        "Skipping subscription %s (%s): state is %s",
                        info.subscription_id,
                        info.display_name,
                        info.state,
                    )
                    continue
                found.setdefault(fold(info.subscription_id), info)
        return list(found.values())

    def _named(self, subscription_ids: Iterable[str]) -> list[SubscriptionInfo]:
        """The configured subscriptions with their display names (one GET each, a few at a time).

        The name is only a label for people: a subscription whose GET fails keeps an empty name and
        is audited all the same (its scan reports what is wrong with it).
        """

        def named(client: SubscriptionClient, subscription_id: str) -> SubscriptionInfo:
            try:
                raw = _raw(client.subscriptions.get(subscription_id))
            except AzureError as exc:
                log.info("No display name for subscription %s: %s", subscription_id, describe_error(exc)[0])
                return SubscriptionInfo(subscription_id)
            return replace(_subscription_info(raw), subscription_id=subscription_id)

        with (
            SubscriptionClient(self._credential, **self._kwargs) as client,
            executor(self._settings.concurrency, "subs", self._thread_init) as pool,
        ):
            return list(pool.map(functools.partial(named, client), subscription_ids))

    def confirm_empty(self, subscription_id: str) -> InventoryError | None:
        """ARM's own site list is authoritative: an empty list means no sites (nothing to confirm)."""
        return None

    def confirm_missing(self, subscription_id: str, resource_ids: Sequence[str]) -> Iterator[Found]:
        """ARM's own lists are authoritative: what a complete listing does not show is gone."""
        return iter(())

    def reread(self, subscription_id: str, resource_ids: Sequence[str]) -> Iterator[Found]:
        """ARM's own lists are as fresh as a GET: nothing to read again."""
        return iter(())

    def lists_any_site(self, subscription_id: str) -> bool:
        """One cheap read: does the first page of the subscription's site list hold anything?
        Raises the SDK's error when the list cannot be read."""
        with self.web_client(subscription_id) as web:
            pages = raw_json_pages(web.web_apps.list()).by_page()
            first = next(iter(pages), None)
            return first is not None and any(True for _ in first)

    def web_client(self, subscription_id: str) -> WebSiteManagementClient:
        return WebSiteManagementClient(self._credential, subscription_id, **self._kwargs)

    def scan(self, subscription_id: str) -> Iterator[SiteRecord | InventoryError]:
        """Yield every site and slot of one subscription, and an error per unreadable scope.

        A failure of the subscription-wide list yields one error for the subscription; a
        failure in one resource group or one slot list yields an error for that scope only.
        Items come as listed: a resource two lists show comes twice (the first sighting is the
        one audited, see :func:`_scan`), and owners are not set yet (``core.owners.set_owners``).
        """
        with self.web_client(subscription_id) as web:
            yield from _scan(web, subscription_id, self._thread_init)


#: What listing a subscription yields: an audited site or slot, or an ERROR for a scope or an item.
Found = SiteRecord | InventoryError


def found_key(found: Found) -> str:
    """The key a found item is deduplicated by, as ARM compares ids (a record's id, an error's scope)."""
    return found.key if isinstance(found, SiteRecord) else fold(found.scope_id)


def _scan(web: WebSiteManagementClient, subscription_id: str, thread_init: ThreadInit = NO_CONTEXT) -> Iterator[Found]:
    """The subscription-wide site list, and the group lists started *while* it pages.

    Reads are bounded by ARM's bucket (25 a second after the first 250), and paging the site list
    alone runs well under that rate, so group lists start as soon as a page names a new group,
    :data:`GROUP_LIST_CONCURRENCY` at a time under the subscription's :class:`ReadPacer`; their
    results follow the site list in discovery order. At most :data:`GROUP_LISTS_AHEAD` group lists
    are started and not yet yielded, and each hands over its items page by page through a queue of
    :data:`GROUP_PAGES_AHEAD` pages (a list waits for room). A group that falls back to per-app slot
    lists waits for the end of the site list, when all of its apps are known (:class:`GroupApps`).

    Every item becomes a record or an ERROR for that item alone, as it is listed: a resource two
    lists show (a group list repeats its group's sites) is yielded by each, the site list's first,
    and the pipeline keeps the first sighting. Nothing here remembers the subscription's resources:
    what the scan holds is bounded by the settings above, the page size and the number of groups.
    """
    scan = _SubscriptionScan(web, subscription_id, thread_init)
    try:
        yield from scan.site_list()
        yield from scan.group_lists()
    finally:
        scan.close()


#: Group lists started and not yet yielded, per subscription (the ones beyond wait their turn).
GROUP_LISTS_AHEAD = 2 * GROUP_LIST_CONCURRENCY
#: Pages a started group list may read ahead of what the scan has yielded.
GROUP_PAGES_AHEAD = 2
#: Items handed over at once by a group list (ARM's pages are at most this long).
GROUP_PAGE_ITEMS = 100


class _SubscriptionScan:
    """The state of one subscription's listing (see :func:`_scan`)."""

    def __init__(self, web: WebSiteManagementClient, subscription_id: str, thread_init: ThreadInit) -> None:
        self.web = web
        self.subscription_id = subscription_id
        self.groups: dict[str, str] = {}  # folded group -> its name as listed (ARM: at most 980 groups)
        self.apps = GroupApps()
        self.pacer = ReadPacer()
        self.pool = executor(GROUP_LIST_CONCURRENCY, "groups", thread_init)
        # Started lists, in discovery order, taken off as they are yielded; groups found beyond
        # GROUP_LISTS_AHEAD wait in ``waiting`` (by name) until one is taken off.
        self.started: deque[tuple[str, HandOff[Found | _PerApp]]] = deque()
        self.waiting: deque[str] = deque()
        self.closed = threading.Event()

    def close(self) -> None:
        self.closed.set()
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.apps.close()

    def site_list(self) -> Iterator[Found]:
        try:
            what = f"site list of {self.subscription_id}"
            convert = functools.partial(_record, self.subscription_id)
            for found in guarded_records(self.web.web_apps.list(), what, convert, self.pacer):
                if isinstance(found, SiteRecord):
                    self._note_group(found)
                yield found
        except AzureError as exc:
            # The subscription is reported unreadable (its state stays untouched), but the slots of
            # the groups already seen are still audited: nothing that can be read is dropped.
            message, status = describe_error(exc)
            scope = f"/subscriptions/{self.subscription_id}"
            yield InventoryError(scope, self.subscription_id, message, status_code=status)

    def group_lists(self) -> Iterator[Found]:
        self._start_waiting()
        while self.started:
            rg, listing = self.started.popleft()
            self._start_waiting()
            for listed in listing.items():
                if isinstance(listed, _PerApp):
                    yield from _slots_per_app(self.web, self.subscription_id, rg, self.apps.of(fold(rg)))
                else:
                    yield listed

    def _note_group(self, found: SiteRecord) -> None:
        """A new group starts its list at once (or waits its turn); every site's app is noted for a
        fallback."""
        group = fold(found.resource_group)
        if group not in self.groups:
            self.groups[group] = found.resource_group
            self.waiting.append(found.resource_group)
            self._start_waiting()
        self.apps.add(group, found.app_name)

    def _start_waiting(self) -> None:
        while self.waiting and len(self.started) < GROUP_LISTS_AHEAD:
            rg = self.waiting.popleft()
            listing: HandOff[Found | _PerApp] = HandOff(self.closed, GROUP_PAGES_AHEAD, GROUP_PAGE_ITEMS)
            self.started.append((rg, listing))
            self.pool.submit(listing.run, functools.partial(self._group_list, rg))

    def _group_list(self, rg: str) -> Iterator[Found | _PerApp]:
        """One group's list, after a read token (run in a pool thread, handed over by a HandOff)."""
        self.pacer.wait()
        yield from _group_items(self.web, self.subscription_id, rg, self.pacer)


class _PerApp:
    """A group list failed in a way per-app slot lists may get around (run once its apps are known)."""


def _group_items(
    web: WebSiteManagementClient,
    subscription_id: str,
    rg: str,
    pacer: ReadPacer | None = None,
) -> Iterator[Found | _PerApp]:
    """One group's ``includeSlots`` list: its sites and slots, and unusable items as errors, page by
    page. A failure after some pages ends the list with the group's ERROR (or the
    per-app fallback): what was read is kept."""
    scope = f"/subscriptions/{subscription_id}/resourceGroups/{rg}"
    try:
        pager = web.web_apps.list_by_resource_group(rg, include_slots=True)
        yield from guarded_records(pager, f"sites of {scope}", functools.partial(_record, subscription_id), pacer)
    except (ForeignLinkError, RedirectRefusedError) as exc:  # per-app lists would not make ARM trustworthy
        yield InventoryError(scope, subscription_id, f"slots not readable: {describe_error(exc)[0]}", rg)
        return
    except HttpResponseError as exc:
        # Access denied, still throttled after azure-core's retries, or not found: per-app lists would
        # only multiply the calls that cannot succeed, so the group is reported unreadable. A 404 is
        # never read as "the group is gone": whatever its code (ResourceGroupNotFound, SubscriptionNotFound,
        # none), the sites the site list showed in it exist, and their slots must not be retired.
        if exc.status_code in (401, 403, 404, 429):
            message, status = describe_error(exc)
            yield InventoryError(scope, subscription_id, f"slots not readable: {message}", rg, status)
            return
        log.warning("Slot list of %s failed (%s); falling back to per-app slot lists", scope, exc.status_code)
        yield _PerApp()
        return
    except AzureError as exc:
        log.warning("Slot list of %s failed (%s); falling back to per-app slot lists", scope, type(exc).__name__)
        yield _PerApp()
        return


def _record(subscription_id: str, item: Any) -> Found:
    """A listed item as a record or an item ERROR."""
    return site_record(_raw(item), subscription_id)


def _slots_per_app(
    web: WebSiteManagementClient,
    subscription_id: str,
    rg: str,
    apps: list[str],
) -> Iterator[Found]:
    for app in apps:
        scope = f"/subscriptions/{subscription_id}/resourceGroups/{rg}/providers/Microsoft.Web/sites/{app}/slots"
        try:
            pager = web.web_apps.list_slots(rg, app)
            listed = list(guarded_records(pager, scope, functools.partial(_record, subscription_id)))
        except AzureError as exc:
            if confirms_gone(exc):  # the site's own ResourceNotFound; any other 404 is an ERROR below
                log.info("Site %s disappeared between the site list and its slot list", scope)
                continue
            message, status = describe_error(exc)
            yield InventoryError(scope, subscription_id, f"slots not readable: {message}", rg, status)
            continue
        yield from listed
