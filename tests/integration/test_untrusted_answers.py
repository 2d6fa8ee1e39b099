"""Answers that say less than they seem to: only a resource's own confirmed ``ResourceNotFound``
retires it, and a Resource Graph answer that is truncated or pages in a loop is an error, never a
short list to trust.

Each case runs the real timer function (or the change poll) against the ARM emulator and Azurite,
first a night that reads everything, then the night with the answer under test: what it must not
do is retire what it did not see, and what it must do is say so (an ERROR row, the run ``partial``,
or a failed poll whose watermark stays).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from azure.core.exceptions import AzureError

import shared.azure.resourcegraph as rg
from shared.azure.arm_errors import PagingLoopError
from tests.emulators.arm import ArmEmulator
from tests.emulators.graph import repeated_skip_token, truncated_after
from tests.emulators.tenant import Site, Tenant
from tests.harness import AuditHarness

SUB = "d0d0d0d0-0000-4000-8000-000000000001"
OTHER = "d0d0d0d0-0000-4000-8000-000000000002"
REQ = {"client_cert_enabled": True, "client_cert_mode": "Required"}
NIGHT = datetime(2026, 11, 2, 2, 0, tzinfo=UTC)
NOT_OWN_404 = ["ResourceGroupNotFound", "SubscriptionNotFound", "ParentResourceNotFound", None]


class Clock:
    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at


def tenant_with_slots(clock: Clock | None = None) -> tuple[Tenant, dict[str, Site]]:
    tenant = Tenant()
    sub = tenant.add_subscription(SUB, display_name="prod")
    other = tenant.add_subscription(OTHER, display_name="other")
    sites = {
        "app": sub.add_site("rg-a", "app", **REQ),
        "failing": sub.add_site("rg-a", "failing", client_cert_enabled=False),
        "plain": sub.add_site("rg-b", "plain", **REQ),
        "elsewhere": other.add_site("rg-o", "elsewhere", client_cert_enabled=False),
    }
    sites["slot"] = sites["app"].add_slot("staging", **REQ)
    sites["failing-slot"] = sites["failing"].add_slot("qa", client_cert_enabled=False)
    if clock is not None:
        tenant.start_change_log(clock)
    return tenant, sites


def after_a_night(make_arm: Any, harness_factory: Any) -> tuple[Clock, dict[str, Site], ArmEmulator, AuditHarness]:
    """The estate with its change log, audited once (the baseline every poll test starts from)."""
    clock = Clock(NIGHT)
    tenant, sites = tenant_with_slots(clock)
    arm = make_arm(tenant)
    h: AuditHarness = harness_factory(arm)
    h.run_at(NIGHT)
    return clock, sites, arm, h


def live(h: AuditHarness) -> set[str]:
    return {k for k, r in h.state().items() if not r["Gone"]}


def group_list(group: str) -> str:
    return rf"^/subscriptions/{SUB}/resourceGroups/{group}/providers/Microsoft\.Web/sites$"


# -- 404s on the nightly run's lists -----------------------------------------------------------------
@pytest.mark.parametrize("code", ["ResourceGroupNotFound", "SubscriptionNotFound", "ResourceNotFound", None])
def test_a_group_list_answering_404_is_the_groups_error_and_retires_nothing(
    make_arm, harness_factory, code: str | None
) -> None:
    tenant, sites = tenant_with_slots()
    arm = make_arm(tenant)
    h: AuditHarness = harness_factory(arm)
    h.run_at(NIGHT)
    known = live(h)
    assert {sites["slot"].key, sites["failing-slot"].key} <= known

    arm.faults.not_found(group_list("rg-a"), code)  # the group's sites are still in the site list
    h.clear_events()
    h.run_at(NIGHT + timedelta(days=1))
    rows = h.rows_by_id()
    error = rows[f"/subscriptions/{SUB}/resourcegroups/rg-a"]
    assert error["Status"] == "ERROR" and "404" in error["Reason"]
    if code:
        assert code in error["Reason"]
    assert rows[sites["app"].key]["Status"] == "PASS", "the group's sites are audited from the site list"
    assert live(h) == known, "the slots the group list would have shown are not retired"
    assert h.runs()[-1]["Outcome"] == "partial"
    assert arm.stats()["by_kind"]["slots_list"] == 0, "a 404 is not retried app by app"

    arm.faults.clear()  # the group answers again: nothing comes back as a new failure
    h.clear_events()
    h.run_at(NIGHT + timedelta(days=2))
    assert not h.new_failure_events() and h.runs()[-1]["Outcome"] == "complete"


@pytest.mark.parametrize(("code", "retired"), [("ResourceNotFound", True), *((c, False) for c in NOT_OWN_404)])
def test_a_slot_list_404_retires_the_slots_only_on_the_sites_own_resource_not_found(
    make_arm, harness_factory, code: str | None, retired: bool
) -> None:
    from tests.emulators.faults import FaultRule, Status

    tenant, sites = tenant_with_slots()
    arm = make_arm(tenant)
    h: AuditHarness = harness_factory(arm)
    h.apply_env(AUDIT_RETRY_TOTAL="0")
    h.run_at(NIGHT)
    known = live(h)

    arm.faults.add(FaultRule(Status(500), path=group_list("rg-a")))  # falls back to per-app slot lists
    app = sites["app"]
    arm.faults.not_found(rf"^{app.id}/slots$", code)
    h.run_at(NIGHT + timedelta(days=1))
    rows = h.rows_by_id()
    scope = f"{app.id}/slots".lower()
    assert rows[sites["failing-slot"].key]["Status"] == "FAIL", "the other app's slot list still reads"
    if retired:  # the site is gone: its slots with it
        assert scope not in rows
        assert live(h) == known - {sites["slot"].key}
        assert h.runs()[-1]["Outcome"] == "complete"
    else:
        assert rows[scope]["Status"] == "ERROR" and "404" in rows[scope]["Reason"]
        assert live(h) == known
        assert h.runs()[-1]["Outcome"] == "partial"


# -- 404s on the change poll's GETs ------------------------------------------------------------------
@pytest.mark.parametrize("code", NOT_OWN_404)
def test_a_poll_get_answering_another_404_is_an_error_and_keeps_the_state(
    make_arm, harness_factory, code: str | None
) -> None:
    clock, sites, arm, h = after_a_night(make_arm, harness_factory)
    clock.at = NIGHT + timedelta(hours=3)
    sites["app"].update(client_cert_mode="Optional")
    sites["slot"].update(client_cert_mode="Optional")
    arm.faults.not_found(rf"^/subscriptions/{SUB}/resourceGroups/rg-a/providers/Microsoft\.Web/sites/app(/|$)", code)
    h.clear_events()
    result = h.poll_at(clock.at + timedelta(minutes=2))
    run = result.summary
    assert run is not None and run.outcome == "partial"
    rows = h.rows_by_id(run.run_id)
    for name in ("app", "slot"):
        row = rows[sites[name].key]
        assert row["Status"] == "ERROR" and "404" in row["Reason"], row
    state = h.state()
    for name in ("app", "slot"):
        assert state[sites[name].key]["Gone"] is False and state[sites[name].key]["Status"] == "PASS"
    assert not h.new_failure_events()


def test_a_poll_get_answering_resource_not_found_leaves_the_retirement_to_the_nightly_run(
    make_arm, harness_factory
) -> None:
    # The resource's own ResourceNotFound is not an error, but a poll retires nothing (issue 19: whether
    # an app deleted and re-created under its name is new must not depend on when polls ran).
    clock, sites, arm, h = after_a_night(make_arm, harness_factory)
    clock.at = NIGHT + timedelta(hours=3)
    sites["plain"].update(client_cert_mode="Optional")
    arm.faults.not_found(r"/sites/plain$", "ResourceNotFound")
    result = h.poll_at(clock.at + timedelta(minutes=2))
    assert result.summary is not None and result.summary.outcome == "complete" and result.left == 0
    assert h.state()[sites["plain"].key]["Gone"] is False
    assert sites["plain"].key not in h.rows_by_id(result.summary.run_id)


# -- Resource Graph: truncated answers and paging loops -----------------------------------------------
def test_a_truncated_resource_graph_answer_is_an_error_for_what_it_did_not_reach(
    make_arm, harness_factory
) -> None:
    tenant, _ = tenant_with_slots()
    first = tenant.add_subscription("c0c0c0c0-0000-4000-8000-000000000001", display_name="first")
    first.add_site("rg-f", "first-app", **REQ)
    arm = make_arm(tenant)
    h: AuditHarness = harness_factory(arm)
    h.apply_env(AUDIT_INVENTORY_SOURCE="resourcegraph")
    h.run_at(NIGHT)
    known = live(h)
    assert len(known) == 7

    # Rows come ordered by subscription: the first one's, SUB's five, then OTHER's one. Cut inside SUB.
    arm.resource_graph_answer = truncated_after(3, "sites")
    h.clear_events()
    h.run_at(NIGHT + timedelta(days=1))
    rows = h.rows_by_id()
    for sub in (SUB, OTHER):
        error = rows[f"/subscriptions/{sub}"]
        assert error["Status"] == "ERROR" and "resultTruncated" in error["Reason"], error
    assert rows[first.sites[0].key]["Status"] == "PASS", "the subscription the answer moved past is read"
    assert live(h) == known, "nothing that the cut answer left out is retired"
    run = h.runs()[-1]
    assert run["Outcome"] == "partial" and run["SubscriptionsFailed"] == 2
    assert not h.new_failure_events()


def test_a_truncated_change_feed_fails_the_poll_and_keeps_the_watermark(make_arm, harness_factory) -> None:
    clock, sites, arm, h = after_a_night(make_arm, harness_factory)
    clock.at = NIGHT + timedelta(hours=1)
    first = h.poll_at(clock.at)
    clock.at += timedelta(hours=1)
    sites["app"].update(client_cert_mode="Optional")
    sites["plain"].update(client_cert_mode="Optional")
    arm.resource_graph_answer = truncated_after(1, "changes")
    h.clear_events()
    with pytest.raises(AzureError, match="resultTruncated"):
        h.poll_at(clock.at + timedelta(minutes=1))
    assert not h.new_failure_events(), "not even the change the cut answer did show"

    arm.resource_graph_answer = None
    later = h.poll_at(clock.at + timedelta(minutes=11))
    assert later.since == first.since, "the failed poll left the watermark"
    assert sorted(e["ResourceId"].lower() for e in h.new_failure_events()) == sorted(
        [sites["app"].key, sites["plain"].key]
    )


def test_a_change_feed_that_repeats_its_skip_token_fails_the_poll(
    make_arm, harness_factory, monkeypatch
) -> None:
    clock, sites, arm, h = after_a_night(make_arm, harness_factory)
    clock.at = NIGHT + timedelta(hours=2)
    for name in ("app", "plain", "failing"):
        sites[name].update(client_cert_mode="Optional")
    monkeypatch.setattr(rg, "PAGE_SIZE", 1)  # three pages of change records
    arm.resource_graph_answer = repeated_skip_token("changes")
    with pytest.raises(PagingLoopError, match=r"same \$skipToken twice"):
        h.poll_at(clock.at + timedelta(minutes=1))
    changes = [q for q in arm.resource_graph_queries if str(q.get("query", "")).startswith("resourcechanges")]
    assert len(changes) == 2, "it stopped at the first repeated token"
    assert not [r for r in h.runs() if r.get("Kind") == "changes"]


# -- Resource Graph: partial silence -----------------------------------------------------------------
def trimmed_tenant() -> tuple[Tenant, dict[str, Site]]:
    """SUB's rg-a and rg-b as before, and a group Resource Graph will stop showing (a deny assignment)."""
    tenant, sites = tenant_with_slots()
    sub = tenant.get_subscription(SUB)
    assert sub is not None
    sites["hidden-fail"] = sub.add_site("rg-secret", "hidden-fail", client_cert_enabled=False, tags={"owner": "ops"})
    sites["hidden-pass"] = sub.add_site("rg-secret", "hidden-pass", **REQ)
    sites["hidden-slot"] = sites["hidden-fail"].add_slot("blue", client_cert_enabled=False)
    return tenant, sites


@pytest.mark.parametrize("by", ["get", "list"])
def test_resources_missing_from_a_resource_graph_answer_are_retired_only_when_arm_confirms(
    make_arm, harness_factory, monkeypatch, by: str
) -> None:
    from tests.emulators.graph import hide_group

    if by == "list":
        monkeypatch.setattr(rg, "CONFIRM_BY_GET", 2)  # more missing than that: the subscription's ARM list
    tenant, sites = trimmed_tenant()
    arm = make_arm(tenant)
    h: AuditHarness = harness_factory(arm)
    h.apply_env(AUDIT_INVENTORY_SOURCE="resourcegraph")
    h.run_at(NIGHT)
    known = live(h)
    assert len(known) == len(tenant.expected()) == 9

    # Night 2: Resource Graph trims rg-secret (no error), and one app of rg-b really is deleted.
    arm.resource_graph_hides = hide_group(SUB, "rg-secret")
    tenant.get_subscription(SUB).remove_site(sites["plain"])  # type: ignore[union-attr]
    arm.reset_stats()
    h.clear_events()
    h.run_at(NIGHT + timedelta(days=1))
    rows = h.rows_by_id()
    for name in ("hidden-fail", "hidden-pass", "hidden-slot"):
        assert rows[sites[name].key]["Status"] == sites[name].expected_status, name  # audited from ARM
    assert rows[sites["hidden-fail"].key]["Owner"] == "ops"
    assert rows[sites["hidden-slot"].key]["Owner"] == "ops", "a slot takes its site's owner"
    assert live(h) == known - {sites["plain"].key}, "only what ARM confirms gone is retired"
    assert h.runs()[-1]["Outcome"] == "complete"
    assert not h.new_failure_events(), "nothing comes back as new"
    kinds = arm.stats()["by_kind"]
    if by == "get":
        assert kinds["site_get"] >= 4 and kinds["sites_list"] == 0  # the three hidden ones and the deleted one
    else:
        assert kinds["sites_list"] == 1 and kinds["site_get"] == 0

    # ... and when ARM cannot confirm (403 on one of them), it keeps its state and its ERROR row says why
    if by == "list":
        arm.faults.forbid_subscription(SUB)
    else:
        arm.faults.status(rf"/sites/{sites['hidden-pass'].name}$", 403, code="AuthorizationFailed")
    h.run_at(NIGHT + timedelta(days=2))
    rows = h.rows_by_id()
    error = rows[sites["hidden-pass"].key]
    assert error["Status"] == "ERROR" and "Resource Graph did not return it" in error["Reason"] and "403" in error["Reason"]
    assert live(h) == known - {sites["plain"].key}
    assert h.runs()[-1]["Outcome"] == "partial"
