"""A run that read nothing is not a pass: zero readable subscriptions is the outcome ``blind``.

Every new deployment starts without the tenant role, and a role can be removed later. Such a run
once printed ``complete``, ``Subscriptions read: 0``, exited 0, and its report showed 0 FAIL: a
blind audit looking clean. Here the real timer function (and the ``run`` and ``report`` commands)
run against an emulated tenant the identity cannot read: the run record, the RunSummary event,
the tenant's ERROR row, the report's header and both commands' exit codes must all say so.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared.cli import main
from shared.commands.common import ExitCode
from shared.core.roles import AUDIT_READER_ROLE
from tests.emulators.access import restore_access, revoke_access
from tests.emulators.tenant import Tenant, generate_tenant
from tests.harness import AuditHarness

NIGHT = datetime(2026, 11, 2, 2, 0, tzinfo=UTC)
TENANT_SCOPE = "/"


def incomplete_run_alert_fires(event: dict[str, Any]) -> bool:
    """The incomplete-run rule's filter, as tests/infra/test_kql.py pins its text: a blind run must
    match it even though no subscription failed (there may be none to fail)."""
    failed = event.get("SubscriptionsFailed")
    return int(failed or 0) > 0 or event.get("Outcome") != "complete"


def assert_blind(h: AuditHarness, subscriptions_failed: int) -> dict[str, Any]:
    run = h.runs()[-1]
    assert run["Outcome"] == "blind" and run["Complete"] is False
    assert run["SubscriptionsRead"] == 0 and run["SubscriptionsFailed"] == subscriptions_failed
    event = h.run_summaries()[-1]
    assert event["Outcome"] == "blind" and event["Complete"] is False and event["RunId"] == run["RunId"]
    assert event["SubscriptionsRead"] == 0 and incomplete_run_alert_fires(event)
    rows = h.rows_by_id()
    tenant_row = rows[TENANT_SCOPE]
    assert tenant_row["Status"] == "ERROR" and tenant_row["SubscriptionId"] == ""
    assert f"'{AUDIT_READER_ROLE}'" in tenant_row["Reason"] and "infra/tenant/audit-reader-role.bicep" in tenant_row["Reason"]
    assert "tenant root management group" in tenant_row["Reason"] and "this run is not a pass" in tenant_row["Reason"]
    assert all(r["Status"] == "ERROR" for r in rows.values())
    assert len(rows) == 1 + subscriptions_failed
    assert event["Counts"]["ERROR"] == event["Total"] == len(rows)
    return rows


@pytest.mark.parametrize("source", ["arm", "resourcegraph"])
def test_a_deployment_before_the_tenant_role_is_granted_is_blind_not_clean(
    make_arm, harness_factory, capsys, source: str
) -> None:
    tenant = generate_tenant(seed=31, subscriptions=2, sites=8, slot_share=0.3)
    arm = make_arm(tenant)
    rules = revoke_access(arm)
    h: AuditHarness = harness_factory(arm)
    h.apply_env(AUDIT_INVENTORY_SOURCE=source)
    h.run_timer()
    rows = assert_blind(h, subscriptions_failed=0)
    assert "the subscription list it sees is empty): nothing was audited" in rows[TENANT_SCOPE]["Reason"]
    assert not h.state(), "no state moved"
    assert not h.dropped_by_host()

    # the command line says so too
    capsys.readouterr()
    assert main(["run"]) == ExitCode.BLIND == 7
    out = capsys.readouterr().out
    assert ": blind" in out and "Subscriptions read: 0" in out and "Not a pass" in out
    assert main(["report"]) == ExitCode.BLIND
    out = capsys.readouterr().out
    assert "(blind: it could read no subscription, this is NOT A PASS" in out
    assert "infra/tenant/audit-reader-role.bicep" in out, "the report lists the ERROR row that says what to grant"
    assert main(["report", "--format", "json"]) == ExitCode.BLIND
    assert json.loads(capsys.readouterr().out)["report"]["runs"][0]["outcome"] == "blind"

    # the role is granted: the next run reads everything, a baseline like any first run
    restore_access(arm, rules)
    h.run_timer()
    assert h.runs()[-1]["Outcome"] == "complete" and h.runs()[-1]["Baseline"] is True
    assert main(["run"]) == ExitCode.OK


@pytest.mark.parametrize("configured", [False, True], ids=["listed", "AUDIT_SUBSCRIPTIONS"])
def test_a_run_whose_every_subscription_is_unreadable_is_blind(
    make_arm, harness_factory, capsys, configured: bool
) -> None:
    tenant = generate_tenant(seed=32, subscriptions=3, sites=9, slot_share=0.0, disabled_subscriptions=0)
    arm = make_arm(tenant)
    for sub in tenant.subscriptions:
        arm.faults.forbid_subscription(sub.subscription_id)
    h: AuditHarness = harness_factory(arm)
    if configured:
        h.apply_env(AUDIT_SUBSCRIPTIONS=",".join(s.subscription_id for s in tenant.subscriptions))
    h.run_timer()
    rows = assert_blind(h, subscriptions_failed=3)
    assert "all 3 were unreadable" in rows[TENANT_SCOPE]["Reason"]
    for sub in tenant.subscriptions:
        assert "403" in rows[f"/subscriptions/{sub.subscription_id}"]["Reason"]
    capsys.readouterr()
    assert main(["run"]) == ExitCode.BLIND


def test_a_run_after_the_role_is_removed_is_blind_and_keeps_every_state(make_arm, harness_factory) -> None:
    tenant = Tenant()
    sub = tenant.add_subscription("b11d0000-0000-4000-8000-000000000001", display_name="prod")
    failing = sub.add_site("rg", "failing", client_cert_enabled=False)
    sub.add_site("rg", "fine", client_cert_enabled=True, client_cert_mode="Required")
    arm = make_arm(tenant)
    h: AuditHarness = harness_factory(arm)
    h.run_at(NIGHT)
    known = {k for k, r in h.state().items() if not r["Gone"]}
    assert len(known) == 2

    rules = revoke_access(arm)  # the role assignment is removed
    h.run_at(NIGHT + timedelta(days=1))
    rows = assert_blind(h, subscriptions_failed=1)
    assert "no longer visible to the auditor" in rows[f"/subscriptions/{sub.subscription_id}"]["Reason"]
    assert "all 1 were unreadable" in rows[TENANT_SCOPE]["Reason"]
    assert {k for k, r in h.state().items() if not r["Gone"]} == known

    restore_access(arm, rules)
    h.clear_events()
    h.run_at(NIGHT + timedelta(days=2))
    assert h.runs()[-1]["Outcome"] == "complete"
    assert not h.new_failure_events(), "no wave of 'new' failures when access returns"
    assert h.rows_by_id()[failing.key]["Status"] == "FAIL"
