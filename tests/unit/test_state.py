"""The pure state model: NewFailure, streaks, gone resources, and idempotent re-evaluation."""

from __future__ import annotations

from dataclasses import replace

from shared.core.evaluate import evaluate
from shared.core.models import SiteRecord, Status
from shared.core.schema import gone_row, state_row
from shared.core.state import transition

REC = SiteRecord(
    resource_id="/subscriptions/S/resourceGroups/rg/providers/Microsoft.Web/sites/a",
    subscription_id="S",
    resource_group="rg",
    app_name="a",
    client_cert_enabled=True,
    client_cert_mode="Required",
    https_only=True,
)
PASSING = evaluate(REC)
FAILING = evaluate(replace(REC, client_cert_mode="Optional"))
WARNING = evaluate(replace(REC, exclusion_paths="/health"))


def advance(finding, state, run_id, now):  # type: ignore[no-untyped-def]
    change = transition(finding, state, run_id, now, baseline=False)
    return change, state_row(finding, change, state, run_id, now, "rk", "pk")


def test_never_seen_failure_is_new_but_not_on_baseline() -> None:
    assert transition(FAILING, None, "r1", "t1", baseline=False).new_failure
    assert not transition(FAILING, None, "r1", "t1", baseline=True).new_failure


def test_pass_to_fail_to_fail_streak() -> None:
    _, s1 = advance(PASSING, None, "r1", "t1")
    c2, s2 = advance(FAILING, s1, "r2", "t2")
    assert c2.new_failure and c2.previous_status == "PASS" and s2["FirstFailedAt"] == "t2"
    c3, s3 = advance(FAILING, s2, "r3", "t3")
    assert not c3.new_failure and s3["FirstFailedAt"] == "t2" and c3.previous_status == "FAIL"


def test_warn_to_fail_is_new_and_fail_to_pass_resets() -> None:
    _, s1 = advance(WARNING, None, "r1", "t1")
    c2, s2 = advance(FAILING, s1, "r2", "t2")
    assert c2.new_failure and c2.previous_status == "WARN"
    c3, s3 = advance(PASSING, s2, "r3", "t3")
    assert not c3.new_failure and s3["FirstFailedAt"] == "" and s3["PreviousStatus"] == "FAIL"


def test_same_run_reevaluated_gives_same_answer() -> None:
    """A retry of run r2 after its state was already advanced must not lose the NewFailure."""
    _, s1 = advance(PASSING, None, "r1", "t1")
    c2, s2 = advance(FAILING, s1, "r2", "t2")
    again, s2b = advance(FAILING, s2, "r2", "t2")
    assert again.new_failure and again.already_advanced and not c2.already_advanced
    assert again.previous_status == "PASS"
    assert s2b == s2


def test_gone_then_back_failing_is_new() -> None:
    _, s1 = advance(FAILING, None, "r1", "t1")
    gone = gone_row(s1, "r2", "t2", "k")
    assert gone["Gone"] and gone["PreviousStatus"] == "FAIL"
    back = transition(FAILING, gone, "r3", "t3", baseline=False)
    assert back.new_failure and back.previous_status == ""


def test_exempt_to_fail_is_new() -> None:
    exempt = replace(FAILING, status=Status.EXEMPT)
    _, s1 = advance(exempt, None, "r1", "t1")
    assert transition(FAILING, s1, "r2", "t2", baseline=False).new_failure


def test_new_failure_is_owed_until_marked_sent() -> None:
    _, s1 = advance(PASSING, None, "r1", "t1")
    c2, s2 = advance(FAILING, s1, "r2", "t2")
    assert c2.alert_pending and s2["AlertPending"] is True and s2["AlertRunId"] == "r2"
    marked = state_row(FAILING, c2, s1, "r2", "t2", "rk", "pk", alerted=True)
    assert marked["AlertPending"] is False and marked["AlertSentAt"] == "t2" and marked["AlertSentByRunId"] == "r2"
    c3, s3 = advance(FAILING, marked, "r3", "t3")
    assert not c3.alert_pending and s3["AlertRunId"] == "r2" and s3["AlertSentAt"] == "t2"


def test_owed_alert_survives_later_runs_while_failing() -> None:
    _, s1 = advance(PASSING, None, "r1", "t1")
    _, s2 = advance(FAILING, s1, "r2", "t2")  # stored, never marked (the run died)
    c3, s3 = advance(FAILING, s2, "r3", "t3")
    assert not c3.new_failure, "not new to run r3"
    assert c3.alert_pending and c3.alert_run_id == "r2" and s3["AlertPending"] is True
    c4, _ = advance(FAILING, s3, "r4", "t4")
    assert c4.alert_pending and c4.alert_run_id == "r2"


def test_owed_alert_dropped_when_the_resource_recovers_or_is_gone() -> None:
    _, s1 = advance(PASSING, None, "r1", "t1")
    _, s2 = advance(FAILING, s1, "r2", "t2")
    c3, s3 = advance(WARNING, s2, "r3", "t3")
    assert c3.dropped_alert and not c3.alert_pending and s3["AlertPending"] is False
    assert gone_row(s2, "r3", "t3", "k")["AlertPending"] is False


def test_retry_of_the_run_that_sent_the_alert_owes_nothing() -> None:
    _, s1 = advance(PASSING, None, "r1", "t1")
    c2, _ = advance(FAILING, s1, "r2", "t2")
    marked = state_row(FAILING, c2, s1, "r2", "t2", "rk", "pk", alerted=True)
    again = transition(FAILING, marked, "r2", "t2", baseline=False)
    assert again.new_failure and not again.alert_pending
    _, unmarked = advance(FAILING, s1, "r2", "t2")
    assert transition(FAILING, unmarked, "r2", "t2", baseline=False).alert_pending


def test_observed_shows_the_stored_state_and_flags_nothing() -> None:
    from shared.core.state import observed

    _, s1 = advance(PASSING, None, "r1", "t1")
    seen = observed(FAILING, s1, "r2")
    assert not seen.new_failure and seen.previous_status == "PASS" and seen.first_failed_at == ""
    _, f1 = advance(FAILING, None, "r1", "t1")
    kept = observed(FAILING, f1, "r2")
    assert kept.previous_status == "FAIL" and kept.first_failed_at == "t1" and not kept.alert_pending
