"""Resource Graph inventory: parity with the ARM list strategy, paging, quota, and the emulated API.

The parity test runs the real timer function twice on the same tenant, once per
``AUDIT_INVENTORY_SOURCE``, and requires identical findings: same resources (ids compared
case-insensitively), same Status, ClientCertMode and slots.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import requests
from azure.identity import ManagedIdentityCredential

import shared.azure.resourcegraph as rg
from shared.azure.inventory import ArmInventory
from shared.core.config import load_settings
from shared.core.evaluate import evaluate
from shared.core.models import SiteRecord
from tests.emulators.arm import ArmEmulator, ResourceGraphQuota
from tests.emulators.tenant import KEYWORD_RESOURCES, Tenant, generate_tenant
from tests.harness import AuditHarness

RG_PATH = "/providers/Microsoft.ResourceGraph/resources?api-version=2024-04-01"


def findings(h: AuditHarness) -> dict[str, tuple[str, ...]]:
    """(Status, ClientCertMode, Slot, AppName, SubscriptionId, ResourceGroup, ResourceType) per lower-cased id."""
    return {
        key: (
            r["Status"],
            r["ClientCertMode"],
            r["Slot"],
            r["AppName"].lower(),
            r["SubscriptionId"].lower(),
            r["ResourceGroup"].lower(),
            r["ResourceType"],
        )
        for key, r in h.rows_by_id().items()
    }


def assert_keyword_rows(h: AuditHarness, tenant: Tenant) -> None:
    """The resources named like the id's keywords each have their own row, names spelled as created."""
    sub = tenant.subscriptions[0]
    rows = h.rows_by_id()
    for rg_name, app, slot in KEYWORD_RESOURCES:
        site = sub.get_site(rg_name, app)
        resource = site.get_slot(slot) if site and slot else site
        assert resource is not None
        row = rows[resource.key]
        assert (row["ResourceGroup"], row["AppName"], row["Slot"], row["ResourceType"]) == (
            rg_name,
            app,
            slot or "",
            "slot" if slot else "site",
        )
        assert (row["Status"], row["ClientCertMode"]) == (resource.expected_status, resource.expected_mode)


def records(inventory: Any, subscription_ids: list[str]) -> dict[str, SiteRecord]:
    out: dict[str, SiteRecord] = {}
    for sub in subscription_ids:
        for item in inventory.scan(sub):
            assert isinstance(item, SiteRecord), item
            out.setdefault(item.key, item)  # the first sighting, as the pipeline keeps it
    return out


def settings_for(arm: ArmEmulator, monkeypatch: pytest.MonkeyPatch, **extra: str) -> Any:
    monkeypatch.delenv("AUDIT_SUBSCRIPTIONS", raising=False)
    for key, value in {**arm.env(), **extra}.items():
        monkeypatch.setenv(key, value)
    return load_settings(require_table=False)


def post_query(arm: ArmEmulator, body: dict[str, Any]) -> requests.Response:
    token = arm.make_token(arm.url)
    return requests.post(
        arm.url + RG_PATH,
        json=body,
        headers={"Authorization": f"Bearer {token}"},
        verify=str(arm.tls.ca_file),
        timeout=10,
    )


def test_findings_identical_for_arm_and_resource_graph(
    make_arm,
    harness_factory,
    monkeypatch,
) -> None:
    tenant = generate_tenant(seed=21, subscriptions=4, sites=90, slot_share=0.5, disabled_subscriptions=1)
    # id casing differs per route in ARM; Resource Graph serves the canonical id: keys must still match
    tenant.subscriptions[0].sites[1].update(id_casing="upper-rg")
    monkeypatch.setattr(rg, "PAGE_SIZE", 25)  # several Resource Graph pages on a small tenant
    arm = make_arm(tenant, page_size=9)

    via_arm = harness_factory(arm)
    via_arm.run_timer()
    via_graph = harness_factory(arm)
    via_graph.apply_env(AUDIT_INVENTORY_SOURCE="resourcegraph")
    arm.reset_stats()
    via_graph.run_timer()

    by_arm, by_graph = findings(via_arm), findings(via_graph)
    assert by_arm == by_graph
    expected = tenant.expected()
    assert set(by_graph) == set(expected)  # the disabled subscription is in neither
    assert {f[0] for f in by_graph.values()} >= {"PASS", "WARN", "FAIL"}
    assert any(f[2] for f in by_graph.values()), "slots are audited by both sources"
    for key, exp in expected.items():
        assert by_graph[key][:3] == (exp.status, exp.mode, exp.slot or ""), key
        assert by_graph[key][3:] == (
            exp.site.lower(),
            exp.subscription_id.lower(),
            exp.resource_group.lower(),
            "slot" if exp.slot else "site",
        ), key
    assert_keyword_rows(via_arm, tenant)
    assert_keyword_rows(via_graph, tenant)
    assert via_graph.runs()[-1]["Outcome"] == "complete"

    stats = arm.stats()
    pages = -(-len(expected) // 25)
    assert stats["by_kind"]["resourcegraph"] == pages  # one tenant-wide query, paged; nothing per subscription
    assert stats["by_kind"]["sites_list"] == stats["by_kind"]["rg_sites_list"] == 0
    assert stats["api_versions"].get("2024-04-01") == pages
    first = arm.resource_graph_queries[0]
    assert first["query"] == rg.SITES_QUERY and "subscriptions" not in first  # tenant-wide
    assert first["options"]["$top"] == 25 and first["options"]["resultFormat"] == "objectArray"
    assert all("$skipToken" in q["options"] for q in arm.resource_graph_queries[1:])


def test_an_unparsable_id_in_a_resource_graph_page_is_one_error_row(
    make_arm,
    harness_factory,
    monkeypatch,
) -> None:
    """Two rows of one Resource Graph page carry no usable id: each is its own ERROR row, in its own
    subscription, and every other row of the page (keyword-named resources included) is audited."""
    tenant = generate_tenant(seed=28, subscriptions=2, sites=30, slot_share=0.3)
    sub = tenant.subscriptions[0]
    plain = [s for s in sub.sites if not s.slots and s.resource_group.lower() not in ("slots", "sites")]
    extra, missing = plain[0], plain[1]
    extra.update(id_casing=lambda cid, route: cid + "/slots" if route == "resourcegraph" else cid)
    missing.update(id_casing=lambda cid, route: "" if route == "resourcegraph" else cid)
    monkeypatch.setattr(rg, "PAGE_SIZE", 20)
    arm = make_arm(tenant)
    h = harness_factory(arm)
    h.apply_env(AUDIT_INVENTORY_SOURCE="resourcegraph")
    h.run_timer()

    rows = h.rows_by_id()
    errors = {k: r for k, r in rows.items() if r["Status"] == "ERROR"}
    assert set(errors) == {
        (extra.id + "/slots").lower(),
        f"/subscriptions/{sub.subscription_id}/unparsable-item/{missing.name}".lower(),
    }
    assert all(r["SubscriptionId"] == sub.subscription_id for r in errors.values())
    assert all("cannot be read as an App Service site or slot" in r["Reason"] for r in errors.values())
    expected = {k: v for k, v in tenant.expected().items() if k not in (extra.key, missing.key)}
    audited = {k: r for k, r in rows.items() if r["Status"] != "ERROR"}
    assert set(audited) == set(expected)
    for key, exp in expected.items():
        assert (audited[key]["Status"], audited[key]["Slot"]) == (exp.status, exp.slot or ""), key
    assert_keyword_rows(h, tenant)
    summary = h.run_summaries()[-1]
    assert summary["SubscriptionsFailed"] == 0 and summary["Outcome"] == "partial"


def test_paging_over_1000_rows_matches_arm_inventory(make_arm, monkeypatch) -> None:
    tenant = generate_tenant(seed=22, subscriptions=6, sites=2000, slot_share=0.3, awkward_names=False)
    arm = make_arm(tenant, page_size=200)
    settings = settings_for(arm, monkeypatch)
    credential = ManagedIdentityCredential()
    subs = [s.subscription_id for s in ArmInventory(credential, settings).subscriptions()]

    graph = rg.ResourceGraphInventory(credential, settings)
    via_graph = records(graph, subs)
    via_arm = records(ArmInventory(credential, settings), subs)

    assert len(via_graph) == 2600 + len(KEYWORD_RESOURCES) > rg.PAGE_SIZE
    assert graph.requests == 3  # 1,000 rows a page
    assert [q["options"]["$top"] for q in arm.resource_graph_queries] == [1000, 1000, 1000]
    assert set(via_graph) == set(via_arm) == set(tenant.expected())
    for key, record in via_arm.items():
        a, g = evaluate(record), evaluate(via_graph[key])
        assert (g.status, g.client_cert_mode, g.slot, g.app_name, g.resource_group.lower()) == (
            a.status,
            a.client_cert_mode,
            a.slot,
            a.app_name,
            a.resource_group.lower(),
        ), key


def test_quota_headers_make_the_source_wait_instead_of_being_throttled(make_arm, monkeypatch) -> None:
    tenant = generate_tenant(seed=23, subscriptions=2, sites=40, slot_share=0.25)
    arm = make_arm(tenant, resource_graph_quota=ResourceGraphQuota(queries=2, window_seconds=2.0))
    monkeypatch.setattr(rg, "PAGE_SIZE", 10)  # 56 rows (50 + the keyword-named ones): 6 pages, 2 per window
    settings = settings_for(arm, monkeypatch)
    credential = ManagedIdentityCredential()
    graph = rg.ResourceGraphInventory(credential, settings)
    started = time.monotonic()
    got = records(graph, [s.subscription_id for s in tenant.subscriptions])
    elapsed = time.monotonic() - started
    assert set(got) == set(tenant.expected()) and len(got) == 56
    assert graph.requests == 6
    assert arm.stats()["resource_graph_throttled"] == 0  # it read the headers and waited
    assert elapsed >= 3.0  # two full waits for the window to reset


def test_a_429_from_resource_graph_is_retried_after_retry_after(make_arm, monkeypatch) -> None:
    tenant = generate_tenant(seed=24, subscriptions=1, sites=5, slot_share=0.0)
    # A window long enough that it is still used up when the query comes (a token, a thread and a
    # TLS handshake later, on a loaded machine: a 1 s window ran out first and nothing was throttled).
    quota = ResourceGraphQuota(queries=1, window_seconds=4.0)
    arm = make_arm(tenant, resource_graph_quota=quota)
    settings = settings_for(arm, monkeypatch)
    credential = ManagedIdentityCredential()
    graph = rg.ResourceGraphInventory(credential, settings)
    principal = arm.decode_token(credential.get_token(settings.arm_scope).token)["oid"]  # type: ignore[index]
    assert quota.take(principal)[0]  # someone else with the same identity used the window up
    got = records(graph, [s.subscription_id for s in tenant.subscriptions])
    assert set(got) == set(tenant.expected())
    assert arm.stats()["resource_graph_throttled"] == 1
    assert [r.status for r in arm.requests if "ResourceGraph" in r.path] == [429, 200]


def test_explicit_subscriptions_are_sent_in_the_query(make_arm, monkeypatch) -> None:
    tenant = generate_tenant(seed=25, subscriptions=3, sites=30, slot_share=0.3)
    chosen = tenant.subscriptions[1].subscription_id
    arm = make_arm(tenant)
    settings = settings_for(arm, monkeypatch, AUDIT_SUBSCRIPTIONS=chosen)
    graph = rg.ResourceGraphInventory(ManagedIdentityCredential(), settings)
    got = records(graph, [chosen])
    assert arm.resource_graph_queries[0]["subscriptions"] == [chosen]
    assert got and {r.subscription_id for r in got.values()} == {chosen}
    assert set(got) == {k for k, v in tenant.expected().items() if v.subscription_id == chosen}


def test_emulated_resource_graph_api(make_arm) -> None:
    tenant: Tenant = generate_tenant(seed=26, subscriptions=2, sites=12, slot_share=0.5)
    arm = make_arm(tenant)
    ok = post_query(arm, {"query": rg.SITES_QUERY, "options": {"$top": 5, "resultFormat": "objectArray"}})
    assert ok.status_code == 200
    body = ok.json()
    assert body["totalRecords"] == len(tenant.expected()) == 18 + 6  # + the keyword-named sites and slots
    assert body["count"] == 5 and body["resultTruncated"] == "false"
    assert body["$skipToken"] and len(body["data"]) == 5
    row = body["data"][0]
    assert set(row) == {
        "id",
        "name",
        "type",
        "kind",
        "location",
        "subscriptionId",
        "resourceGroup",
        "tags",
        "properties",
    }
    assert row["type"] in ("microsoft.web/sites", "microsoft.web/sites/slots")
    assert set(row["properties"]) >= {"clientCertEnabled", "clientCertMode", "clientCertExclusionPaths"}
    assert ok.headers["x-ms-user-quota-remaining"] == "14"
    assert ok.headers["x-ms-user-quota-resets-after"].count(":") == 2
    ids = [r["id"].lower() for r in body["data"]]
    following = post_query(arm, {"query": rg.SITES_QUERY, "options": {"$top": 5, "$skipToken": body["$skipToken"]}})
    assert following.json()["count"] == 5
    assert not set(ids) & {r["id"].lower() for r in following.json()["data"]}

    other = post_query(arm, {"query": "resources | project id"})
    assert other.status_code == 400 and other.json()["error"]["code"] == "BadRequest"
    assert "x-ms-user-quota-remaining" in other.headers
    bad_token = post_query(arm, {"query": rg.SITES_QUERY, "options": {"$skipToken": "!!"}})
    assert bad_token.status_code == 400
    table = post_query(arm, {"query": rg.SITES_QUERY, "options": {"resultFormat": "table"}})
    assert table.status_code == 400
    unauthenticated = requests.post(
        arm.url + RG_PATH, data=json.dumps({"query": rg.SITES_QUERY}), verify=str(arm.tls.ca_file), timeout=10
    )
    assert unauthenticated.status_code == 401


def test_subscriptions_stream_in_query_order_with_bounded_read_ahead(make_arm, monkeypatch) -> None:
    tenant = generate_tenant(seed=27, subscriptions=8, sites=300, slot_share=0.3, awkward_names=False)
    tenant.add_subscription(display_name="no apps at all")
    arm = make_arm(tenant)
    monkeypatch.setattr(rg, "PAGE_SIZE", 20)
    monkeypatch.setattr(rg, "MAX_BUFFERED", 40)
    settings = settings_for(arm, monkeypatch)
    graph = rg.ResourceGraphInventory(ManagedIdentityCredential(), settings)
    subs = graph.subscriptions()
    assert [s.subscription_id.lower() for s in subs] == sorted(s.subscription_id.lower() for s in subs)
    got: dict[str, SiteRecord] = {}
    for sub in subs:
        items = list(graph.scan(sub.subscription_id))
        assert all(isinstance(i, SiteRecord) and i.subscription_id.lower() == sub.subscription_id.lower() for i in items)
        got.update({i.key: i for i in items})  # type: ignore[union-attr]
        time.sleep(0.05)  # a slow engine: the loader must wait for it, not read the tenant into memory
    assert set(got) == set(tenant.expected())
    largest = max(sum(1 for _ in s.iter_resources()) for s in tenant.subscriptions)
    assert graph.peak_buffered <= 40 < largest < len(got), "the read-ahead is bounded, not by a subscription"
