"""The emulated Azure, exercised through the real SDKs over HTTPS.

If these pass, the product's integration tests talk to something that behaves like ARM, App Service
managed identity and Table Storage on the wire; if the SDKs change how they page, retry or
authenticate, these fail first and point at the emulator rather than at the product.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import requests
from azure.core.exceptions import (
    ClientAuthenticationError,
    DecodeError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.data.tables import TableClient, TableServiceClient
from azure.identity import ManagedIdentityCredential
from azure.mgmt.resource.subscriptions import SubscriptionClient
from azure.mgmt.web import WebSiteManagementClient

from tests.conftest import MakeArm
from tests.emulators.arm import ArmEmulator, ThrottleModel, UserAssignedIdentity, site_json
from tests.emulators.azurite import Azurite
from tests.emulators.faults import FaultRule, Latency, MalformedJson, Reset, Status, Truncated
from tests.emulators.tenant import (
    AWKWARD_RESOURCE_GROUPS,
    KEYWORD_RESOURCES,
    KINDS,
    OMIT,
    SPREADS,
    Tenant,
    expected_verdict,
    generate_tenant,
)
from tests.emulators.tls import TlsMaterial


# -- helpers --------------------------------------------------------------------------------------
def use(emu: ArmEmulator, monkeypatch: pytest.MonkeyPatch) -> ManagedIdentityCredential:
    """Point the process at ``emu`` and build a credential (azure-identity reads env at construction)."""
    for key, value in emu.env().items():
        monkeypatch.setenv(key, value)
    return ManagedIdentityCredential()


def web(emu: ArmEmulator, cred: Any, sub_id: str, **kwargs: Any) -> WebSiteManagementClient:
    return WebSiteManagementClient(cred, sub_id, base_url=emu.url, credential_scopes=emu.credential_scopes, **kwargs)


def raw_get(emu: ArmEmulator, path: str, *, token: str | None = None, **kwargs: Any) -> requests.Response:
    """Plain HTTPS GET (verifying against the test CA) for wire details the SDKs hide."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    url = path if path.startswith("https://") else emu.url + path
    return requests.get(url, headers=headers, verify=str(emu.tls.ca_file), timeout=10, **kwargs)


def small_tenant() -> Tenant:
    tenant = Tenant(tenant_id="11111111-1111-4111-8111-111111111111")
    sub = tenant.add_subscription("22222222-2222-4222-8222-222222222222", "Prod")
    site = sub.add_site("rg-café-ü", "web1", client_cert_enabled=True, client_cert_mode="Required")
    site.add_slot("staging", client_cert_enabled=True, client_cert_mode="Optional")
    site.add_slot("qa", client_cert_enabled=False)
    sub.add_site("rg-café-ü", "web2", kind=None, client_cert_enabled=True, client_cert_mode=None)
    sub.add_site(
        "RG.Prod.v2",
        "func1",
        kind="functionapp,linux",
        exclusion_paths="/health,/status;/metrics",
        client_cert_enabled=True,
    )
    return tenant


# -- tenant model and oracle ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("enabled", "mode", "paths", "expected"),
    [
        (True, "Required", None, ("PASS", "Required")),
        (True, "Required", "/health,/status;/metrics", ("WARN", "Required")),
        (True, "Required", " ; , ", ("PASS", "Required")),
        (True, None, None, ("PASS", "Required")),
        (True, "Optional", None, ("FAIL", "Optional")),
        (True, "OptionalInteractiveUser", None, ("FAIL", "OptionalInteractiveUser")),
        (True, "Bogus", None, ("FAIL", "Bogus")),
        (False, "Required", None, ("FAIL", "Ignore")),
        (None, "Required", "/x", ("FAIL", "Ignore")),
        ("true", "Required", None, ("FAIL", "Ignore")),
    ],
)
def test_oracle_rule_table(enabled: Any, mode: Any, paths: Any, expected: tuple[str, str]) -> None:
    assert expected_verdict(enabled, mode, paths) == expected


def test_generator_is_deterministic_and_covers_every_case() -> None:
    a = generate_tenant(7, subscriptions=4, sites=120, disabled_subscriptions=1, deleted_subscriptions=1)
    b = generate_tenant(7, subscriptions=4, sites=120, disabled_subscriptions=1, deleted_subscriptions=1)
    assert [s.id for s in a.iter_resources()] == [s.id for s in b.iter_resources()]
    assert a.counts() == b.counts()
    counts = a.counts()
    keyword_slots = sum(1 for *_, slot in KEYWORD_RESOURCES if slot)
    assert counts["sites"] == 120 + 2 * 3 + len(KEYWORD_RESOURCES) - keyword_slots
    assert counts["slots"] == 36 + keyword_slots
    resources = list(a.iter_resources())
    assert {r.kind for r in resources} == set(KINDS)
    verdicts = {(r.expected_status, r.expected_mode) for r in resources}
    for v in [
        ("PASS", "Required"),
        ("WARN", "Required"),
        ("FAIL", "Optional"),
        ("FAIL", "OptionalInteractiveUser"),
        ("FAIL", "Ignore"),
        ("FAIL", "Bogus"),
    ]:
        assert v in verdicts
    assert any(r.client_cert_mode is None and r.client_cert_enabled for r in resources)
    assert any(r.client_cert_mode == "Required" and r.client_cert_enabled is False for r in resources)
    assert set(AWKWARD_RESOURCE_GROUPS) <= set(a.subscriptions[0].resource_groups)
    keyword = {(r.resource_group, r.name, r.slot_name) for r in a.subscriptions[0].iter_resources()}
    assert set(KEYWORD_RESOURCES) <= keyword
    assert {s.state for s in a.subscriptions} == {"Enabled", "Disabled", "Deleted"}
    active = {s.subscription_id for s in a.subscriptions if s.state == "Enabled"}
    expected = a.expected()
    assert expected and {e.subscription_id for e in expected.values()} == active
    assert all(key == key.lower() for key in expected)
    assert generate_tenant(8, subscriptions=4, sites=120).tenant_id != a.tenant_id


def test_generator_scales_to_benchmark_size() -> None:
    start = time.perf_counter()
    tenant = generate_tenant(1, subscriptions=50, sites=100_000, slot_share=0.3, keyword_names=False)
    elapsed = time.perf_counter() - start
    assert tenant.counts()["sites"] == 100_000
    assert tenant.counts()["slots"] == 30_000
    assert elapsed < 15, f"generation took {elapsed:.1f}s"


def test_flatter_spread_caps_the_largest_subscription() -> None:
    """The two spreads the benchmark measures memory on (at 1/10 of its size, same proportions)."""
    largest = {}
    for name, exponent in SPREADS.items():
        tenant = generate_tenant(1, subscriptions=100, sites=10_000, keyword_names=False, spread_exponent=exponent)
        assert tenant.counts()["sites"] == 10_000
        largest[name] = max(sum(1 for _ in s.iter_resources()) for s in tenant.subscriptions)
    assert largest["heavy"] > 1.5 * largest["flat"]  # 37,217 against 14,862 at 1,000 subscriptions
    assert largest["flat"] > 1_500


def test_full_site_shape_is_a_real_list_page() -> None:
    """By default sites carry what a real ``WebApps_List`` page does (siteConfig, host-name lists,
    SSL states: about 3 KB each, as ListWebAppsByResourceGroup.json), so memory is measured on
    what Azure sends; the compact shape stays available and audits identically."""
    tenant = generate_tenant(4, subscriptions=3, sites=300, keyword_names=False)
    sizes = {"full": 0, "compact": 0}
    custom_domains = 0
    for item in tenant.iter_resources():
        full = site_json(item, "sites_list")
        compact = site_json(item, "sites_list", "compact")
        sizes["full"] += len(json.dumps(full))
        sizes["compact"] += len(json.dumps(compact))
        props = full["properties"]
        assert {"defaultDocuments", "virtualApplications", "netFrameworkVersion", "scmMinTlsVersion"} <= set(
            props["siteConfig"]
        )
        assert {"customDomainVerificationId", "possibleOutboundIpAddresses", "outboundVnetRouting"} <= set(props)
        assert len(props["hostNameSslStates"]) == len(props["enabledHostNames"]) == len(props["hostNames"]) + 1
        custom_domains += len(props["hostNames"]) > 1
        for key in ("clientCertEnabled", "clientCertMode", "clientCertExclusionPaths", "httpsOnly", "state"):
            assert props.get(key) == compact["properties"].get(key)
    count = sum(1 for _ in tenant.iter_resources())
    assert 2_800 <= sizes["full"] / count <= 4_000
    assert sizes["compact"] / count < 0.6 * sizes["full"] / count
    assert 0.1 * count < custom_domains < 0.4 * count
    with pytest.raises(ValueError, match="unknown site shape"):
        site_json(next(tenant.iter_resources()), "sites_list", "tiny")


def test_oracle_follows_updates_and_overrides() -> None:
    tenant = small_tenant()
    sub = tenant.subscriptions[0]
    site = sub.get_site("RG-CAFÉ-Ü", "WEB1")
    assert site is not None
    assert (site.expected_status, site.expected_mode) == ("PASS", "Required")
    site.update(client_cert_mode="OptionalInteractiveUser")
    assert site.expected_status == "FAIL"
    site.update(client_cert_mode="Required", raw_properties_override={"clientCertEnabled": OMIT})
    assert site.expected_mode == "Ignore"
    site.update(raw_properties_override=None, omit_properties=True, omit_properties_on_get=True)
    assert site.expected_status == "FAIL"
    with pytest.raises(ValueError, match="invalid ARM resource-group name"):
        sub.add_site("ends-with-dot.", "x")


# -- ARM through the SDKs -------------------------------------------------------------------------
def test_subscriptions_all_pages(make_arm: MakeArm, monkeypatch: pytest.MonkeyPatch) -> None:
    tenant = generate_tenant(2, subscriptions=5, sites=20, disabled_subscriptions=1, deleted_subscriptions=1)
    emu = make_arm(tenant, page_size={"subscriptions": 2})
    client = SubscriptionClient(use(emu, monkeypatch), base_url=emu.url, credential_scopes=emu.credential_scopes)
    subs = list(client.subscriptions.list())
    assert [s.subscription_id for s in subs] == [s.subscription_id for s in tenant.subscriptions]
    assert {str(s.state.value) for s in subs} == {"Enabled", "Disabled", "Deleted"}
    assert all(s.tenant_id == tenant.tenant_id and s.display_name for s in subs)
    stats = emu.stats()
    assert stats["by_kind"]["subscriptions"] == 4  # 7 subscriptions, 2 per page
    assert stats["by_kind"]["token"] == 1  # the credential caches the ARM token
    assert stats["api_versions"]["2022-12-01"] == 4


def test_sites_list_pages_and_shape(make_arm: MakeArm, monkeypatch: pytest.MonkeyPatch) -> None:
    tenant = generate_tenant(3, subscriptions=2, sites=60)
    sub = max(tenant.subscriptions, key=lambda s: len(s.sites))
    emu = make_arm(tenant, page_size=7, empty_page_every=2, trailing_empty_page=True)
    client = web(emu, use(emu, monkeypatch), sub.subscription_id)
    sites = list(client.web_apps.list())
    assert [s.id for s in sites] == [s.id for s in sub.sites]  # production sites only, no slots
    by_id = {s.id: s for s in sub.sites}
    for got in sites:
        model = by_id[got.id]
        assert got.type == "Microsoft.Web/sites"
        assert got.kind == model.kind
        assert got.client_cert_enabled is model.client_cert_enabled
        if model.client_cert_mode is None:
            assert got.client_cert_mode is None
        else:  # azure-mgmt-web 11 returns enum members for known values, plain str otherwise
            assert str(getattr(got.client_cert_mode, "value", got.client_cert_mode)) == model.client_cert_mode
        assert got.client_cert_exclusion_paths == model.exclusion_paths
        assert got.resource_group == model.resource_group
    assert any(s.kind is None for s in sites)
    assert emu.stats()["by_kind"]["sites_list"] > len(sites) // 7


def test_list_by_resource_group_with_slots_and_get(make_arm: MakeArm, monkeypatch: pytest.MonkeyPatch) -> None:
    tenant = small_tenant()
    sub = tenant.subscriptions[0]
    emu = make_arm(tenant, page_size=2)
    client = web(emu, use(emu, monkeypatch), sub.subscription_id)
    items = list(client.web_apps.list_by_resource_group("rg-café-ü", include_slots=True))
    assert [i.name for i in items] == ["web1", "web1/staging", "web1/qa", "web2"]
    slot = items[1]
    assert slot.type == "Microsoft.Web/sites/slots"
    assert slot.id.endswith("/resourceGroups/rg-café-ü/providers/Microsoft.Web/sites/web1/slots/staging")
    without = list(client.web_apps.list_by_resource_group("RG-CAFÉ-Ü"))
    assert [i.name for i in without] == ["web1", "web2"]
    slots = list(client.web_apps.list_slots("rg-café-ü", "web1"))
    assert [s.name for s in slots] == ["web1/staging", "web1/qa"]
    got = client.web_apps.get("rg-café-ü", "web2")
    assert got.kind is None and got.client_cert_mode is None and got.client_cert_enabled is True
    with pytest.raises(ResourceNotFoundError):
        client.web_apps.get("rg-café-ü", "nope")
    with pytest.raises(ResourceNotFoundError):
        list(client.web_apps.list_by_resource_group("no-such-rg", include_slots=True))
    assert emu.stats()["by_kind"]["rg_sites_list"] >= 3


def test_id_casing_differs_between_routes(make_arm: MakeArm, monkeypatch: pytest.MonkeyPatch) -> None:
    tenant = small_tenant()
    sub = tenant.subscriptions[0]
    site = sub.get_site("rg-café-ü", "web1")
    assert site is not None
    site.id_casing = "upper-rg"
    emu = make_arm(tenant)
    client = web(emu, use(emu, monkeypatch), sub.subscription_id)
    listed = next(s for s in client.web_apps.list() if s.name == "web1")
    fetched = client.web_apps.get("rg-café-ü", "web1")
    assert listed.id == site.id
    assert fetched.id != listed.id and fetched.id.lower() == listed.id.lower()
    assert "/resourceGroups/RG-CAFÉ-Ü/" in fetched.id
    site.id_casing = lambda canonical, route: canonical.lower() if route == "sites_list" else canonical
    assert next(s for s in client.web_apps.list() if s.name == "web1").id == site.id.lower()


def test_model_changes_show_on_next_request(make_arm: MakeArm, monkeypatch: pytest.MonkeyPatch) -> None:
    tenant = small_tenant()
    sub = tenant.subscriptions[0]
    emu = make_arm(tenant)
    client = web(emu, use(emu, monkeypatch), sub.subscription_id)
    assert len(list(client.web_apps.list())) == 3
    site = sub.get_site("rg-café-ü", "web1")
    assert site is not None
    site.update(client_cert_mode="Optional", omit_properties=True)
    listed = next(s for s in client.web_apps.list() if s.name == "web1")
    assert listed.client_cert_enabled is None  # properties omitted from the list...
    assert str(client.web_apps.get("rg-café-ü", "web1").client_cert_mode.value) == "Optional"  # ...not from GET
    sub.remove_site("rg-café-ü", "web2")
    assert [s.name for s in client.web_apps.list()] == ["web1", "func1"]
    sub.set_state("Deleted")
    with pytest.raises(ResourceNotFoundError):
        list(client.web_apps.list())


def test_429_with_retry_after_is_retried(make_arm: MakeArm, monkeypatch: pytest.MonkeyPatch) -> None:
    tenant = small_tenant()
    sub = tenant.subscriptions[0]
    emu = make_arm(tenant)
    rule = emu.faults.throttle(r"/providers/Microsoft\.Web/sites$", retry_after=1, times=1)
    client = web(emu, use(emu, monkeypatch), sub.subscription_id)
    start = time.monotonic()
    assert len(list(client.web_apps.list())) == 3
    assert time.monotonic() - start >= 0.9  # azure-core honoured Retry-After
    assert rule.applied == 1
    stats = emu.stats()
    assert stats["throttled"] == 1 and stats["by_status"][429] == 1 and stats["by_kind"]["sites_list"] == 2


def test_forbidden_subscription_raises(make_arm: MakeArm, monkeypatch: pytest.MonkeyPatch) -> None:
    tenant = small_tenant()
    sub = tenant.subscriptions[0]
    emu = make_arm(tenant)
    emu.faults.forbid_subscription(sub.subscription_id)
    client = web(emu, use(emu, monkeypatch), sub.subscription_id)
    with pytest.raises(HttpResponseError) as info:
        list(client.web_apps.list())
    assert info.value.status_code == 403
    assert info.value.error is not None and info.value.error.code == "AuthorizationFailed"


def test_wrong_audience_gets_401(make_arm: MakeArm, monkeypatch: pytest.MonkeyPatch) -> None:
    tenant = small_tenant()
    emu = make_arm(tenant)
    cred = use(emu, monkeypatch)
    client = SubscriptionClient(cred, base_url=emu.url, credential_scopes=["https://management.azure.com/.default"])
    with pytest.raises(ClientAuthenticationError) as info:
        list(client.subscriptions.list())
    assert info.value.status_code == 401
    assert info.value.error is not None and info.value.error.code == "InvalidAuthenticationToken"
    # The trailing-slash spelling of the ARM audience is accepted.
    ok = SubscriptionClient(cred, base_url=emu.url, credential_scopes=[emu.url + "//.default"])
    assert len(list(ok.subscriptions.list())) == 1


def test_raw_wire_errors(make_arm: MakeArm, monkeypatch: pytest.MonkeyPatch) -> None:
    emu = make_arm(small_tenant())
    assert raw_get(emu, "/subscriptions?api-version=2022-12-01").status_code == 401
    forged = emu.make_token(emu.url)[:-4] + "AAAA"
    assert raw_get(emu, "/subscriptions?api-version=2022-12-01", token=forged).json()["error"]["code"] == (
        "InvalidAuthenticationToken"
    )
    expired = emu.make_token(emu.url, lifetime=-10)
    assert raw_get(emu, "/subscriptions", token=expired).status_code == 401
    token = emu.make_token(emu.url + "/")
    missing = raw_get(emu, "/subscriptions", token=token)
    assert missing.status_code == 400
    assert missing.json()["error"]["code"] == "MissingApiVersionParameter"
    # Literal segments are case-insensitive; the RG name is URL-decoded (unicode) and case-insensitive.
    sub_id = emu.tenant.subscriptions[0].subscription_id
    ok = raw_get(
        emu,
        f"/SUBSCRIPTIONS/{sub_id}/resourcegroups/RG-CAF%C3%89-%C3%9C/PROVIDERS/microsoft.web/"
        "SITES/web1/SLOTS/staging?api-version=2025-05-01",
        token=token,
    )
    assert ok.status_code == 200 and ok.json()["name"] == "web1/staging"
    assert ok.headers["x-ms-ratelimit-remaining-subscription-reads"]


def test_managed_identity_endpoint(make_arm: MakeArm, monkeypatch: pytest.MonkeyPatch) -> None:
    ua = UserAssignedIdentity(client_id=str(uuid.uuid4()))
    emu = make_arm(small_tenant(), user_assigned=[ua])
    use(emu, monkeypatch)
    no_header = raw_get(emu, "/msi/token?api-version=2019-08-01&resource=https://storage.azure.com")
    assert no_header.status_code == 401
    body = requests.get(
        emu.identity_endpoint,
        params={"api-version": "2019-08-01", "resource": "https://storage.azure.com/"},
        headers={"X-IDENTITY-HEADER": emu.identity_header},
        verify=str(emu.tls.ca_file),
        timeout=10,
    ).json()
    assert isinstance(body["expires_on"], str) and int(body["expires_on"]) > time.time() + 3000
    claims = emu.decode_token(body["access_token"])
    assert claims is not None and claims["aud"] == "https://storage.azure.com"
    assert claims["iss"] == f"https://sts.windows.net/{emu.tenant.tenant_id}/"
    assert {"iat", "nbf", "exp", "oid", "tid", "appid"} <= set(claims)
    token = ManagedIdentityCredential(client_id=ua.client_id).get_token(emu.url + "/.default")
    user_claims = emu.decode_token(token.token)
    assert user_claims is not None and user_claims["appid"] == ua.client_id and user_claims["oid"] == ua.object_id
    assert emu.token_requests[-1] == (emu.url, ua.client_id)
    assert token.token in emu.issued_tokens
    with pytest.raises(ClientAuthenticationError):
        ManagedIdentityCredential(client_id=str(uuid.uuid4())).get_token(emu.url + "/.default")


# -- fault injection and paging oddities ----------------------------------------------------------
def test_fault_actions(make_arm: MakeArm, monkeypatch: pytest.MonkeyPatch) -> None:
    tenant = small_tenant()
    sub = tenant.subscriptions[0]
    emu = make_arm(tenant)
    cred = use(emu, monkeypatch)
    client = web(emu, cred, sub.subscription_id, retry_total=0)
    sites_path = r"/providers/Microsoft\.Web/sites$"

    emu.faults.add(FaultRule(Reset(), sites_path, times=1))
    with pytest.raises((ServiceRequestError, ServiceResponseError)):
        list(client.web_apps.list())
    assert emu.stats()["by_status"][0] == 1
    assert len(list(client.web_apps.list())) == 3  # times=1: the next request is answered

    emu.faults.add(FaultRule(MalformedJson(), sites_path, times=1))
    with pytest.raises(DecodeError):
        list(client.web_apps.list())

    emu.faults.add(FaultRule(Truncated(), sites_path, times=1))
    with pytest.raises((ServiceResponseError, DecodeError)):
        list(client.web_apps.list())

    # skip lets the first match through: the second GET fails with a 503 carrying an HTTP-date.
    rule = emu.faults.add(
        FaultRule(Status(503, retry_after="Wed, 21 Oct 2015 07:28:00 GMT"), r"/sites/web1$", skip=1, times=1)
    )
    client.web_apps.get("rg-café-ü", "web1")
    with pytest.raises(HttpResponseError) as info:
        client.web_apps.get("rg-café-ü", "web1")
    assert info.value.status_code == 503 and info.value.response is not None
    assert info.value.response.headers["Retry-After"] == "Wed, 21 Oct 2015 07:28:00 GMT"
    assert (rule.matched, rule.applied) == (2, 1)

    emu.faults.add(FaultRule(Latency(0.3), sites_path, times=1))
    start = time.monotonic()
    list(client.web_apps.list())
    assert time.monotonic() - start >= 0.3

    # A reset on the token endpoint once is retried by azure-identity's pipeline.
    emu.faults.clear()
    emu.faults.add(FaultRule(Reset(), r"^/msi/token$", times=1))
    assert ManagedIdentityCredential().get_token(emu.url + "/.default").token


def test_stall_exceeds_client_read_timeout(make_arm: MakeArm, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.emulators.faults import Stall

    tenant = small_tenant()
    emu = make_arm(tenant)
    client = web(emu, use(emu, monkeypatch), tenant.subscriptions[0].subscription_id, retry_total=0)
    emu.faults.add(FaultRule(Stall(30), r"/sites$", times=1))
    start = time.monotonic()
    with pytest.raises(ServiceResponseError):
        list(client.web_apps.list(read_timeout=0.5))
    assert time.monotonic() - start < 5


def test_empty_pages_and_next_link_loop(make_arm: MakeArm) -> None:
    tenant = small_tenant()
    sub = tenant.subscriptions[0]
    emu = make_arm(tenant, page_size=1, empty_page_every=1, next_link_loop_to=1)
    token = emu.make_token(emu.url)
    url: str | None = (
        f"{emu.url}/subscriptions/{sub.subscription_id}/providers/Microsoft.Web/sites?api-version=2025-05-01"
    )
    seen_links: list[str] = []
    pages: list[list[str]] = []
    while url and len(pages) < 10:
        body = raw_get(emu, url, token=token).json()
        pages.append([v["name"] for v in body["value"]])
        url = body.get("nextLink")
        if url:
            assert url.startswith(emu.url + "/subscriptions/") and "$skiptoken=" in url
            seen_links.append(url)
    assert pages[:6] == [["web1"], [], ["web2"], [], ["func1"], ["web2"]]  # loops back to page 1
    assert seen_links[4] == seen_links[1]


def test_throttle_model(make_arm: MakeArm) -> None:
    tenant = small_tenant()
    sub = tenant.subscriptions[0]
    emu = make_arm(tenant, throttle=ThrottleModel(capacity=3, refill_per_second=0.2))
    token = emu.make_token(emu.url)
    path = f"/subscriptions/{sub.subscription_id}/providers/Microsoft.Web/sites?api-version=2025-05-01"
    remaining = [
        raw_get(emu, path, token=token).headers["x-ms-ratelimit-remaining-subscription-reads"] for _ in range(3)
    ]
    assert remaining == ["2", "1", "0"]
    throttled = raw_get(emu, path, token=token)
    assert throttled.status_code == 429
    assert int(throttled.headers["Retry-After"]) >= 1
    assert throttled.json()["error"]["code"] == "SubscriptionRequestsThrottled"
    assert raw_get(emu, "/subscriptions?api-version=2022-12-01", token=token).status_code == 200  # own bucket
    stats = emu.stats()
    assert stats["throttled"] == stats["throttled_by_model"] == 1
    assert [r.status for r in emu.requests] == [200, 200, 200, 429, 200]
    emu.reset_stats()
    assert emu.stats()["total"] == 0 and not emu.requests
    assert raw_get(emu, path, token=token).status_code == 429, "resetting counters leaves the budget drained"
    emu.refill_quotas()  # the next night: a full bucket again
    assert raw_get(emu, path, token=token).headers["x-ms-ratelimit-remaining-subscription-reads"] == "2"


# -- Table Storage through Azurite ----------------------------------------------------------------
def test_tables_with_managed_identity_via_azurite(
    make_arm: MakeArm, azurite: Azurite, monkeypatch: pytest.MonkeyPatch
) -> None:
    emu = make_arm(small_tenant())
    service = TableServiceClient(endpoint=azurite.table_service_uri, credential=use(emu, monkeypatch))
    name = f"t{uuid.uuid4().hex[:12]}"
    table = service.create_table(name)
    table.upsert_entity({"PartitionKey": "sub", "RowKey": "site", "Status": "PASS"})
    assert table.get_entity("sub", "site")["Status"] == "PASS"
    assert emu.token_requests == [("https://storage.azure.com", None)]
    # Read back independently of the token path, with the well-known dev key.
    keyed = TableClient.from_connection_string(azurite.connection_string, name)
    assert [e["RowKey"] for e in keyed.list_entities()] == ["site"]
    # A token for another audience is refused by Azurite's --oauth basic check.
    wrong = TableServiceClient(endpoint=azurite.table_service_uri, credential=_StaticToken(emu.make_token(emu.url)))
    with pytest.raises(ClientAuthenticationError):
        wrong.get_table_client(name).get_entity("sub", "site")


def test_azurite_restart_keeps_persistent_data(
    tmp_path: Path, tls: TlsMaterial, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tls.ca_file))
    monkeypatch.setenv("SSL_CERT_FILE", str(tls.ca_file))
    with Azurite(tmp_path, tls, in_memory=False) as instance:
        TableClient.from_connection_string(instance.connection_string, "keep").create_table()
        TableClient.from_connection_string(instance.connection_string, "keep").upsert_entity(
            {"PartitionKey": "p", "RowKey": "r"}
        )
        port = instance.port
        instance.restart()
        assert instance.port == port
        entity = TableClient.from_connection_string(instance.connection_string, "keep").get_entity("p", "r")
        assert entity["RowKey"] == "r"
    assert not instance.running


class _StaticToken:
    """A credential returning a fixed token (to present a wrong-audience token to Azurite)."""

    def __init__(self, token: str) -> None:
        self._token = token

    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        from azure.core.credentials import AccessToken

        return AccessToken(self._token, int(time.time()) + 3600)
