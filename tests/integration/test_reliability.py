"""Fault and bad-input matrix: the audit survives, loses nothing, and says what it could not read.

Every case asserts rows, events or state — never just "did not crash".
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest

from tests.emulators.faults import FaultRule, Latency, MalformedJson, Reset, Stall, Status, Truncated
from tests.emulators.proxy import FaultProxy
from tests.emulators.tenant import OMIT, Tenant, generate_tenant
from tests.harness import AuditHarness

SITES = r"/subscriptions/{sub}/providers/Microsoft\.Web/sites$"
RG_SITES = r"/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft\.Web/sites$"
SLOTS = r"/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft\.Web/sites/{site}/slots$"


def small_tenant(seed: int = 21) -> Tenant:
    return generate_tenant(seed=seed, subscriptions=3, sites=36, slot_share=0.5)


def audited(h: AuditHarness) -> dict:
    return {k: r for k, r in h.rows_by_id().items() if r["Status"] != "ERROR"}


def errors(h: AuditHarness) -> dict:
    return {k: r for k, r in h.rows_by_id().items() if r["Status"] == "ERROR"}


def assert_complete(h: AuditHarness, tenant: Tenant) -> None:
    rows = audited(h)
    assert set(rows) == set(tenant.expected()), "every listed resource has exactly one row"
    for key, exp in tenant.expected().items():
        assert (rows[key]["Status"], rows[key]["ClientCertMode"]) == (exp.status, exp.mode)
    assert not errors(h)
    assert h.runs()[-1]["Outcome"] == "complete"
    assert h.run_summaries()[-1]["Outcome"] == "complete"


# -- ARM faults the SDK's retry absorbs: the run is complete ------------------------------------
def _http_date(seconds: int) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds)


RECOVERABLE = {
    "429 seconds on subscription list": lambda t: [FaultRule(Status(429, retry_after=1), path=r"/subscriptions$", times=2)],
    "429 http-date on site list": lambda t: [
        FaultRule(Status(429, retry_after=_http_date(1)), path=SITES.format(sub=t.subscriptions[0].subscription_id), times=1)
    ],
    "429 on slot lists": lambda t: [
        FaultRule(Status(429, retry_after=1), path=RG_SITES.format(sub=".*", rg=".*"), times=2)
    ],
    "500/502/503 burst": lambda t: [
        FaultRule(Status(500), path=SITES.format(sub=".*"), times=1),
        FaultRule(Status(502), path=RG_SITES.format(sub=".*", rg=".*"), times=1),
        FaultRule(Status(503), path=r"/subscriptions$", times=1),
    ],
    "connection reset": lambda t: [FaultRule(Reset(), path=SITES.format(sub=".*"), times=1)],
    "stall past the read timeout": lambda t: [FaultRule(Stall(4), path=RG_SITES.format(sub=".*", rg=".*"), times=1)],
    "managed identity fails transiently": lambda t: [FaultRule(Status(500), path=r"/msi/token", times=2)],
}


@pytest.mark.parametrize("case", sorted(RECOVERABLE))
def test_recoverable_arm_faults(case: str, make_arm, harness_factory) -> None:
    tenant = small_tenant()
    arm = make_arm(tenant, page_size=6, empty_page_every=2)
    for rule in RECOVERABLE[case](tenant):
        arm.faults.add(rule)
    h = harness_factory(arm)
    h.apply_env(AUDIT_HTTP_TIMEOUT="2")
    h.run_timer()
    assert all(rule.applied for rule in arm.faults.rules), "the fault was really injected"
    assert_complete(h, tenant)


# -- faults that make a scope unreadable: an ERROR row for exactly that scope -------------------
def test_throttling_that_outlasts_the_retry_budget(make_arm, harness_factory) -> None:
    tenant = small_tenant()
    victim = tenant.subscriptions[1].subscription_id
    arm = make_arm(tenant)
    arm.faults.add(FaultRule(Status(429, retry_after=1), path=SITES.format(sub=victim)))
    h = harness_factory(arm)
    h.apply_env(AUDIT_RETRY_TOTAL="2")
    h.run_timer()
    errs = errors(h)
    assert list(errs) == [f"/subscriptions/{victim}"]
    assert "429" in errs[f"/subscriptions/{victim}"]["Reason"]
    assert {r["SubscriptionId"] for r in audited(h).values()} == {
        s.subscription_id for s in tenant.subscriptions if s.subscription_id != victim
    }
    assert h.run_summaries()[-1]["Outcome"] == "partial" and h.run_summaries()[-1]["SubscriptionsFailed"] == 1


@pytest.mark.parametrize("fault", [MalformedJson(), Truncated(0.5)], ids=["malformed-json", "truncated-json"])
def test_bad_json_on_one_page(fault, make_arm, harness_factory) -> None:
    tenant = small_tenant()
    victim = tenant.subscriptions[0]
    arm = make_arm(tenant, page_size=3)
    arm.faults.add(FaultRule(fault, path=SITES.format(sub=victim.subscription_id), skip=1))
    h = harness_factory(arm)
    h.apply_env(AUDIT_RETRY_TOTAL="1")
    h.run_timer()
    errs = errors(h)
    assert list(errs) == [f"/subscriptions/{victim.subscription_id}"], "the unreadable subscription is visible"
    others = {k for k, v in tenant.expected().items() if v.subscription_id != victim.subscription_id}
    assert others <= set(audited(h)), "nothing that was read is lost"
    first_page = {s.key for s in victim.sites[:3]} | {slot.key for s in victim.sites[:3] for slot in s.slots}
    assert first_page <= set(audited(h)), "sites (and their slots) of the pages read before the bad one are kept"
    state = h.state()
    assert not any(r["SubscriptionId"] == victim.subscription_id for r in state.values()), "no state from a partial read"


def test_next_link_loop_is_stopped_and_reported(make_arm, harness_factory) -> None:
    tenant = small_tenant()
    arm = make_arm(tenant, page_size=4, next_link_loop_to=0, paging_kinds={"sites_list"})
    h = harness_factory(arm)
    h.run_timer()
    rows = audited(h)
    assert set(rows) == set(tenant.expected()), "duplicates across pages collapse to one row each"
    errs = {k: e for k, e in errors(h).items() if k != "/"}  # "/": the tenant's row when none was read
    looped = {s.subscription_id for s in tenant.subscriptions if len(s.sites) > 4}
    assert {e["SubscriptionId"] for e in errs.values()} == looped
    assert all("paging loop" in e["Reason"] for e in errs.values())
    read_none = looped == {s.subscription_id for s in tenant.subscriptions}
    assert h.runs()[-1]["Outcome"] == ("blind" if read_none else "partial")


def test_forbidden_resource_group_and_slot_list(make_arm, harness_factory) -> None:
    tenant = small_tenant()
    sub = tenant.subscriptions[0]
    rg_site = sub.sites[0]
    slot_site = next(s for s in sub.sites if s.slots and s.resource_group != rg_site.resource_group)
    gone_site = next(
        s for s in sub.sites if s.resource_group == slot_site.resource_group and s is not slot_site
    )
    arm = make_arm(tenant)
    sid = sub.subscription_id
    arm.faults.add(FaultRule(Status(403, code="AuthorizationFailed"), path=RG_SITES.format(sub=sid, rg=re.escape(rg_site.resource_group))))
    # slot_site's group list fails for another reason: the audit falls back to per-app slot lists,
    # where one app's slots are forbidden and another app was deleted in between (404)
    arm.faults.add(FaultRule(Status(500), path=RG_SITES.format(sub=sid, rg=re.escape(slot_site.resource_group))))
    arm.faults.add(FaultRule(Status(403, code="AuthorizationFailed"),
                             path=SLOTS.format(sub=sid, rg=re.escape(slot_site.resource_group), site=re.escape(slot_site.name))))
    arm.faults.add(FaultRule(Status(404, code="ResourceNotFound"),
                             path=SLOTS.format(sub=sid, rg=re.escape(gone_site.resource_group), site=re.escape(gone_site.name))))
    h = harness_factory(arm)
    h.apply_env(AUDIT_RETRY_TOTAL="1")
    h.run_timer()
    errs = errors(h)
    rg_scope = f"/subscriptions/{sid}/resourcegroups/{rg_site.resource_group}".lower()
    slot_scope = f"{slot_site.id}/slots".lower()
    assert set(errs) == {rg_scope, slot_scope}
    assert all("403" in e["Reason"] for e in errs.values())
    rows = audited(h)
    missing = set(tenant.expected()) - set(rows)
    allowed_missing = {s.key for s in rg_site.slots} | {s.key for s in sub.sites if s.resource_group == rg_site.resource_group for s in s.slots}
    allowed_missing |= {s.key for s in slot_site.slots} | {s.key for s in gone_site.slots}
    assert missing <= allowed_missing, "only slots behind the forbidden or vanished scopes are missing"
    assert rg_site.key in rows, "production sites of a forbidden group still come from the subscription list"
    assert arm.stats()["by_kind"].get("slots_list", 0) >= 2, "fell back to per-app slot lists only there"


def test_managed_identity_down_for_good_fails_loudly(make_arm, harness_factory) -> None:
    tenant = small_tenant()
    arm = make_arm(tenant)
    arm.faults.add(FaultRule(Status(500), path=r"/msi/token"))
    h = harness_factory(arm)
    h.apply_env(AUDIT_RETRY_TOTAL="1")
    with pytest.raises(Exception, match=r"unreachable|failed"):
        h.run_timer()
    assert h.run_summaries()[-1]["Outcome"] == "failed"


# -- Azurite faults --------------------------------------------------------------------------------
def test_store_unreachable_then_recovers(make_arm, harness_factory) -> None:
    tenant = small_tenant()
    h = harness_factory(make_arm(tenant))
    h.apply_env(AUDIT_TABLE_SERVICE_URI="https://127.0.0.1:9/devstoreaccount1", AUDIT_RETRY_TOTAL="0")
    with pytest.raises(Exception, match="results store unreachable"):
        h.run_timer()
    assert h.run_summaries()[-1]["Outcome"] == "failed"
    h.apply_env()  # store is back: no manual clean-up needed
    h.run_timer()
    assert_complete(h, tenant)


def test_batch_rejected_mid_run_loses_nothing(make_arm, harness_factory, azurite, tls) -> None:
    tenant = generate_tenant(seed=21, subscriptions=3, sites=150, slot_share=0.5)  # ≥ 5 transactions when packed
    with FaultProxy(azurite.port, tls) as proxy:
        proxy.faults.add(FaultRule(Status(400, code="InvalidInput"), method="POST", path=r"/\$batch$", skip=1, times=1))
        proxy.faults.add(FaultRule(Status(503), method="POST", path=r"/\$batch$", skip=3, times=2))
        h = harness_factory(make_arm(tenant))
        h.apply_env(AUDIT_TABLE_SERVICE_URI=proxy.url())
        h.run_timer()
        assert all(rule.applied for rule in proxy.faults.rules)
    assert_complete(h, tenant)


def test_batch_connection_dropped_is_replayed(make_arm, harness_factory, azurite, tls) -> None:
    # A $batch of upserts is idempotent (insert-or-replace): when the connection drops without an
    # answer (e.g. the service closed a kept-alive connection), it is sent again, not failed.
    tenant = small_tenant()
    with FaultProxy(azurite.port, tls) as proxy:
        rule = proxy.faults.add(FaultRule(Reset(), method="POST", path=r"/\$batch$", skip=1, times=1))
        h = harness_factory(make_arm(tenant))
        h.apply_env(AUDIT_TABLE_SERVICE_URI=proxy.url())
        h.run_timer()
        assert rule.applied
    assert_complete(h, tenant)
    assert h.runs()[-1]["Outcome"] == "complete"


def test_results_cannot_be_written_fails_loudly_and_next_run_recovers(make_arm, harness_factory, azurite, tls) -> None:
    tenant = small_tenant()
    with FaultProxy(azurite.port, tls) as proxy:
        h = harness_factory(make_arm(tenant))
        h.apply_env(AUDIT_TABLE_SERVICE_URI=proxy.url(), AUDIT_RETRY_TOTAL="1")
        rule = proxy.faults.add(FaultRule(Status(403, code="AuthorizationPermissionMismatch"), method="*",
                                          path=rf"/{h.tables['AUDIT_RESULTS_TABLE']}"))
        proxy.faults.add(FaultRule(Status(403, code="AuthorizationPermissionMismatch"), method="POST", path=r"/\$batch$"))
        with pytest.raises(Exception, match="failed"):
            h.run_timer()
        assert rule.applied
        assert h.run_summaries()[-1]["Outcome"] == "failed"
        proxy.faults.clear()
        h.run_timer()
    assert_complete(h, tenant)
    assert len(h.runs()) == 1 and h.runs()[-1]["Attempts"] == 2, "the failed run was resumed, not duplicated"


def test_azurite_restarted_mid_run(make_arm, harness_factory, tls, tmp_path) -> None:
    import threading

    from tests.emulators.azurite import Azurite

    tenant = generate_tenant(seed=22, subscriptions=6, sites=60, slot_share=0.3)
    arm = make_arm(tenant)
    arm.faults.add(FaultRule(Latency(0.4), path=RG_SITES.format(sub=".*", rg=".*")))
    with Azurite(tmp_path / "azurite", tls, in_memory=False) as own:
        h = harness_factory(arm)
        h.azurite = own
        h.apply_env(AUDIT_TABLE_SERVICE_URI=own.table_service_uri, AUDIT_CONCURRENCY="2", AUDIT_RETRY_TOTAL="6")
        restarter = threading.Timer(1.5, own.restart)
        restarter.start()
        h.run_timer()
        restarter.join()
        assert_complete(h, tenant)


# -- bad inputs ----------------------------------------------------------------------------------
def test_bad_inputs(make_arm, harness_factory) -> None:
    tenant = Tenant()
    sub = tenant.add_subscription("33333333-3333-4333-8333-333333333333")
    long_rg = "rg-" + "x" * 84 + "(é)"
    assert len(long_rg) == 90
    odd = [
        sub.add_site("rg-café.(prod)_ü", "app-unicode", client_cert_enabled=True, client_cert_mode="Required"),
        sub.add_site(long_rg, "a" * 60, client_cert_enabled=True, client_cert_mode="Optional"),
        sub.add_site("rg-null", "no-props", omit_properties=True),
        sub.add_site("rg-null", "no-kind", kind=None, client_cert_enabled=True, client_cert_mode=None),
        sub.add_site("rg-null", "nulls", raw_properties_override={
            "clientCertEnabled": None, "clientCertMode": None, "clientCertExclusionPaths": None,
            "state": None, "httpsOnly": None, "publicNetworkAccess": OMIT}),
        sub.add_site("rg-null", "weird-mode", client_cert_enabled=True, client_cert_mode="RequiredButNotReally"),
        sub.add_site("rg-null", "long-paths", client_cert_enabled=True, client_cert_mode="Required",
                     exclusion_paths=";".join(f"/p{i:05d}" for i in range(20000))),
    ]
    odd[0].add_slot("stage.1", client_cert_enabled=True, client_cert_mode="OptionalInteractiveUser")
    arm = make_arm(tenant, page_size=2)
    sub_body = (
        '{"value":[{"id":"/subscriptions/%s","subscriptionId":"%s","displayName":"a","state":"Enabled"},'
        '{"id":"/subscriptions/%s","subscriptionId":"%s","displayName":"a","state":"Enabled"}]}'
        % ((sub.subscription_id,) * 2 + (sub.subscription_id.upper(),) * 2)
    ).encode()
    arm.faults.add(FaultRule(Status(200, body=sub_body), path=r"/subscriptions$", times=1))
    h = harness_factory(arm)
    h.run_timer()
    assert_complete(h, tenant)  # the duplicated subscription is audited once: no duplicate rows
    rows = audited(h)
    long_row = rows[odd[6].key]
    assert long_row["Status"] == "WARN"
    assert len(long_row["ExclusionPaths"]) <= 32_000 and "truncated" in long_row["ExclusionPaths"]
    assert "truncated" in long_row["Reason"]
    assert rows[odd[2].key]["ClientCertMode"] == "Ignore" and rows[odd[3].key]["Kind"] == ""
    assert rows[odd[5].key]["ClientCertMode"] == "RequiredButNotReally" and rows[odd[5].key]["Status"] == "FAIL"
    assert rows[odd[1].key]["ResourceGroup"] == long_rg


def test_malformed_setting_is_a_clear_startup_error(make_arm, harness_factory) -> None:
    from shared.core.config import ConfigError

    h = harness_factory(make_arm(small_tenant()))
    for name, value in [("AUDIT_ARM_ENDPOINT", "not a url"), ("AUDIT_RESULTS_TABLE", "bad_name"),
                        ("AUDIT_SCHEDULE", "nightly")]:
        h.apply_env(**{name: value})
        with pytest.raises(ConfigError, match=name):
            h.run_timer()


def test_no_secret_reaches_logs_or_rows(make_arm, harness_factory, caplog, azurite) -> None:
    import logging

    tenant = small_tenant()
    arm = make_arm(tenant)
    arm.faults.forbid_subscription(tenant.subscriptions[0].subscription_id)
    h = harness_factory(arm)
    caplog.set_level(logging.DEBUG)  # everything, the SDKs' HTTP logging included
    h.run_timer()
    text = "\n".join(r.getMessage() for r in caplog.records)
    text += "\n".join(str(r) for r in h.table("AUDIT_RESULTS_TABLE") + h.table("AUDIT_LATEST_TABLE") + h.table("AUDIT_RUNS_TABLE"))
    assert arm.issued_tokens, "tokens were issued"
    for token in arm.issued_tokens:
        assert token not in text
        assert token.split(".")[1] not in text  # not even the claims part
    from tests.emulators.azurite import ACCOUNT_KEY

    assert ACCOUNT_KEY not in text
    assert arm.identity_header not in text


def test_process_killed_between_rows_and_state_then_rerun(make_arm, harness_factory) -> None:
    import os
    import subprocess
    import sys

    tenant = small_tenant()
    h = harness_factory(make_arm(tenant))
    h.apply_env(AUDIT_LEASE_SECONDS="60", AUDIT_CONCURRENCY="1")
    h.run_timer()  # baseline
    flipped = next(s for s in tenant.subscriptions[0].sites if s.expected_status == "PASS")
    flipped.update(client_cert_enabled=True, client_cert_mode="Optional")
    expected_new = {flipped.key}
    h.clear_events()

    proc = subprocess.run([sys.executable, "-m", "tests.crash_run"], env=dict(os.environ), capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 137, proc.stderr
    assert "ClientCertAudit.NewFailure" not in proc.stderr, "the killed run alerted nothing"
    killed = h.runs()[-1]
    assert killed["Outcome"] == "running" and len(h.runs()) == 2

    # The lease is judged by the table service's clock: move it (the proxy's Date), not this host's.
    killed_at = datetime.now(UTC)
    service = h.service_clock()
    service.date_offset = 20
    h.run_at(killed_at + timedelta(seconds=20))  # while the dead run's lease is still valid: skipped, not raced
    assert len(h.runs()) == 2 and not h.run_summaries()
    service.date_offset = 61
    h.run_at(killed_at + timedelta(seconds=61))  # the lease expired: the unfinished run is resumed
    runs = h.runs()
    assert len(runs) == 2 and runs[-1]["RunId"] == killed["RunId"] and runs[-1]["Attempts"] == 2
    assert_complete(h, tenant)
    assert {k for k, r in h.rows_by_id().items() if r["NewFailure"]} == expected_new
    assert {e["ResourceId"].lower() for e in h.new_failure_events()} == expected_new
    assert len(h.new_failure_events()) == len(expected_new), "no duplicate events"


def test_group_lists_start_while_the_site_list_pages_and_fall_back_with_every_app(make_arm, harness_factory) -> None:
    # A group's includeSlots list starts as soon as a site-list page names the group (pipelined, to use
    # ARM's read budget while the site list pages); if it fails over to per-app slot lists, that waits
    # until the site list is done, so apps listed on later pages still get their slots audited.
    tenant = Tenant()
    sub = tenant.add_subscription()
    apps = [sub.add_site("rg-late", f"app-{n}", client_cert_enabled=True, client_cert_mode="Required") for n in range(6)]
    slots = [app.add_slot("staging", client_cert_enabled=False) for app in apps]
    sub.add_site("rg-other", "other", client_cert_enabled=True, client_cert_mode="Optional")
    arm = make_arm(tenant, latency=0.03, page_size={"sites_list": 1})
    sid = sub.subscription_id
    arm.faults.add(FaultRule(Status(500), path=RG_SITES.format(sub=sid, rg="rg-late")))
    h = harness_factory(arm)
    h.apply_env(AUDIT_RETRY_TOTAL="0")
    h.run_timer()
    rows = h.rows_by_id()
    assert not errors(h)
    assert {s.key for s in slots} <= set(rows), "slots of apps listed after the failed group list started"
    assert all(rows[s.key]["Status"] == "FAIL" for s in slots)
    assert arm.stats()["by_kind"].get("slots_list", 0) == len(apps)
    paths = [r.path.lower() for r in arm.requests]
    site_pages = [i for i, p in enumerate(paths) if p.startswith(f"/subscriptions/{sid}/providers/microsoft.web/sites")]
    group_lists = [i for i, p in enumerate(paths) if "/resourcegroups/rg-late/providers/microsoft.web/sites?" in p]
    assert len(site_pages) >= len(apps) and group_lists
    assert group_lists[0] < site_pages[-1], "the group list went out while the site list was still paging"
