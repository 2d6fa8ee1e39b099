"""The pure state model: from a resource's last-known state and tonight's finding, decide
whether it is a *new* failure and what the state becomes. No I/O.

Idempotent by construction: the state remembers the run that last advanced it and what it
was before, so re-evaluating the same run (a retry after a crash) yields the same answer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .models import Finding, Status


@dataclass(frozen=True, slots=True)
class Transition:
    """What tonight's finding means relative to the last-known state."""

    new_failure: bool
    previous_status: str  # "" when the resource was never seen (or was gone)
    first_failed_at: str  # start of the current FAIL streak, "" when not failing
    already_advanced: bool  # this run already advanced the state (retry of the same run)


def _prior(state: Mapping[str, Any] | None, run_id: str) -> tuple[str, str, bool]:
    """(status, first-failed-at, already advanced) as they were *before* this run."""
    if not state:
        return "", "", False
    if state.get("LastRunId") == run_id:
        if state.get("PreviousGone"):
            return "", "", True
        return str(state.get("PreviousStatus") or ""), str(state.get("PreviousFirstFailedAt") or ""), True
    if state.get("Gone"):
        return "", "", False
    return str(state.get("Status") or ""), str(state.get("FirstFailedAt") or ""), False


def transition(
    finding: Finding, state: Mapping[str, Any] | None, run_id: str, now_iso: str, *, baseline: bool
) -> Transition:
    """Decide ``NewFailure``: it fails now and did not fail before (or was never seen).

    On the baseline run (no state at all yet) nothing is new: the first night records the
    estate as it is and pages nobody; every later run alerts on changes only.
    """
    prior_status, prior_first_failed, advanced = _prior(state, run_id)
    failing = finding.status is Status.FAIL
    was_failing = prior_status == Status.FAIL.value
    first_failed = (prior_first_failed or now_iso) if failing and was_failing else (now_iso if failing else "")
    return Transition(
        new_failure=failing and not was_failing and not baseline,
        previous_status=prior_status,
        first_failed_at=first_failed,
        already_advanced=advanced,
    )


def state_entity(
    finding: Finding,
    change: Transition,
    state: Mapping[str, Any] | None,
    run_id: str,
    now_iso: str,
    row_key: str,
    partition_key: str,
    *,
    alerted: bool = False,
) -> dict[str, Any]:
    """The last-known state row after this run saw ``finding`` (stored in ``partition_key``,
    which ``layout.state_partition`` chooses).

    ``NewFailureAlerted`` records that this run's ``NewFailure`` event for the resource went out:
    the row is written first with ``False`` and marked once the event is due, so a crash between
    two state batches of one subscription cannot make a resumed run skip an alert never sent.
    """
    previous_gone = (
        bool(state.get("PreviousGone")) if change.already_advanced and state else bool(state and state.get("Gone"))
    )
    return {
        "PartitionKey": partition_key,
        "RowKey": row_key,
        **finding.identity(),
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
        "NewFailureAlerted": change.new_failure and alerted,
    }


def already_alerted(state: Mapping[str, Any] | None, change: Transition) -> bool:
    """This run's NewFailure event for the resource was sent by an earlier attempt of the run."""
    return bool(change.already_advanced and change.new_failure and state and state.get("NewFailureAlerted"))


def _previous_first_failed(state: Mapping[str, Any] | None, change: Transition) -> str:
    if not state:
        return ""
    if change.already_advanced:
        return str(state.get("PreviousFirstFailedAt") or "")
    return "" if state.get("Gone") else str(state.get("FirstFailedAt") or "")


def gone_entity(state: Mapping[str, Any], run_id: str, now_iso: str) -> dict[str, Any]:
    """Retire a resource that a fully read subscription no longer lists."""
    entity = {k: v for k, v in state.items() if not k.startswith("odata")}
    entity.update(
        PreviousStatus=str(state.get("Status") or ""),
        PreviousFirstFailedAt=str(state.get("FirstFailedAt") or ""),
        PreviousGone=False,
        Gone=True,
        GoneAt=now_iso,
        LastRunId=run_id,
        FirstFailedAt="",
    )
    return entity
