"""The change poll: within minutes, re-audit exactly the apps and slots whose settings changed.

Every ``AUDIT_CHANGES_SCHEDULE`` (default every 10 minutes) one tenant-wide Resource Graph query
asks the ``resourcechanges`` table which ``microsoft.web/sites`` and ``microsoft.web/sites/slots``
changed since the watermark. The change records are only a hint: each named resource is read
again through ARM (a GET of the site or slot, the truth), evaluated by the same pure core with the
same exemptions, and written as a *change run* (``Kind = changes`` in the runs table and the
RunSummary event): its result rows, its state and its NewFailure events, through the same
pipeline as the nightly run. A resource whose GET answers 404 is retired (a deleted site takes
its slots); one that cannot be read gets an ERROR row.

The watermark lives in the runs table. It moves to the poll's start only when every change was
handled, and each poll looks back a margin before it (``AUDIT_CHANGES_OVERLAP_MINUTES``) because
Resource Graph is eventually consistent: a change that shows up late is still seen, and a change
seen twice is harmless (the state model never alerts twice). A poll with no change costs one
Resource Graph request and writes no run. The poll shares the nightly run's lease, and the
nightly run waits for a poll rather than skip the night (``ledger.py``). The nightly sweep stays
the ground truth for whatever the change feed misses.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from azure.core.credentials import TokenCredential
from azure.core.exceptions import AzureError, ServiceRequestError, ServiceResponseError
from azure.mgmt.resourcegraph import ResourceGraphClient

from .arm_ids import SiteId, parse_site_id
from .clock import Clock, host_clock
from .config import Settings
from .errors import ArmIdError, RunInProgressError, one_line
from .exemptions import load_exemptions
from .identity import build_credential
from .inventory import ArmInventory, SubscriptionInfo
from .ledger import POLL_DEADLINE_SECONDS, RunLedger, RunSummary
from .models import GoneRecord, InventoryError, SiteRecord, valid_text
from .names import fold
from .owners import OwnerResolver, owner_from_tags
from .pipeline import Checkpoint, RunContext, SubscriptionPipeline
from .plan import tally
from .resourcegraph import graph_client, next_skip_token, query_page, quota_wait
from .schema import WATERMARK_PARTITION, WATERMARK_ROW, refused_result_row
from .sites import confirms_gone, describe_error, site_record
from .store import TableStore
from .threads import NO_CONTEXT, ThreadInit, executor, ordered_map
from .when import as_utc

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


#: Change records re-listed by the overlap are recognised by a fingerprint kept in the watermark row:
#: 12 hex digits each, in up to this many string properties of this many (under 32K characters).
HANDLED_PROPERTIES, HANDLED_PER_PROPERTY = 12, 2400
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


# -- the feed ----------------------------------------------------------------------------------------
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


# -- the targeted inventory --------------------------------------------------------------------------
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


# -- the watermark -----------------------------------------------------------------------------------
class Watermark:
    """Where the next poll starts reading, in Resource Graph's own clock (its change times).

    After a poll it is the latest change time the poll listed, when every change it listed was
    handled; while some change was left for the next poll (not read, or deferred to an unfinished
    nightly run), just before the earliest such change, so the next poll lists it again. The
    records of the changes handled in the overlap window are remembered by fingerprint, so listed
    again they are not read again, and with each change left over how many polls read it in vain.
    The row is written only while it is the one this poll read (its ETag): two polls never step
    back each other's watermark. Before any poll it starts an overlap margin before the baseline.
    """

    def __init__(self, store: TableStore, overlap: timedelta) -> None:
        self.store = store
        self.overlap = overlap
        self.row: Any | None = store.get(store.runs, WATERMARK_PARTITION, WATERMARK_ROW)

    def since(self, fallback: datetime) -> datetime:
        mark = as_utc((self.row or {}).get("ChangesThrough"))
        return (mark or fallback) - self.overlap

    def handled(self) -> set[str]:
        row = self.row or {}
        return {fp for i in range(HANDLED_PROPERTIES) for fp in str(row.get(f"Handled{i}") or "").split()}

    def attempts(self) -> dict[str, int]:
        """Folded ids a poll could not read, and how many polls tried."""
        out: dict[str, int] = {}
        for item in str((self.row or {}).get("Retrying") or "").split():
            digest, _, count = item.partition(":")
            out[digest] = int(count or 0)
        return out

    def advance(
        self, changes: Sequence[Change], left: Mapping[str, bool], retried: Mapping[str, int]
    ) -> datetime | None:
        """Write the watermark after a poll that listed ``changes`` and left ``left`` (folded ids:
        ``True`` when the deadline, not a failure, left it); returns it (``None``: unchanged)."""
        times = [c.at for c in changes if c.at is not None]
        pending = [c for c in changes if fold(c.resource_id) in left]
        previous = as_utc((self.row or {}).get("ChangesThrough"))
        if pending:
            earliest = min((c.at for c in pending if c.at is not None), default=previous)
            through = earliest - timedelta(microseconds=1) if earliest else previous
        else:
            through = max(times, default=previous)
        if through is None:
            return None
        horizon = through - self.overlap
        handled = sorted({fingerprint(c) for c in changes if c not in pending and c.at is not None and c.at > horizon})
        handled = handled[-HANDLED_PROPERTIES * HANDLED_PER_PROPERTY :]  # past the cap: re-read, harmlessly
        entity: dict[str, Any] = {
            "PartitionKey": WATERMARK_PARTITION,
            "RowKey": WATERMARK_ROW,
            "ChangesThrough": through,
        }
        for i in range(HANDLED_PROPERTIES):
            entity[f"Handled{i}"] = " ".join(handled[i * HANDLED_PER_PROPERTY : (i + 1) * HANDLED_PER_PROPERTY])
        entity["Retrying"] = " ".join(
            f"{_digest(key)}:{retried.get(_digest(key), 0) + (0 if deadline else 1)}"
            for key, deadline in sorted(left.items())
        )
        if self.store.write_if_unchanged(self.store.runs, entity, self.row):
            return through
        log.info("Change poll: another poll moved the watermark meanwhile; it stays where that poll put it")
        return None


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:12]


# -- the poll ----------------------------------------------------------------------------------------
@dataclass
class PollResult:
    """What one poll did (logged by the timer, asserted by tests, counted by the benchmark)."""

    since: datetime
    changes: int = 0
    resources: int = 0
    already_handled: int = 0  # change records an earlier poll handled (listed again by the overlap)
    graph_requests: int = 0
    arm_gets: int = 0
    summary: RunSummary | None = None
    watermark: datetime | None = None
    left: int = 0  # resources left for the next poll (not read this time, or the nightly run's to finish)


class ChangePoll:
    """One poll. Construct, then :meth:`execute`."""

    def __init__(
        self,
        settings: Settings,
        store: TableStore,
        feed: ChangeFeed,
        arm: ArmInventory,
        *,
        now: Callable[[], datetime] | None = None,
        clock: Clock | None = None,
        thread_init: ThreadInit = NO_CONTEXT,
        checkpoint: Checkpoint | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.feed = feed
        self.arm = arm
        self.clock = host_clock(now, clock)
        self.now = self.clock.now
        self.thread_init = thread_init
        self.checkpoint: Checkpoint = checkpoint or (lambda stage, sub: None)
        store.fallbacks[store.results.table_name] = refused_result_row

    def execute(self) -> PollResult:
        started = self.now()
        self.store.ensure_tables()
        baseline = self.store.baseline()
        if baseline is None:
            log.info("Change poll: no nightly baseline has completed yet; changes are left to the nightly run")
            return PollResult(started)
        watermark = Watermark(self.store, timedelta(minutes=self.settings.changes_overlap_minutes))
        since = watermark.since(as_utc(baseline.get("StartedAt")) or started)
        result = PollResult(since)
        changes = self.feed.since(since)
        handled = watermark.handled()
        fresh = [c for c in changes if fingerprint(c) not in handled]
        result.changes, result.already_handled = len(changes), len(changes) - len(fresh)
        result.graph_requests = self.feed.requests
        changed = by_subscription(fresh)
        result.resources = sum(len(ids) for ids in changed.values())
        if not changed:
            result.watermark = watermark.advance(changes, {}, {})
            return result
        retried = watermark.attempts()
        attempts = {key: retried.get(_digest(key), 0) for ids in changed.values() for key in map(fold, ids)}
        deadline = self.clock.monotonic() + POLL_DEADLINE_SECONDS
        inventory = ChangedResources(
            self.arm,
            changed,
            self.settings,
            self.thread_init,
            attempts=attempts,
            stop=lambda: self.clock.monotonic() > deadline,
            for_poll=True,
        )
        result.summary, left = self._run(started, deadline, inventory, changes, watermark, retried, result)
        result.arm_gets = inventory.gets
        result.left = len(left)
        return result

    def _run(
        self,
        started: datetime,
        deadline: float,
        inventory: ChangedResources,
        changes: Sequence[Change],
        watermark: Watermark,
        retried: Mapping[str, int],
        result: PollResult,
    ) -> tuple[RunSummary, dict[str, bool]]:
        """A change run: the pipeline over the changed resources only, under the shared lease; the
        watermark is written under it too, before it is released."""
        ledger = RunLedger(self.settings, self.store, self.clock, self.thread_init, kind="changes")

        def run(summary: RunSummary) -> dict[str, bool]:
            context = RunContext(
                summary,
                load_exemptions(self.store),
                {},
                {},
                deadline,
                targeted=True,
                unfinished_nightly=ledger.unfinished_nightly(started),
            )
            pipeline = self._pipeline(inventory, context)
            try:
                ids = [sub.subscription_id for sub in inventory.subscriptions()]
                with executor(self.settings.concurrency, "audit", self.thread_init) as pool:
                    results = list(pool.map(pipeline.audit, ids))
                pipeline.drain()
            finally:
                pipeline.close()
            summary.transactions, summary.partitions = pipeline.transactions, pipeline.partitions
            tally(summary, results)
            left = {**inventory.unread, **dict.fromkeys(pipeline.deferred, True)}
            if left:
                log.info("Change poll: %d changed resources left for the next poll", len(left))
            result.watermark = watermark.advance(changes, left, retried)
            return left

        return ledger.run(started, run, what="change run")

    def _pipeline(self, inventory: ChangedResources, context: RunContext) -> SubscriptionPipeline:
        return SubscriptionPipeline(
            self.settings,
            self.store,
            inventory,
            context,
            now=self.now,
            monotonic=self.clock.monotonic,
            checkpoint=self.checkpoint,
            thread_init=self.thread_init,
        )


def poll_changes(
    settings: Settings,
    *,
    credential: TokenCredential | None = None,
    thread_init: ThreadInit = NO_CONTEXT,
    now: Callable[[], datetime] | None = None,
    clock: Clock | None = None,
    checkpoint: Checkpoint | None = None,
) -> PollResult:
    """Run one change poll with the configured identity and store. Raises
    :class:`RunInProgressError` while the nightly run (or another poll) holds the lease."""
    credential = credential or build_credential(settings.client_id)
    store = TableStore(settings, None if settings.table_connection_string else credential)
    feed = ChangeFeed(credential, settings)
    arm = ArmInventory(credential, settings, thread_init)
    try:
        return ChangePoll(
            settings, store, feed, arm, clock=host_clock(now, clock), thread_init=thread_init, checkpoint=checkpoint
        ).execute()
    finally:
        arm.close()
        feed.close()
        store.close()


__all__ = ["CHANGES_QUERY", "ChangeFeed", "ChangePoll", "PollResult", "RunInProgressError", "poll_changes"]
