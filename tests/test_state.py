"""The pure state model: NewFailure, streaks, gone resources, and idempotent re-evaluation."""

from __future__ import annotations

from dataclasses import replace

from shared.evaluate import evaluate
from shared.models import SiteRecord, Status
from shared.state import gone_entity, state_entity, transition

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
    return change, state_entity(finding, change, state, run_id, now, "rk", "pk")


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
    gone = gone_entity(s1, "r2", "t2")
    assert gone["Gone"] and gone["PreviousStatus"] == "FAIL"
    back = transition(FAILING, gone, "r3", "t3", baseline=False)
    assert back.new_failure and back.previous_status == ""


def test_exempt_to_fail_is_new() -> None:
    exempt = replace(FAILING, status=Status.EXEMPT)
    _, s1 = advance(exempt, None, "r1", "t1")
    assert transition(FAILING, s1, "r2", "t2", baseline=False).new_failure
