"""A ``nextLink`` to another origin, or a redirect, end to end: the token never leaves for another
host, and no answer is taken from anywhere but the endpoint.

These cases run the real timer function against the ARM emulator, with one list's
``nextLink`` naming a recording TLS server on another port of 127.0.0.1 (its certificate is valid,
so a client that followed the link would succeed and hand over its token); each asserts that
nothing reached the recorder, that the listed scope got an ERROR row naming the foreign link, and
that everything else was audited as usual. The redirect cases (at the end) answer with a 3xx to the
recorder, which would serve a plausible empty list. The origin rules themselves are in
``tests/unit/test_links.py``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from azure.core.rest import HttpRequest as RestHttpRequest
from azure.identity import ManagedIdentityCredential

from shared.azure.arm_errors import ForeignLinkError
from shared.azure.inventory import ArmInventory
from shared.azure.resourcegraph import ResourceGraphInventory
from shared.core.config import load_settings
from tests.emulators.arm import ArmEmulator
from tests.emulators.faults import FaultRule, Status
from tests.emulators.recorder import RecordingTlsServer
from tests.emulators.tenant import Tenant
from tests.emulators.tls import TlsMaterial
from tests.harness import AuditHarness


# -- end to end --------------------------------------------------------------------------------------
def pinned_tenant() -> Tenant:
    """Three subscriptions of two groups of three apps; the first app of each group has two slots."""
    tenant = Tenant()
    for s in range(3):
        sub = tenant.add_subscription(display_name=f"Pinned {s}")
        for g in range(2):
            for a in range(3):
                site = sub.add_site(
                    f"rg-{s}-{g}", f"app-{s}-{g}-{a}", client_cert_enabled=True, client_cert_mode="Required"
                )
                if a == 0:
                    site.add_slot("staging")
                    site.add_slot("qa")
    return tenant


PAGES = {"subscriptions": 1, "sites_list": 2, "rg_sites_list": 2, "slots_list": 1}


@pytest.fixture
def recorder(tls: TlsMaterial) -> Iterator[RecordingTlsServer]:
    with RecordingTlsServer(tls) as server:
        yield server


def assert_nothing_reached(recorder: RecordingTlsServer) -> None:
    assert recorder.connections == 0 and recorder.requests == [], "the token left for another host"
    recorder.probe()  # the recorder works: a client that had come would have been seen
    assert recorder.connections == 1 and [r.path for r in recorder.requests] == ["/probe"]


def rows_split(h: AuditHarness) -> tuple[dict[str, Any], dict[str, Any]]:
    rows = h.rows_by_id()
    return (
        {k: r for k, r in rows.items() if r["Status"] != "ERROR"},
        {k: r for k, r in rows.items() if r["Status"] == "ERROR"},
    )


def test_site_list_with_a_foreign_next_link_is_an_error_row_and_sends_nothing(
    make_arm,
    harness_factory,
    recorder,
) -> None:
    tenant = pinned_tenant()
    victim = tenant.subscriptions[1]
    arm = make_arm(tenant, page_size=PAGES)
    arm.foreign_next_links = {
        rf"(?i)^/subscriptions/{victim.subscription_id}/providers/Microsoft\.Web/sites$": recorder.url
    }
    h = harness_factory(arm)
    h.run_timer()

    audited, errors = rows_split(h)
    scope = f"/subscriptions/{victim.subscription_id}"
    assert list(errors) == [scope]
    reason = errors[scope]["Reason"]
    assert f"nextLink to {recorder.url}, not {arm.url}" in reason and "refused" in reason
    others = {k for k, e in tenant.expected().items() if e.subscription_id != victim.subscription_id}
    assert others <= set(audited), "the other subscriptions are audited as usual"
    first_page = victim.sites[:2]
    assert {s.key for s in first_page} <= set(audited), "the page that carried the link is kept"
    assert h.runs()[-1]["Outcome"] == "partial"
    assert_nothing_reached(recorder)


def test_group_list_with_a_foreign_next_link_is_the_groups_error_row(
    make_arm,
    harness_factory,
    recorder,
) -> None:
    tenant = pinned_tenant()
    sub = tenant.subscriptions[0]
    group = "rg-0-1"
    arm = make_arm(tenant, page_size=PAGES)
    arm.foreign_next_links = {
        rf"(?i)^/subscriptions/{sub.subscription_id}/resourceGroups/{group}/providers/Microsoft\.Web/sites$": recorder.url
    }
    h = harness_factory(arm)
    h.run_timer()

    audited, errors = rows_split(h)
    scope = f"/subscriptions/{sub.subscription_id}/resourcegroups/{group}"
    assert list(errors) == [scope]
    assert f"nextLink to {recorder.url}" in errors[scope]["Reason"]
    listed = sub.sites_in_group(group, include_slots=True) or []
    first_page = listed[: PAGES["rg_sites_list"]]
    behind = {r.key for r in listed if r.is_slot} - {r.key for r in first_page}
    assert behind, "the group has slots behind its first page"
    # The page that carried the link is kept (as for the site list); the slots behind it are not read.
    assert set(tenant.expected()) - set(audited) == behind, "only the group's unread slots are not audited"
    assert arm.stats()["by_kind"]["slots_list"] == 0, "a refused link is not retried app by app"
    assert_nothing_reached(recorder)


def test_per_app_slot_list_with_a_foreign_next_link_is_the_apps_error_row(
    make_arm,
    harness_factory,
    recorder,
) -> None:
    tenant = pinned_tenant()
    sub = tenant.subscriptions[2]
    group = "rg-2-0"
    app = sub.get_site(group, "app-2-0-0")
    assert app is not None and len(app.slots) == 2
    arm = make_arm(tenant, page_size=PAGES)
    sid = sub.subscription_id
    # the group list fails (not for access): the audit falls back to per-app slot lists
    arm.faults.add(
        FaultRule(Status(500), path=rf"/subscriptions/{sid}/resourceGroups/{group}/providers/Microsoft\.Web/sites$")
    )
    arm.foreign_next_links = {
        rf"(?i)/resourceGroups/{group}/providers/Microsoft\.Web/sites/{app.name}/slots$": recorder.url
    }
    h = harness_factory(arm)
    h.apply_env(AUDIT_RETRY_TOTAL="0")
    h.run_timer()

    audited, errors = rows_split(h)
    scope = f"{app.id}/slots".lower()
    assert list(errors) == [scope]
    assert f"nextLink to {recorder.url}" in errors[scope]["Reason"]
    assert set(tenant.expected()) - set(audited) == {s.key for s in app.slots}
    assert_nothing_reached(recorder)


def test_subscription_list_with_a_foreign_next_link_fails_the_run(
    make_arm,
    harness_factory,
    recorder,
) -> None:
    tenant = pinned_tenant()
    arm = make_arm(tenant, page_size=PAGES)
    arm.foreign_next_links = {r"^/subscriptions$": recorder.url}
    h = harness_factory(arm)
    with pytest.raises(Exception, match=re.escape(f"nextLink to {recorder.url}")):
        h.run_timer()
    assert h.run_summaries()[-1]["Outcome"] == "failed"
    assert h.rows() == []
    assert_nothing_reached(recorder)


def _settings(arm: ArmEmulator, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.delenv("AUDIT_SUBSCRIPTIONS", raising=False)
    for key, value in arm.env().items():
        monkeypatch.setenv(key, value)
    return load_settings(require_table=False)


def test_the_sdks_own_pager_is_stopped_by_the_pipeline(make_arm, monkeypatch, recorder) -> None:
    """If the raw pager ever falls back to the SDK's model pager, the pinned pipeline still refuses."""
    tenant = pinned_tenant()
    sub = tenant.subscriptions[0]
    arm = make_arm(tenant, page_size=PAGES)
    arm.foreign_next_links = {r"(?i)/providers/Microsoft\.Web/sites$": recorder.url}
    inventory = ArmInventory(ManagedIdentityCredential(), _settings(arm, monkeypatch))
    try:
        with inventory.web_client(sub.subscription_id) as web:
            pages = web.web_apps.list().by_page()
            assert len(list(next(pages))) == 2
            with pytest.raises(ForeignLinkError, match=rf"refused a request to {re.escape(recorder.url)}"):
                next(pages)
    finally:
        inventory.close()
    assert_nothing_reached(recorder)


def test_resource_graph_client_sends_nothing_elsewhere(make_arm, monkeypatch, recorder) -> None:
    """Resource Graph pages by $skipToken in the body (no link to follow); its pipeline is pinned anyway."""
    arm = make_arm(pinned_tenant())
    graph = ResourceGraphInventory(ManagedIdentityCredential(), _settings(arm, monkeypatch))
    try:
        ok = graph._client._send_request(RestHttpRequest("GET", f"{arm.url}/subscriptions?api-version=2022-12-01"))
        assert ok.status_code == 200 and json.loads(ok.text())["value"]
        with pytest.raises(ForeignLinkError, match=r"not the Resource Graph endpoint"):
            graph._client._send_request(RestHttpRequest("GET", f"{recorder.url}/subscriptions?api-version=2022-12-01"))
    finally:
        graph.close()
    assert_nothing_reached(recorder)


# -- redirects: never followed, whatever the status ----------------------------------------------------
# The emulator answers one request with a redirect to the recorder, which would answer a plausible empty
# list (an ARM page or a Resource Graph answer). A client that followed it would take that list as ARM's
# and retire everything it used to list; the pin refuses the redirect instead, and the scope being read
# is unreadable tonight: its ERROR row, its state kept, the run partial.
NIGHT = datetime(2026, 11, 2, 2, 0, tzinfo=UTC)


def live(h: AuditHarness, subscription_id: str) -> set[str]:
    return {k for k, r in h.state().items() if r["SubscriptionId"] == subscription_id and not r["Gone"]}


def moved_to(recorder: RecordingTlsServer, path: str) -> str:
    return f"{recorder.url}{path}?api-version=2024-11-01"


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirected_site_list_is_the_subscriptions_error_row_and_retires_nothing(
    make_arm, harness_factory, recorder, status: int
) -> None:
    tenant = pinned_tenant()
    victim = tenant.subscriptions[1]
    sid = victim.subscription_id
    arm = make_arm(tenant, page_size=PAGES)
    h = harness_factory(arm)
    h.run_at(NIGHT)
    known = live(h, sid)
    assert len(known) == 10

    path = f"/subscriptions/{sid}/providers/Microsoft.Web/sites"
    arm.faults.redirect(rf"(?i)^{re.escape(path)}$", moved_to(recorder, path), status=status)
    h.clear_events()
    h.run_at(NIGHT + timedelta(days=1))
    audited, errors = rows_split(h)
    scope = f"/subscriptions/{sid}"
    assert list(errors) == [scope]
    assert f"ARM answered HTTP {status} redirecting to {recorder.url}" in errors[scope]["Reason"]
    assert "not followed" in errors[scope]["Reason"]
    assert live(h, sid) == known, "nothing retired on the redirect's word"
    others = {k for k, e in tenant.expected().items() if e.subscription_id != sid}
    assert others <= set(audited)
    assert h.runs()[-1]["Outcome"] == "partial" and h.run_summaries()[-1]["SubscriptionsFailed"] == 1
    assert_nothing_reached(recorder)


def test_a_redirected_group_list_is_the_groups_error_row(make_arm, harness_factory, recorder) -> None:
    tenant = pinned_tenant()
    sub = tenant.subscriptions[0]
    group = "rg-0-1"
    arm = make_arm(tenant, page_size=PAGES)
    h = harness_factory(arm)
    h.run_at(NIGHT)
    known = live(h, sub.subscription_id)
    path = f"/subscriptions/{sub.subscription_id}/resourceGroups/{group}/providers/Microsoft.Web/sites"
    arm.faults.redirect(rf"(?i)^{re.escape(path)}$", moved_to(recorder, path))
    h.run_at(NIGHT + timedelta(days=1))
    _, errors = rows_split(h)
    scope = f"/subscriptions/{sub.subscription_id}/resourcegroups/{group}"
    assert list(errors) == [scope] and "HTTP 302 redirecting" in errors[scope]["Reason"]
    assert live(h, sub.subscription_id) == known
    assert arm.stats()["by_kind"]["slots_list"] == 0, "a refused redirect is not retried app by app"
    assert_nothing_reached(recorder)


def test_a_redirected_change_poll_get_is_that_resources_error_row(make_arm, harness_factory, recorder) -> None:
    tenant = pinned_tenant()
    clock = {"at": NIGHT}
    tenant.start_change_log(lambda: clock["at"])
    site = tenant.subscriptions[0].sites[1]
    arm = make_arm(tenant)
    h = harness_factory(arm)
    h.run_at(NIGHT)
    clock["at"] = NIGHT + timedelta(hours=2)
    site.update(client_cert_mode="Optional")
    path = site.id
    arm.faults.redirect(rf"(?i)^{re.escape(path)}$", moved_to(recorder, path))
    h.clear_events()
    result = h.poll_at(clock["at"] + timedelta(minutes=1))
    assert result.summary is not None and result.summary.outcome == "partial"
    row = h.rows_by_id(result.summary.run_id)[site.key]
    assert row["Status"] == "ERROR" and "HTTP 302 redirecting" in row["Reason"]
    assert h.state()[site.key]["Gone"] is False and h.state()[site.key]["Status"] == "PASS"
    assert not h.new_failure_events()
    assert_nothing_reached(recorder)


def test_a_redirected_resource_graph_query_is_an_error_for_every_subscription(
    make_arm, harness_factory, recorder
) -> None:
    """307 keeps the POST (and its query): a client that followed it would take the recorder's empty
    answer as Resource Graph's and confirm every subscription's silence."""
    tenant = pinned_tenant()
    arm = make_arm(tenant)
    h = harness_factory(arm)
    h.apply_env(AUDIT_INVENTORY_SOURCE="resourcegraph")
    h.run_at(NIGHT)
    known = {k for k, r in h.state().items() if not r["Gone"]}
    path = "/providers/Microsoft.ResourceGraph/resources"
    arm.faults.redirect(rf"(?i)^{re.escape(path)}$", moved_to(recorder, path), status=307, method="POST")
    h.run_at(NIGHT + timedelta(days=1))
    audited, errors = rows_split(h)
    assert not audited
    tenant_row = errors.pop("/")  # no subscription could be read: the run is blind, not a pass
    assert "all 3 were unreadable" in tenant_row["Reason"] and h.runs()[-1]["Outcome"] == "blind"
    assert set(errors) == {f"/subscriptions/{s.subscription_id}" for s in tenant.subscriptions}
    assert all("Resource Graph answered HTTP 307 redirecting" in r["Reason"] for r in errors.values())
    assert {k for k, r in h.state().items() if not r["Gone"]} == known
    assert_nothing_reached(recorder)


def test_a_redirected_change_feed_fails_the_poll_and_keeps_the_watermark(
    make_arm, harness_factory, recorder
) -> None:
    tenant = pinned_tenant()
    clock = {"at": NIGHT}
    tenant.start_change_log(lambda: clock["at"])
    arm = make_arm(tenant)
    h = harness_factory(arm)
    h.run_at(NIGHT)
    clock["at"] = NIGHT + timedelta(hours=1)
    first = h.poll_at(clock["at"])
    tenant.subscriptions[0].sites[0].update(client_cert_mode="Optional")
    path = "/providers/Microsoft.ResourceGraph/resources"
    rule = arm.faults.redirect(rf"(?i)^{re.escape(path)}$", moved_to(recorder, path), status=307, method="POST")
    with pytest.raises(Exception, match="Resource Graph answered HTTP 307 redirecting"):
        h.poll_at(clock["at"] + timedelta(minutes=10))
    arm.faults.remove(rule)
    later = h.poll_at(clock["at"] + timedelta(minutes=20))
    assert later.since == first.since, "the watermark stayed"
    assert_nothing_reached(recorder)


def test_a_redirected_subscription_list_fails_the_run(make_arm, harness_factory, recorder) -> None:
    arm = make_arm(pinned_tenant())
    arm.faults.redirect(r"^/subscriptions$", moved_to(recorder, "/subscriptions"))
    h = harness_factory(arm)
    with pytest.raises(Exception, match="HTTP 302 redirecting"):
        h.run_timer()
    assert h.run_summaries()[-1]["Outcome"] == "failed"
    assert_nothing_reached(recorder)
