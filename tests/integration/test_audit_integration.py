"""The nightly audit end to end: timer → managed identity → ARM emulator → Azurite (HTTPS, OAuth)."""

from __future__ import annotations

import datetime as dt

import pytest

from shared.core.keys import resource_key
from tests.emulators.faults import FaultRule, Status
from tests.emulators.tenant import KEYWORD_RESOURCES, Tenant, generate_tenant
from tests.harness import AuditHarness


def assert_matches_oracle(h: AuditHarness, tenant: Tenant, run_id: str | None = None) -> dict:
    rows = h.rows_by_id(run_id)
    expected = tenant.expected()
    audited = {k: r for k, r in rows.items() if r["Status"] != "ERROR"}
    assert set(audited) == set(expected), "every listed site and slot gets exactly one row"
    for key, exp in expected.items():
        row = audited[key]
        assert (row["Status"], row["ClientCertMode"]) == (exp.status, exp.mode), key
        assert row["Slot"] == (exp.slot or "")
        assert row["ResourceType"] == ("slot" if exp.slot else "site")
        assert row["AppName"].lower() == exp.site.lower()
        assert row["SubscriptionId"].lower() == exp.subscription_id.lower()
        assert row["ResourceGroup"].lower() == exp.resource_group.lower()
        assert row["RowKey"] == resource_key(key)
    return rows


def test_timer_audits_generated_tenant(make_arm, harness_factory) -> None:
    tenant = generate_tenant(seed=11, subscriptions=4, sites=60, slot_share=0.4, disabled_subscriptions=1)
    arm = make_arm(tenant, page_size=7, empty_page_every=3)
    h = harness_factory(arm)
    h.run_timer()

    runs = h.runs()
    assert len(runs) == 1 and runs[0]["Outcome"] == "complete" and runs[0]["Baseline"] is True
    rows = assert_matches_oracle(h, tenant)
    # every status the generator covers is represented, slots included
    assert {r["Status"] for r in rows.values()} >= {"PASS", "WARN", "FAIL"}
    assert any(r["Slot"] for r in rows.values())
    some = next(iter(rows.values()))
    for prop in (
        "RunId",
        "ResourceId",
        "SubscriptionId",
        "ResourceGroup",
        "AppName",
        "Slot",
        "Kind",
        "State",
        "ClientCertEnabled",
        "ClientCertMode",
        "ExclusionPaths",
        "Status",
        "Reason",
        "AuditedAt",
        "HttpsOnly",
        "PublicNetworkAccess",
        "Location",
        "NewFailure",
        "Remediation",
    ):
        assert prop in some, prop
    assert isinstance(some["AuditedAt"], dt.datetime)
    # the disabled subscription is skipped (not an error)
    assert not [r for r in rows.values() if r["Status"] == "ERROR"]
    # list strategy: no per-app GETs, one includeSlots list per resource group that holds sites
    stats = arm.stats()["by_kind"]
    assert stats.get("site_get", 0) == 0 and stats.get("slots_list", 0) == 0
    # the managed identity path was used for both ARM and Storage (Azurite --oauth basic)
    resources = {r for r, _ in arm.token_requests}
    assert any("storage.azure.com" in r for r in resources) and any(arm.url in r for r in resources)
    summaries = h.run_summaries()
    assert len(summaries) == 1 and summaries[0]["Outcome"] == "complete"
    assert summaries[0]["Total"] == len(rows)


def test_unreadable_subscription_is_one_error_row_and_run_goes_on(make_arm, harness_factory) -> None:
    tenant = generate_tenant(seed=12, subscriptions=3, sites=30, slot_share=0.3)
    bad = tenant.subscriptions[1]
    arm = make_arm(tenant)
    arm.faults.forbid_subscription(bad.subscription_id)
    h = harness_factory(arm)
    h.run_timer()

    rows = h.rows_by_id()
    errors = [r for r in rows.values() if r["Status"] == "ERROR"]
    assert len(errors) == 1
    assert errors[0]["ResourceId"] == f"/subscriptions/{bad.subscription_id}"
    assert "403" in errors[0]["Reason"] and "AuthorizationFailed" in errors[0]["Reason"]
    good = {k: v for k, v in tenant.expected().items() if v.subscription_id != bad.subscription_id}
    assert {k for k, r in rows.items() if r["Status"] != "ERROR"} == set(good)
    assert h.runs()[-1]["Outcome"] == "partial"
    summary = h.run_summaries()[-1]
    assert summary["SubscriptionsFailed"] == 1 and summary["Outcome"] == "partial"


def test_throttling_5xx_404_and_odd_names_do_not_crash(make_arm, harness_factory) -> None:
    tenant = generate_tenant(seed=13, subscriptions=3, sites=40, slot_share=0.5)
    victim = tenant.subscriptions[0].sites[0]
    arm = make_arm(tenant, page_size=5)
    arm.faults.throttle(r"/providers/Microsoft\.Web/sites$", retry_after=1, times=2)
    arm.faults.add(FaultRule(Status(503), path=r"/subscriptions$", times=1))
    arm.faults.add(FaultRule(Status(500), path=r"/resourceGroups/[^/]+/providers/Microsoft\.Web/sites$", times=1))
    # a group list answering 404 ResourceGroupNotFound: the group's ERROR row, never "nothing there"
    arm.faults.add(
        FaultRule(
            Status(404, code="ResourceGroupNotFound"),
            path=rf"/resourceGroups/{victim.resource_group}/providers/Microsoft\.Web/sites$",
        )
    )
    h = harness_factory(arm)
    h.run_timer()
    rows = h.rows_by_id()
    assert arm.stats()["throttled"] >= 2
    errors = [r for r in rows.values() if r["Status"] == "ERROR"]
    assert [(r["SubscriptionId"], r["ResourceGroup"]) for r in errors] == [
        (victim.subscription.subscription_id, victim.resource_group)
    ]
    assert "404 ResourceGroupNotFound" in errors[0]["Reason"]
    # everything except the slots of the unreadable group is audited, odd names included
    expected = {
        k
        for k, v in tenant.expected().items()
        if not (
            v.slot
            and v.resource_group == victim.resource_group
            and v.subscription_id == victim.subscription.subscription_id
        )
    }
    assert expected <= set(rows)
    assert any(not r["ResourceGroup"].isascii() for r in rows.values())


def test_explicit_subscription_list_and_connection_string(make_arm, harness_factory) -> None:
    tenant = generate_tenant(seed=14, subscriptions=3, sites=20, slot_share=0.2)
    chosen = tenant.subscriptions[2].subscription_id
    arm = make_arm(tenant)
    h = harness_factory(arm)
    h.apply_env(AUDIT_SUBSCRIPTIONS=chosen)
    h.run_timer()
    rows = h.rows_by_id()
    assert rows and {r["SubscriptionId"] for r in rows.values()} == {chosen}
    assert arm.stats()["by_kind"].get("subscriptions", 0) == 0


def test_store_unreachable_fails_loudly(make_arm, harness_factory) -> None:
    tenant = generate_tenant(seed=15, subscriptions=1, sites=3, slot_share=0.0)
    arm = make_arm(tenant)
    h = harness_factory(arm)
    h.apply_env(AUDIT_TABLE_SERVICE_URI="https://127.0.0.1:9/devstoreaccount1", AUDIT_RETRY_TOTAL="0")
    with pytest.raises(Exception, match="results store unreachable"):
        h.run_timer()


def test_missing_table_setting_is_a_clear_error(make_arm, harness_factory, monkeypatch) -> None:
    arm = make_arm(generate_tenant(seed=16, subscriptions=1, sites=1))
    h = harness_factory(arm)
    monkeypatch.delenv("AUDIT_TABLE_SERVICE_URI")
    with pytest.raises(ValueError, match="AUDIT_TABLE_SERVICE_URI"):
        h.run_timer()


def test_user_assigned_identity_when_azure_client_id_is_set(make_arm, harness_factory) -> None:
    from tests.emulators.arm import UserAssignedIdentity

    client_id = "0f0f0f0f-1111-4222-8333-444444444444"
    tenant = generate_tenant(seed=17, subscriptions=1, sites=5, slot_share=0.2)
    arm = make_arm(tenant, user_assigned=[UserAssignedIdentity(client_id)], system_assigned=False)
    h = harness_factory(arm)
    h.apply_env(AZURE_CLIENT_ID=client_id)
    h.run_timer()
    assert_matches_oracle(h, tenant)
    assert arm.token_requests and all(cid == client_id for _, cid in arm.token_requests)


def test_keyword_names_get_their_own_rows_and_an_unparsable_id_costs_only_itself(
    make_arm,
    harness_factory,
) -> None:
    """Groups ``slots``/``Sites``, apps ``slots``/``sites``, a slot ``slots``: each audited as what it is.

    In the same list pages ARM also returns one app whose id is not a site id: that app alone is an
    ERROR row; every other resource of its page, its group and its subscription keeps its row."""
    tenant = generate_tenant(seed=18, subscriptions=2, sites=40, slot_share=0.3)
    sub = tenant.subscriptions[0]
    keyword_groups = {rg.lower() for rg, _, _ in KEYWORD_RESOURCES}
    victim = next(
        s
        for s in sub.sites
        if not s.slots
        and s.resource_group.lower() not in keyword_groups
        and len(sub.sites_in_group(s.resource_group) or []) > 1
    )
    broken = victim.id + "/config/web"  # what a site id is not: two segments too many
    victim.update(id_casing=lambda canonical, _route: canonical + "/config/web")
    arm = make_arm(tenant)  # 50 items a page: the victim shares its pages with the rest
    h = harness_factory(arm)
    h.run_timer()

    rows = h.rows_by_id()
    errors = [r for r in rows.values() if r["Status"] == "ERROR"]
    assert len(errors) == 1, errors
    assert errors[0]["ResourceId"] == broken and errors[0]["RowKey"] == resource_key(broken)
    assert errors[0]["SubscriptionId"] == sub.subscription_id
    assert "cannot be read as an App Service site or slot" in errors[0]["Reason"]
    expected = {k: v for k, v in tenant.expected().items() if k != victim.key}
    audited = {k: r for k, r in rows.items() if r["Status"] != "ERROR"}
    assert set(audited) == set(expected), "every other site and slot keeps its row"
    for key, exp in expected.items():
        row = audited[key]
        assert (row["Status"], row["ClientCertMode"]) == (exp.status, exp.mode), key
        assert row["ResourceType"] == ("slot" if exp.slot else "site"), key
        assert row["Slot"] == (exp.slot or "") and row["AppName"].lower() == exp.site.lower(), key

    # the keyword-named resources, spelled exactly as created
    for rg, app, slot in KEYWORD_RESOURCES:
        site = sub.get_site(rg, app)
        resource = site.get_slot(slot) if site and slot else site
        assert resource is not None
        row = rows[resource.key]
        assert (row["ResourceGroup"], row["AppName"], row["Slot"], row["ResourceType"]) == (
            rg,
            app,
            slot or "",
            "slot" if slot else "site",
        )
        assert (row["Status"], row["ClientCertMode"]) == (resource.expected_status, resource.expected_mode)
        if row["Remediation"]:  # the command names this very app (and slot), not a keyword next to it
            target = f"--resource-group={rg} --name={app}" + (f" --slot={slot}" if slot else "")
            assert target in row["Remediation"], row["Remediation"]
    state = h.state()
    assert {site.key for site in sub.iter_resources() if site is not victim} <= set(state)

    # the subscription was read (one item could not be audited, so the run says partial)
    summary = h.run_summaries()[-1]
    assert summary["SubscriptionsFailed"] == 0 and summary["Outcome"] == "partial"
