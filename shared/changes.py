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
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from azure.core.credentials import TokenCredential
from azure.core.exceptions import AzureError
from azure.mgmt.resourcegraph import ResourceGraphClient

from .arm_ids import parse_site_id
from .config import Settings
from .errors import ArmIdError, AuditFailed, RunInProgressError, one_line
from .exemptions import load_exemptions
from .identity import build_credential
from .inventory import ArmInventory, SubscriptionInfo
from .ledger import RunLedger, RunSummary
from .models import GoneRecord, InventoryError, SiteRecord, valid_text
from .names import fold
from .owners import OwnerResolver
from .pipeline import Checkpoint, RunContext, SubscriptionPipeline
from .plan import tally
from .resourcegraph import graph_client, next_skip_token, query_page, quota_wait
from .schema import refused_result_row
from .sites import confirms_gone, describe_error, site_record
from .store import TableStore
from .threads import NO_CONTEXT, ThreadInit, executor, ordered_map
from .when import as_utc

log = logging.getLogger(__name__)

#: The runs-table entity that holds the watermark.
WATERMARK_PARTITION, WATERMARK_ROW = "watermark", "changes"
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
    """The pipeline's inventory for a change run: exactly the changed resources, read by GET."""

    def __init__(
        self,
        arm: ArmInventory,
        changed: Mapping[str, list[str]],
        settings: Settings,
        thread_init: ThreadInit = NO_CONTEXT,
    ) -> None:
        self._arm = arm
        self._changed = changed
        self._settings = settings
        self._thread_init = thread_init
        self._lock = threading.Lock()
        self.gets = 0

    def subscriptions(self) -> list[SubscriptionInfo]:
        return [SubscriptionInfo(sub) for sub in self._changed]

    def confirm_empty(self, subscription_id: str) -> InventoryError | None:
        return None

    def close(self) -> None:
        """The ARM inventory is the caller's."""

    def scan(self, subscription_id: str) -> Iterator[SiteRecord | InventoryError | GoneRecord]:
        """The changed resources of one subscription, read :data:`GET_CONCURRENCY` at a time (in order)."""
        owners = OwnerResolver(self._settings.owner_tags)
        ids = self._changed.get(subscription_id, [])
        with (
            self._arm.web_client(subscription_id) as web,
            executor(GET_CONCURRENCY, "gets", self._thread_init) as pool,
        ):
            read = lambda rid: list(self._read(web, subscription_id, rid, owners))  # noqa: E731
            for found in ordered_map(pool, read, ids, 2 * GET_CONCURRENCY):
                yield from found

    def _read(
        self, web: Any, subscription_id: str, resource_id: str, owners: OwnerResolver
    ) -> Iterator[SiteRecord | InventoryError | GoneRecord]:
        try:
            site = parse_site_id(resource_id)
        except ArmIdError as exc:
            yield InventoryError(resource_id, subscription_id, f"change record names no site or slot: {exc}")
            return
        try:
            raw = self._get(web, site.resource_group, site.app_name, site.slot)
        except AzureError as exc:
            if confirms_gone(exc):  # only the resource's own ResourceNotFound: any other 404 is an ERROR
                yield GoneRecord(resource_id, subscription_id)
                return
            message, status = describe_error(exc)
            yield InventoryError(resource_id, subscription_id, f"not readable: {message}", site.resource_group, status)
            return
        record = site_record(raw, subscription_id)
        if isinstance(record, SiteRecord) and record.slot and not record.owner:
            owners.learn_owner(
                record.subscription_id, record.resource_group, record.app_name, self._site_owner(web, site)
            )
        yield owners.resolve(record) if isinstance(record, SiteRecord) else record

    def _get(self, web: Any, group: str, app: str, slot: str) -> Mapping[str, Any]:
        with self._lock:
            self.gets += 1
        raw_json: Callable[..., Any] = lambda response, _deserialized, _headers: response.http_response.json()  # noqa: E731
        if slot:
            return web.web_apps.get_slot(group, app, slot, cls=raw_json)  # type: ignore[no-any-return]
        return web.web_apps.get(group, app, cls=raw_json)  # type: ignore[no-any-return]

    def _site_owner(self, web: Any, site: Any) -> str:
        """A slot without an owner tag takes its site's: one more GET, only for such slots."""
        try:
            raw = self._get(web, site.resource_group, site.app_name, "")
        except AzureError as exc:  # the Owner column stays empty; the slot itself was read
            log.info(
                "No owner for slot %s/%s: its site could not be read (%s)", site.app_name, site.slot, one_line(exc)
            )
            return ""
        record = site_record(raw, site.subscription_id)
        if not isinstance(record, SiteRecord):
            return ""
        return OwnerResolver(self._settings.owner_tags).learn(record)


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


class ChangePoll:
    """One poll. Construct, then :meth:`execute`."""

    def __init__(
        self,
        settings: Settings,
        store: TableStore,
        feed: ChangeFeed,
        arm: ArmInventory,
        *,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        thread_init: ThreadInit = NO_CONTEXT,
        checkpoint: Checkpoint | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.feed = feed
        self.arm = arm
        self.now = now
        self.thread_init = thread_init
        self.checkpoint: Checkpoint = checkpoint or (lambda stage, sub: None)
        store.fallbacks[store.results.table_name] = refused_result_row
        self._row: Mapping[str, Any] | None = None

    def execute(self) -> PollResult:
        started = self.now()
        self.store.ensure_tables()
        since = self._since(started)
        result = PollResult(since)
        if not self.store.has_any(self.store.latest):
            log.info("Change poll: no nightly baseline yet; changes are left to the first nightly run")
            self._advance(started)
            result.watermark = started
            return result
        changes = self.feed.since(since)
        handled = self._handled()
        fresh = [c for c in changes if fingerprint(c) not in handled]
        result.changes, result.already_handled = len(changes), len(changes) - len(fresh)
        result.graph_requests = self.feed.requests
        changed = by_subscription(fresh)
        result.resources = sum(len(ids) for ids in changed.values())
        if changed:
            inventory = ChangedResources(self.arm, changed, self.settings, self.thread_init)
            result.summary = self._run(started, inventory)  # raises when the run failed: no advance
            result.arm_gets = inventory.gets
        self._advance(started, changes)
        result.watermark = started
        return result

    def _watermark(self) -> Mapping[str, Any]:
        if self._row is None:
            self._row = self.store.get(self.store.runs, WATERMARK_PARTITION, WATERMARK_ROW) or {}
        return self._row

    def _handled(self) -> set[str]:
        """Fingerprints of the change records earlier polls handled that are still in the overlap
        window: seen again, they are not read again (the state model would make them no-ops anyway,
        at the price of a GET and a change run each)."""
        row = self._watermark()
        return {fp for i in range(HANDLED_PROPERTIES) for fp in str(row.get(f"Handled{i}") or "").split()}

    def _since(self, now: datetime) -> datetime:
        """Where this poll starts reading: the watermark less the overlap margin (or, before the
        first poll, the overlap margin before now)."""
        margin = timedelta(minutes=self.settings.changes_overlap_minutes)
        row = self._watermark()
        mark = as_utc(row.get("ChangesThrough"))
        return (mark or now) - margin

    def _advance(self, through: datetime, changes: Sequence[Change] = ()) -> None:
        """Move the watermark to ``through`` (every change up to it was handled), remembering the
        changes the next poll's overlap will list again."""
        horizon = through - timedelta(minutes=self.settings.changes_overlap_minutes)
        recent = sorted({fingerprint(c) for c in changes if c.at is not None and c.at > horizon})
        recent = recent[-HANDLED_PROPERTIES * HANDLED_PER_PROPERTY :]  # past the cap: re-read, harmlessly
        entity: dict[str, Any] = {
            "PartitionKey": WATERMARK_PARTITION,
            "RowKey": WATERMARK_ROW,
            "ChangesThrough": through,
        }
        for i in range(HANDLED_PROPERTIES):
            entity[f"Handled{i}"] = " ".join(recent[i * HANDLED_PER_PROPERTY : (i + 1) * HANDLED_PER_PROPERTY])
        self.store.upsert_many(self.store.runs, [entity])

    def _run(self, started: datetime, inventory: ChangedResources) -> RunSummary:
        """A change run: the pipeline over the changed resources only, under the shared lease."""
        ledger = RunLedger(self.settings, self.store, self.now, self.thread_init, kind="changes")
        summary = ledger.open(started)
        try:
            context = RunContext(
                summary,
                load_exemptions(self.store),
                {},
                {},
                time.monotonic() + self.settings.run_deadline_minutes * 60,
                targeted=True,
            )
            pipeline = SubscriptionPipeline(
                self.settings,
                self.store,
                inventory,
                context,
                now=self.now,
                checkpoint=self.checkpoint,
                thread_init=self.thread_init,
            )
            try:
                ids = [sub.subscription_id for sub in inventory.subscriptions()]
                with executor(self.settings.concurrency, "audit", self.thread_init) as pool:
                    results = list(pool.map(pipeline.audit, ids))
                pipeline.drain()
            finally:
                pipeline.close()
            summary.transactions, summary.partitions = pipeline.transactions, pipeline.partitions
            tally(summary, results)
            summary.ended_at = self.now()
            ledger.record(summary)
        except BaseException as exc:
            ledger.fail(summary, exc)
            if isinstance(exc, Exception) and not isinstance(exc, AuditFailed):
                raise AuditFailed(f"change run {summary.run_id} failed: {summary.error}") from exc
            raise
        ledger.close(summary)
        return summary


def poll_changes(
    settings: Settings,
    *,
    credential: TokenCredential | None = None,
    thread_init: ThreadInit = NO_CONTEXT,
    now: Callable[[], datetime] | None = None,
    checkpoint: Checkpoint | None = None,
) -> PollResult:
    """Run one change poll with the configured identity and store. Raises
    :class:`RunInProgressError` while the nightly run (or another poll) holds the lease."""
    credential = credential or build_credential(settings.client_id)
    store = TableStore(settings, None if settings.table_connection_string else credential)
    feed = ChangeFeed(credential, settings)
    arm = ArmInventory(credential, settings, thread_init)
    try:
        clock = {"now": now} if now else {}
        return ChangePoll(settings, store, feed, arm, thread_init=thread_init, checkpoint=checkpoint, **clock).execute()
    finally:
        arm.close()
        feed.close()
        store.close()


__all__ = ["CHANGES_QUERY", "ChangeFeed", "ChangePoll", "PollResult", "RunInProgressError", "poll_changes"]
