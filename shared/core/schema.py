"""Every table's entity shape, in one place: result rows, state rows, gone rows, the run record,
the subscription registry and exemption rows. Pure: plain data in, entity dicts out.

docs/design.md (Results: the tables) describes these; the partition layout (which PartitionKey a row
gets) is ``layout.py``'s, and what a change *means* (new failure, owed alert) is ``state.py``'s.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypedDict

from .keys import resource_key
from .models import IDENTITY_FIELDS, Finding, Status
from .names import fold
from .owners import tags_text
from .state import Transition

if TYPE_CHECKING:
    from .exemption_rules import Exemption

RUNS_PARTITION = "run"
#: Runs-table partition of the change poll's watermark and the baseline marker.
WATERMARK_PARTITION, WATERMARK_ROW, BASELINE_ROW = "watermark", "changes", "baseline"
#: Runs-table partition of the subscriptions the audit has read, to notice one that vanishes.
SUBSCRIPTIONS_PARTITION = "subscription"
EXEMPTIONS_PARTITION = "exemption"
#: Where a read entity carries its ETag, and a row to write the ETag it must still have (``None``: it
#: must not exist yet), as ``fastpaths.conditional_batch`` takes them: the OData name, never a property.
ETAG = "odata.etag"

#: How a state row's status was read (its ``ObservedBy``): a GET (the change poll's, or a check of a
#: listing), ARM's list, or Resource Graph's index, which may lag behind a GET (``pipeline.py``).
SOURCE_GET, SOURCE_LIST, SOURCE_GRAPH = "get", "list", "graph"

#: A copy of a state row other than the current one: ``(PartitionKey, RowKey, resource key, ETag)``.
StateCopy = tuple[str, str, str, str]


@dataclass(frozen=True, slots=True)
class DeferredRow:
    """A row queued for a partition and rendered (``render(key)``) only when its batch is sent.

    A large subscription's state rows wait in its own shards' partial batches until later slices
    fill them (``run/writer.py``): rendered at once, each waited as a dict of some thirty fields
    (about 1.3 KB), and the rows waiting grow with the subscriptions being written (their shards),
    not with a setting. Rendering is pure, from a plan that is held until the rows are stored
    anyway, so a row rendered late is the row rendered early."""

    partition: str
    key: str
    render: Callable[[str], dict[str, Any]]


#: What the state model (``state.py``) reads from a resource's last-known state row.
STATE_MODEL_FIELDS = (
    "PartitionKey",
    "RowKey",
    "Status",
    "FirstFailedAt",
    "LastRunId",
    "PreviousStatus",
    "PreviousFirstFailedAt",
    "PreviousGone",
    "Gone",
    "AlertPending",
    "AlertRunId",
    "AlertSentAt",
    "AlertSentByRunId",
    "Fence",
    "ObservedBy",
)


# -- results table ---------------------------------------------------------------------------------
def result_row(
    run_id: str,
    finding: Finding,
    change: Transition | None,
    audited_at: datetime,
    row_key: str,
    *,
    exemption_request: str = "",
    subscription_name: str = "",
) -> dict[str, Any]:
    """One row of the results table (the PartitionKey is set by the results writer: rows are
    packed into run partitions)."""
    slot_kind = "slot" if finding.slot else ("site" if finding.app_name else "scope")
    return {
        "PartitionKey": "",
        "RowKey": row_key,
        "RunId": run_id,
        **finding.identity(),
        "SubscriptionName": subscription_name,
        "Owner": finding.owner,
        "Tags": tags_text(finding.tags),
        "ResourceType": slot_kind,
        "State": finding.state,
        "Location": finding.location,
        "ClientCertEnabled": finding.client_cert_enabled,
        "ClientCertMode": finding.client_cert_mode,
        "ExclusionPaths": ", ".join(finding.exclusion_paths),
        "Status": finding.status.value,
        "Reason": finding.reason,
        "Remediation": finding.remediation,
        "Exemption": finding.exemption,
        "ExemptionRequest": exemption_request,
        "HttpsOnly": finding.https_only,
        "PublicNetworkAccess": finding.public_network_access or "",
        "NewFailure": bool(change and change.new_failure),
        "PreviousStatus": change.previous_status if change else "",
        "FirstFailedAt": change.first_failed_at if change else "",
        "AuditedAt": audited_at,
    }


class RowIdentity(TypedDict):
    """What names the resource of a result row (see :func:`row_identity`)."""

    resource_id: str
    subscription_id: str
    resource_group: str
    app_name: str
    slot: str


def row_identity(row: Mapping[str, Any]) -> RowIdentity:
    """The resource a result row is about, as keyword arguments of a :class:`Finding` (or a report's
    change): its id, subscription, group, app and slot, each ``""`` when absent."""
    return RowIdentity(
        resource_id=str(row.get("ResourceId") or ""),
        subscription_id=str(row.get("SubscriptionId") or ""),
        resource_group=str(row.get("ResourceGroup") or ""),
        app_name=str(row.get("AppName") or ""),
        slot=str(row.get("Slot") or ""),
    )


def finding_from_row(row: Mapping[str, Any]) -> Finding:
    """The finding a result row records (what :func:`result_row` wrote): a resumed run replays its
    earlier attempt's decision about a resource from it, as that attempt saw the resource."""
    tags: Any = {}
    try:
        tags = json.loads(str(row.get("Tags") or "{}"))
    except ValueError:
        tags = {}
    paths = str(row.get("ExclusionPaths") or "")
    https_only = row.get("HttpsOnly")
    return Finding(
        **row_identity(row),
        kind=str(row.get("Kind") or ""),
        state=str(row.get("State") or ""),
        location=str(row.get("Location") or ""),
        client_cert_enabled=bool(row.get("ClientCertEnabled")),
        client_cert_mode=str(row.get("ClientCertMode") or ""),
        exclusion_paths=tuple(p for p in paths.split(", ") if p),
        status=Status(str(row.get("Status"))),
        reason=str(row.get("Reason") or ""),
        remediation=str(row.get("Remediation") or ""),
        https_only=https_only if isinstance(https_only, bool) else None,
        public_network_access=str(row.get("PublicNetworkAccess") or "") or None,
        exemption=str(row.get("Exemption") or ""),
        tags=tuple(sorted((str(k), str(v)) for k, v in tags.items())) if isinstance(tags, dict) else (),
        owner=str(row.get("Owner") or ""),
    )


#: The result-row columns a report exports, in order: ``report --format csv`` and each ``results``
#: item of ``--format json`` (a contract for tooling). Every other result-row property
#: (``PartitionKey``, ``RowKey``, table metadata) stays in the table.
REPORT_COLUMNS: tuple[str, ...] = (
    "RunId",
    "Status",
    "NewFailure",
    "PreviousStatus",
    "FirstFailedAt",
    "SubscriptionId",
    "SubscriptionName",
    "ResourceGroup",
    "AppName",
    "Slot",
    "Owner",
    "Kind",
    "ResourceType",
    "ClientCertEnabled",
    "ClientCertMode",
    "ExclusionPaths",
    "Reason",
    "Remediation",
    "Exemption",
    "ExemptionRequest",
    "HttpsOnly",
    "PublicNetworkAccess",
    "Tags",
    "Location",
    "State",
    "AuditedAt",
    "ResourceId",
)


def refused_result_row(row: dict[str, Any], refusal: str) -> dict[str, Any]:
    """An ERROR row in place of a result row the store refused: the resource keeps a visible row
    that says why, and the rest of its batch is stored normally."""
    return {
        **{k: row[k] for k in ("PartitionKey", "RowKey", "RunId", *IDENTITY_FIELDS, "SubscriptionName") if k in row},
        "ResourceType": row.get("ResourceType", ""),
        "Status": Status.ERROR.value,
        "Reason": f"The results store refused this resource's row ({refusal[:500]}); its verdict was "
        f"{row.get('Status', '?')}.",
        "Remediation": "Look at the resource's properties in the portal; the next run tries again.",
        "NewFailure": False,
        "AuditedAt": row.get("AuditedAt"),
    }


# -- last-known state table ------------------------------------------------------------------------
def state_row(
    finding: Finding,
    change: Transition,
    state: Mapping[str, Any] | None,
    run_id: str,
    now_iso: str,
    row_key: str,
    partition_key: str,
    *,
    alerted: bool = False,
    fence: int = 0,
    observed_by: str = SOURCE_LIST,
) -> dict[str, Any]:
    """The last-known state row after this run saw ``finding`` (stored in ``partition_key``,
    which ``layout.state_partition`` chooses). ``fence`` is the writer's lease holding: of two
    copies of a row, the one with the larger ``Fence`` was written later (``store.py``).

    ``AlertPending`` records that a ``NewFailure`` event is owed: the row is first written with it
    set, and marked sent (``alerted``: ``AlertPending`` false, ``AlertSentAt``) just before the
    event is logged, so a crash anywhere before the mark leaves the alert owed to the next run.
    """
    previous_gone = (
        bool(state.get("PreviousGone")) if change.already_advanced and state else bool(state and state.get("Gone"))
    )
    sent = alerted and change.alert_pending
    sent_by = str(state.get("AlertSentByRunId") or "") if state and change.alert_sent_at else ""
    return {
        "PartitionKey": partition_key,
        "RowKey": row_key,
        **finding.identity(),
        "Owner": finding.owner,  # a change poll reading a slot alone takes its owner from here
        "Status": finding.status.value,
        "ClientCertMode": finding.client_cert_mode,
        "FirstFailedAt": change.first_failed_at,
        "LastRunId": run_id,
        "LastSeenAt": now_iso,
        "PreviousStatus": change.previous_status,
        "PreviousFirstFailedAt": _previous_first_failed(state, change),
        "PreviousGone": previous_gone,
        "Gone": False,
        "GoneAt": "",
        "AlertPending": change.alert_pending and not sent,
        "AlertRunId": change.alert_run_id,
        "AlertSentAt": now_iso if sent else change.alert_sent_at,
        "AlertSentByRunId": run_id if sent else sent_by,
        "Fence": fence,
        "ObservedBy": observed_by,
    }


def _previous_first_failed(state: Mapping[str, Any] | None, change: Transition) -> str:
    if not state:
        return ""
    if change.already_advanced:
        return str(state.get("PreviousFirstFailedAt") or "")
    return "" if state.get("Gone") else str(state.get("FirstFailedAt") or "")


def gone_row(state: Mapping[str, Any], run_id: str, now_iso: str, row_key: str, fence: int = 0) -> dict[str, Any]:
    """Retire a resource that a fully read subscription no longer lists (an owed alert about a
    resource that no longer exists is dropped with it), in place, under its key ``row_key``."""
    entity = {k: v for k, v in state.items() if not k.startswith("odata")}
    entity.update(
        RowKey=row_key,
        PreviousStatus=str(state.get("Status") or ""),
        PreviousFirstFailedAt=str(state.get("FirstFailedAt") or ""),
        PreviousGone=False,
        Gone=True,
        GoneAt=now_iso,
        LastRunId=run_id,
        FirstFailedAt="",
        AlertPending=False,
        Fence=fence,
    )
    return entity


# -- runs table ------------------------------------------------------------------------------------
def run_row(
    event: Mapping[str, Any],
    *,
    state_advanced: bool,
    attempt: int,
    rows: int,
    transactions: int,
    partitions: int,
    retired: int,
    results_table: str,
    started_at: datetime,
    ended_at: datetime | None,
    kind: str = "nightly",
) -> dict[str, Any]:
    """The run record, from its ``RunSummary`` event and the run's bookkeeping. While the run is
    going, ``Outcome`` is ``running`` (see :func:`running_row`)."""
    return {
        "PartitionKey": RUNS_PARTITION,
        "RowKey": event["RunId"],
        "RunId": event["RunId"],
        "StartedAt": started_at,
        "EndedAt": ended_at,
        "Outcome": event["Outcome"],
        "Complete": event["Complete"],
        "Baseline": event["Baseline"],
        "StateAdvanced": state_advanced,
        "Attempts": attempt,
        "Total": event["Total"],
        "NewFailures": event["NewFailures"],
        "AlertsSent": event["AlertsSent"],
        "SubscriptionsRead": event["SubscriptionsRead"],
        "SubscriptionsFailed": event["SubscriptionsFailed"],
        "DurationSeconds": event["DurationSeconds"],
        "Rows": rows,
        "Transactions": transactions,
        "Partitions": partitions,
        "Retired": retired,
        "Error": event["Error"],
        "ResultsTable": results_table,
        "Kind": kind,
        **{f"Count{status}": count for status, count in event["Counts"].items()},
    }


def running_row(
    run_id: str, started_at: datetime, *, baseline: bool, attempt: int, results_table: str, kind: str = "nightly"
) -> dict[str, Any]:
    """The run record while the run is going: a crash leaves it ``running``, to be resumed."""
    return {
        "PartitionKey": RUNS_PARTITION,
        "RowKey": run_id,
        "RunId": run_id,
        "StartedAt": started_at,
        "Outcome": "running",
        "Complete": False,
        "Baseline": baseline,
        "Attempts": attempt,
        "StateAdvanced": False,
        "ResultsTable": results_table,
        "Kind": kind,
    }


def subscription_row(
    subscription_id: str, name: str, run_id: str, at: datetime, known: Mapping[str, Any] | None, tenant_id: str = ""
) -> dict[str, Any]:
    """The registry row of a subscription read tonight (a later run notices when it vanishes). Its
    ``TenantId`` (the subscription's home tenant, kept when a run did not learn it) makes the report's
    portal links open in the right directory."""
    first = (known or {}).get("FirstAuditedAt")
    return {
        "PartitionKey": SUBSCRIPTIONS_PARTITION,
        "RowKey": fold(subscription_id),
        "SubscriptionId": subscription_id,
        "SubscriptionName": name,
        "TenantId": tenant_id or str((known or {}).get("TenantId") or ""),
        "FirstAuditedAt": first if isinstance(first, datetime) else at,
        "LastAuditedAt": at,
        "LastRunId": run_id,
    }


# -- exemptions table ------------------------------------------------------------------------------
def exemption_row(exemption: Exemption) -> dict[str, Any]:
    """The table row: one exemption per scope (adding one for the same scope replaces it)."""
    return {
        "PartitionKey": EXEMPTIONS_PARTITION,
        "RowKey": resource_key(exemption.scope),
        "Scope": exemption.scope,
        "Reason": exemption.reason,
        "Approver": exemption.approver,
        "CreatedAt": exemption.created,
        "ExpiresAt": exemption.expires,
        "RecordedBy": exemption.recorded_by,
    }
