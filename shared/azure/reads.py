"""Resources read one GET each: the change poll's inventory, and the nightly run's when it asks ARM
about resources Resource Graph answered for (``resourcegraph.py``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from typing import Any

from azure.core.exceptions import AzureError, ServiceRequestError, ServiceResponseError

from ..core.arm_ids import SiteId, parse_site_id
from ..core.config import Settings
from ..core.errors import ArmIdError, one_line
from ..core.models import GoneRecord, InventoryError, SiteRecord
from ..core.names import fold
from ..core.owners import OwnerResolver, owner_from_tags
from .inventory import ArmInventory, SubscriptionInfo
from .sites import confirms_gone, describe_error, site_record
from .threads import NO_CONTEXT, ThreadInit, executor, ordered_map

log = logging.getLogger(__name__)


#: GETs of one subscription's changed resources in flight at once.
GET_CONCURRENCY = 4


#: Polls that try a resource whose GET keeps failing transiently, before it becomes an ERROR row.
MAX_ATTEMPTS = 6


#: HTTP statuses worth another try by the next poll (throttling, timeouts, the service's own errors).
TRANSIENT_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


#: What the ERROR row of a resource the poll could not read tells the security team to do.
POLL_ERROR_REMEDIATION = (
    "The change poll does not read this resource again for this change: the nightly run audits it (and shows "
    "this ERROR while it stays unreadable). If access was denied, check that the audit identity has its reader "
    "role on this scope (infra/tenant/audit-reader-role.bicep)."
)


class ChangedResources:
    """Resources read one GET each: the change poll's inventory (``for_poll``), and the nightly
    run's when it asks ARM about resources Resource Graph answered for (see ``resourcegraph.py``).
    For those, a resource ARM says no longer exists is a :class:`GoneRecord` and any failure an
    ERROR. For the poll:

    At most one GET per changed resource: a resource is read once however many records name it,
    a slot's owner comes from its own tags, else from its site when the site changed too (its one
    GET), else from what the last nightly run stored (the pipeline fills it in: no GET of a site
    that did not change). What could not be read *this time* is left for the next poll, not
    written: a transient failure (throttled, 5xx, timeout, connection) or the poll's deadline;
    after :data:`MAX_ATTEMPTS` polls a resource that still fails is an ERROR row and left to the
    nightly run. An answer that holds for good (403, another 404 than the resource's own) is an
    ERROR row at once; a resource that ARM says no longer exists is left to the nightly run, which
    sees the whole subscription (the poll never retires anything: whether an app deleted and
    re-created under its name is a new failure must not depend on when polls ran).
    """

    source = "get"

    def __init__(
        self,
        arm: ArmInventory,
        changed: Mapping[str, list[str]],
        settings: Settings,
        thread_init: ThreadInit = NO_CONTEXT,
        *,
        attempts: Mapping[str, int] | None = None,
        stop: Callable[[], bool] = lambda: False,
        for_poll: bool = False,
    ) -> None:
        self._for_poll = for_poll
        self._arm = arm
        self._changed = changed
        self._settings = settings
        self._thread_init = thread_init
        self._attempts = attempts or {}
        self._stop = stop
        self._lock = threading.Lock()
        self._got: dict[str, Future[Mapping[str, Any]]] = {}
        self._changed_keys = {fold(rid) for ids in changed.values() for rid in ids}
        self.gets = 0
        #: Folded ids read in vain this time (left for the next poll), with whether it was the deadline.
        self.unread: dict[str, bool] = {}

    def subscriptions(self) -> list[SubscriptionInfo]:
        return [SubscriptionInfo(sub) for sub in self._changed]

    def confirm_empty(self, subscription_id: str) -> InventoryError | None:
        return None

    def confirm_missing(self, subscription_id: str, resource_ids: Sequence[str]) -> Iterator[SiteRecord]:
        """Never asked: a targeted read retires nothing."""
        return iter(())

    def close(self) -> None:
        """The ARM inventory is the caller's."""

    def scan(self, subscription_id: str) -> Iterator[SiteRecord | InventoryError | GoneRecord]:
        """The changed resources of one subscription, read :data:`GET_CONCURRENCY` at a time (in order)."""
        ids = self._changed.get(subscription_id, [])
        with (
            self._arm.web_client(subscription_id) as web,
            executor(GET_CONCURRENCY, "gets", self._thread_init) as pool,
        ):
            read = lambda rid: list(self._read(web, subscription_id, rid))  # noqa: E731
            for found in ordered_map(pool, read, ids, 2 * GET_CONCURRENCY):
                yield from found

    def reread(self, subscription_id: str, resource_ids: Sequence[str]) -> Iterator[SiteRecord]:
        """Never asked: what this reads is the fresh answer."""
        return iter(())

    def _read(
        self, web: Any, subscription_id: str, resource_id: str
    ) -> Iterator[SiteRecord | InventoryError | GoneRecord]:
        try:
            site = parse_site_id(resource_id)
        except ArmIdError as exc:
            yield InventoryError(resource_id, subscription_id, f"change record names no site or slot: {exc}")
            return
        if self._stop():
            self._leave(resource_id, deadline=True)
            return
        try:
            raw = self._get(web, site)
        except AzureError as exc:
            yield from self._unreadable(resource_id, subscription_id, site, exc)
            return
        record = site_record(raw, subscription_id)
        if not isinstance(record, SiteRecord):
            yield record
            return
        owners = OwnerResolver(self._settings.owner_tags)
        if record.slot and not owner_from_tags(record.tags, owners.names):
            owners.learn_owner(
                record.subscription_id, record.resource_group, record.app_name, self._site_owner(web, site)
            )
        yield owners.resolve(record)

    def _unreadable(
        self, resource_id: str, subscription_id: str, site: SiteId, exc: AzureError
    ) -> Iterator[InventoryError | GoneRecord]:
        message, status = describe_error(exc)
        if not self._for_poll:
            if confirms_gone(exc):  # only the resource's own ResourceNotFound: any other 404 is an ERROR
                yield GoneRecord(resource_id, subscription_id)
            else:
                yield InventoryError(
                    resource_id, subscription_id, f"not readable: {message}", site.resource_group, status
                )
            return
        if confirms_gone(exc):  # deleted: the nightly run, which sees the whole subscription, retires it
            log.info("Change poll: %s no longer exists; the nightly run retires it", resource_id)
            return
        transient = isinstance(exc, ServiceRequestError | ServiceResponseError) or status in TRANSIENT_STATUSES
        attempt = self._attempts.get(fold(resource_id), 0) + 1
        if transient and attempt < MAX_ATTEMPTS:
            log.info("Change poll: %s not read (%s); the next poll reads it again", resource_id, message)
            self._leave(resource_id, deadline=False)
            return
        tried = f" (the change poll tried {attempt} times)" if transient else ""
        yield InventoryError(
            resource_id,
            subscription_id,
            f"not readable: {message}{tried}",
            site.resource_group,
            status,
            remediation=POLL_ERROR_REMEDIATION,
        )

    def _leave(self, resource_id: str, *, deadline: bool) -> None:
        with self._lock:
            self.unread[fold(resource_id)] = deadline

    def _get(self, web: Any, site: SiteId) -> Mapping[str, Any]:
        """One GET per resource per poll, whoever asks (a changed site is also its slots' owner)."""
        slot_id = f"/subscriptions/{site.subscription_id}/resourceGroups/{site.resource_group}/providers/Microsoft.Web/sites/{site.app_name}"
        key = fold(f"{slot_id}/slots/{site.slot}" if site.slot else slot_id)
        with self._lock:
            future = self._got.get(key)
            mine = future is None
            if mine:
                future = self._got[key] = Future()
                self.gets += 1
        assert future is not None
        if mine:
            raw_json: Callable[..., Any] = lambda response, _deserialized, _headers: response.http_response.json()  # noqa: E731
            try:
                if site.slot:
                    future.set_result(
                        web.web_apps.get_slot(site.resource_group, site.app_name, site.slot, cls=raw_json)
                    )
                else:
                    future.set_result(web.web_apps.get(site.resource_group, site.app_name, cls=raw_json))
            except Exception as exc:  # noqa: BLE001 - handed to whoever waits for this GET
                future.set_exception(exc)
        return future.result()

    def _site_owner(self, web: Any, slot: SiteId) -> str:
        """A slot without an owner tag takes its site's. For the poll the site is read only when it
        changed itself (its one GET); otherwise the pipeline takes the owner the nightly run stored."""
        site = SiteId(slot.subscription_id, slot.resource_group, slot.app_name)
        site_id = f"/subscriptions/{site.subscription_id}/resourceGroups/{site.resource_group}/providers/Microsoft.Web/sites/{site.app_name}"
        if self._for_poll and fold(site_id) not in self._changed_keys:
            return ""
        try:
            raw = self._get(web, site)
        except AzureError as exc:  # the site's own read says why; its slot was read
            log.info("No owner for slot %s/%s from its site: %s", slot.app_name, slot.slot, one_line(exc))
            return ""
        record = site_record(raw, site.subscription_id)
        if not isinstance(record, SiteRecord):
            return ""
        return OwnerResolver(self._settings.owner_tags).learn(record)
