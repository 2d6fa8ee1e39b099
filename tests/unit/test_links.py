"""A ``nextLink`` is followed only to the endpoint that issued it: the token never leaves for another host.

The end-to-end cases run the real timer function against the ARM emulator, with one list's
``nextLink`` naming a recording TLS server on another port of 127.0.0.1 (its certificate is valid,
so a client that followed the link would succeed and hand over its token); each asserts that
nothing reached the recorder, that the listed scope got an ERROR row naming the foreign link, and
that everything else was audited as usual.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from azure.core.exceptions import AzureError
from azure.core.pipeline import PipelineRequest
from azure.core.pipeline.transport import HttpRequest
from azure.core.rest import HttpRequest as RestHttpRequest
from azure.identity import ManagedIdentityCredential

from shared.config import load_settings
from shared.errors import ForeignLinkError
from shared.inventory import ArmInventory, _raw_page
from shared.links import PinnedEndpointPolicy, check_next_link, origin, same_origin, shown
from shared.resourcegraph import ResourceGraphInventory
from tests.emulators.arm import ArmEmulator
from tests.emulators.faults import FaultRule, Status
from tests.emulators.recorder import RecordingTlsServer
from tests.emulators.tenant import Tenant
from tests.emulators.tls import TlsMaterial
from tests.harness import AuditHarness

ARM = "https://management.azure.com"


# -- the comparison ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "link",
    [
        "https://management.azure.com/subscriptions?api-version=2022-12-01&$skiptoken=abc",
        "https://MANAGEMENT.Azure.com/subscriptions",  # hosts compare case-insensitively
        "HTTPS://management.azure.com/x",  # so do schemes
        "https://management.azure.com:443/x",  # the default port, spelled out
        "https://management.azure.com",  # no path
        "https://management.azure.com/",  # trailing slash
        "https://management.azure.com?$skiptoken=1",  # query straight after the host
        "https://management.azure.com/x/@evil.example/y",  # an @ in the path is not userinfo
    ],
)
def test_links_to_the_endpoint_are_followed(link: str) -> None:
    assert same_origin(link, ARM)
    assert same_origin(link, ARM + "/")  # the endpoint's own trailing slash does not matter
    check_next_link(link, ARM)


@pytest.mark.parametrize(
    "link",
    [
        "https://evil.example/subscriptions",  # another host
        "http://management.azure.com/subscriptions",  # another scheme (and the token in clear)
        "https://management.azure.com:4443/x",  # another port
        "https://management.azure.com.evil.example/x",  # a suffix
        "https://evil.example/management.azure.com/x",  # the endpoint in the path
        "https://management.azure.com@evil.example/x",  # userinfo: the host is evil.example
        "https://user:pw@management.azure.com/x",  # userinfo at all: never plain
        "https://management.azure.com:443@evil.example/x",
        "https://management.azure.com\\@evil.example/x",  # backslash: parsers disagree, so refused
        "https://management.azure.com\\.evil.example/x",
        " https://management.azure.com/x",  # leading whitespace
        "https://management.azure.com\t/x",  # control characters in the authority
        "https://management.azure.com%2f@evil.example/x",  # percent-encoding in the authority
        "https://management.azure.com./x",  # a trailing dot is another name to us: refused, not guessed
        "https://management.azure.com:0443x/x",  # a port that is not a number
        "https://management.azure.com:99999/x",  # out of range
        "//management.azure.com/x",  # scheme-relative
        "/subscriptions?$skiptoken=1",  # relative
        "ftp://management.azure.com/x",
        "",
    ],
)
def test_links_elsewhere_are_refused(link: str) -> None:
    assert not same_origin(link, ARM)
    with pytest.raises(ForeignLinkError, match=r"refused so the token does not leave the ARM endpoint"):
        check_next_link(link, ARM)


def test_ports_and_loopback_spellings_are_distinct_origins() -> None:
    assert same_origin("https://127.0.0.1:8443/a", "https://127.0.0.1:8443")
    assert not same_origin("https://127.0.0.1:8444/a", "https://127.0.0.1:8443")
    assert not same_origin("https://127.0.0.2:8443/a", "https://127.0.0.1:8443")
    assert not same_origin("https://localhost:8443/a", "https://127.0.0.1:8443")  # same server, other name
    assert same_origin("https://[::1]:8443/a", "https://[::1]:8443/")
    assert origin("http://example.org/") == ("http", "example.org", 80)
    assert origin("https://Example.org") == ("https", "example.org", 443)
    assert origin("https://user@example.org/") is None


def test_an_unparsable_endpoint_matches_nothing() -> None:
    assert not same_origin("https://management.azure.com/x", "management.azure.com")
    assert not same_origin("", "")


def test_the_message_names_both_origins_briefly_and_printably() -> None:
    with pytest.raises(ForeignLinkError) as caught:
        check_next_link("https://127.0.0.2:4443/subscriptions/x?$skiptoken=SECRET", "https://127.0.0.1:8443/")
    assert str(caught.value) == (
        "ARM returned a nextLink to https://127.0.0.2:4443, not https://127.0.0.1:8443; "
        "refused so the token does not leave the ARM endpoint"
    )
    assert isinstance(caught.value, AzureError)  # so the existing handling makes it an ERROR row
    long = shown("https://" + "a" * 500 + "\x1b[31m/x")
    assert len(long) <= 120 and "\x1b" not in long
    assert shown("https://evil\x1b[2J.example/x") == "https://evil?[2J.example"


# -- the raw pager: the page's items are kept, its foreign link is never returned ---------------------
class _Response:
    def __init__(self, body: Any) -> None:
        self._body = body
        self.headers: dict[str, str] = {}

    def json(self) -> Any:
        return self._body


class _PipelineResponse:
    """What ``extract_data`` reads of azure-core's pipeline response: the request and the body."""

    def __init__(self, url: str, body: Any) -> None:
        self.http_request = HttpRequest("GET", url)
        self.http_response = _Response(body)


def test_raw_page_keeps_the_items_and_refuses_a_foreign_link() -> None:
    page = _PipelineResponse(
        "https://127.0.0.1:8443/subscriptions/s/providers/Microsoft.Web/sites?api-version=1",
        {"value": [{"id": "a"}, {"id": "b"}], "nextLink": "https://127.0.0.1:9999/subscriptions/s?$skiptoken=2"},
    )
    link, items = _raw_page(page)
    assert link is None, "the pager must never get the foreign link to follow"
    assert next(items) == {"id": "a"} and next(items) == {"id": "b"}
    with pytest.raises(ForeignLinkError, match=r"nextLink to https://127\.0\.0\.1:9999, not https://127\.0\.0\.1:8443"):
        next(items)


def test_raw_page_returns_a_link_to_the_same_endpoint() -> None:
    link = "https://127.0.0.1:8443/subscriptions/s/providers/Microsoft.Web/sites?api-version=1&$skiptoken=2"
    page = _PipelineResponse(
        "https://127.0.0.1:8443/subscriptions/s/providers/Microsoft.Web/sites", {"value": [], "nextLink": link}
    )
    got, items = _raw_page(page)
    assert got == link and list(items) == []


def test_policy_refuses_a_request_elsewhere_and_passes_the_endpoint() -> None:
    policy = PinnedEndpointPolicy("https://127.0.0.1:8443", "Resource Graph")
    policy.on_request(PipelineRequest(RestHttpRequest("GET", "https://127.0.0.1:8443/x?y=1"), None))  # type: ignore[arg-type]
    with pytest.raises(ForeignLinkError, match=r"not the Resource Graph endpoint https://127\.0\.0\.1:8443"):
        policy.on_request(PipelineRequest(RestHttpRequest("GET", "https://127.0.0.1:8444/x"), None))  # type: ignore[arg-type]


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


@pytest.mark.integration
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


@pytest.mark.integration
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
    in_group = [s for s in sub.sites if s.resource_group == group]
    behind = {slot.key for s in in_group for slot in s.slots}
    assert set(tenant.expected()) - set(audited) == behind, "only the group's slots are not audited"
    assert arm.stats()["by_kind"]["slots_list"] == 0, "a refused link is not retried app by app"
    assert_nothing_reached(recorder)


@pytest.mark.integration
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


@pytest.mark.integration
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


@pytest.mark.integration
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


@pytest.mark.integration
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
