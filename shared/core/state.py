"""The pure state model: from a resource's last-known state and tonight's finding, decide
whether it is a *new* failure, and whether an alert is owed. No I/O; the rows that record it are
``schema.state_row`` and ``schema.gone_row``.

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
    alert_pending: bool = False  # a NewFailure event is owed once this state is stored
    alert_run_id: str = ""  # the run that found the failure the owed (or sent) alert is about
    alert_sent_at: str = ""  # when that alert went out ("" while owed or when there is none)
    dropped_alert: bool = False  # an alert was owed, but the resource no longer fails


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


def _alert(
    state: Mapping[str, Any] | None, run_id: str, *, failing: bool, new_failure: bool
) -> tuple[bool, str, str, bool]:
    """(owed, run that found it, sent at, dropped): an alert is owed from the run that finds a new
    failure until a run logs its event, whatever that run's id and however much later, as long as
    the resource still fails. Retrying the run that already sent it owes nothing again."""
    owed = bool(state and state.get("AlertPending") and not state.get("Gone"))
    found_by = str(state.get("AlertRunId") or "") if state and not state.get("Gone") else ""
    sent_at = str(state.get("AlertSentAt") or "") if state and not state.get("Gone") else ""
    if not failing:
        return False, "", "", owed
    if owed:
        return True, found_by or run_id, "", False
    if new_failure and found_by != run_id:  # found now (an earlier attempt of this run has not sent it)
        return True, run_id, "", False
    return False, found_by, sent_at, False


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
    if advanced and failing and state and state.get("Status") == Status.FAIL.value and state.get("FirstFailedAt"):
        # A retry of this run (a resume) keeps the streak its first attempt stored: a failure found at
        # 02:00 and resumed at 08:00 began at 02:00, in the state, the rows and the event alike.
        first_failed = str(state["FirstFailedAt"])
    new_failure = failing and not was_failing and not baseline
    pending, found_by, sent_at, dropped = _alert(state, run_id, failing=failing, new_failure=new_failure)
    return Transition(
        new_failure=new_failure,
        previous_status=prior_status,
        first_failed_at=first_failed,
        already_advanced=advanced,
        alert_pending=pending,
        alert_run_id=found_by,
        alert_sent_at=sent_at,
        dropped_alert=dropped,
    )


def observed(finding: Finding, state: Mapping[str, Any] | None, run_id: str) -> Transition:
    """The transition shown on a row whose state this run does not advance (its subscription was
    not fully read): relative to the stored state, nothing new, the stored streak kept, no alert."""
    prior_status, prior_first_failed, advanced = _prior(state, run_id)
    failing = finding.status is Status.FAIL
    was_failing = prior_status == Status.FAIL.value
    return Transition(
        new_failure=False,
        previous_status=prior_status,
        first_failed_at=prior_first_failed if failing and was_failing else "",
        already_advanced=advanced,
    )
