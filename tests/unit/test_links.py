"""A ``nextLink`` is followed only to the endpoint that issued it: the origin rules, the raw page and
the pinned pipeline policy. The end-to-end cases (ARM emulator, a recording server on another
port) are in ``tests/integration/test_links_integration.py``.
"""

from __future__ import annotations

from typing import Any

import pytest
from azure.core.exceptions import AzureError
from azure.core.pipeline import PipelineRequest
from azure.core.pipeline.transport import HttpRequest
from azure.core.rest import HttpRequest as RestHttpRequest

from shared.azure.arm_errors import ForeignLinkError
from shared.azure.links import PinnedEndpointPolicy, check_next_link, origin, same_origin, shown
from shared.azure.paging import _raw_page

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
    assert shown("https://evil\x1b[2J.example/x") == "https://evil\ufffd[2J.example"  # shared.core.terminal


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


def test_raw_page_reuses_the_page_the_content_decode_policy_parsed() -> None:
    """The management clients' pipeline parses every page (ContentDecodePolicy keeps it in the
    response's context): it is not parsed a second time, which would hold two copies of the page."""

    class Unparsed(_Response):
        def json(self) -> Any:
            raise AssertionError("parsed again")

    page = _PipelineResponse("https://127.0.0.1:8443/subscriptions/s/providers/Microsoft.Web/sites", None)
    page.http_response = Unparsed(None)
    page.context = {"deserialized_data": {"value": [{"id": "a"}]}}  # type: ignore[attr-defined]
    link, items = _raw_page(page)
    assert page.context == {}, "taken from the response, which the pager keeps until its next page"  # type: ignore[attr-defined]
    assert link is None and list(items) == [{"id": "a"}]


def test_guarded_records_hands_over_what_a_page_held_before_its_foreign_link() -> None:
    """A page converted whole keeps the order of things: its items, then the refused link's error."""
    from azure.core.paging import ItemPaged

    from shared.azure.paging import guarded_records

    url = "https://127.0.0.1:8443/subscriptions/s/providers/Microsoft.Web/sites"
    foreign = {"value": [{"id": "a"}, {"id": "b"}], "nextLink": "https://127.0.0.1:9999/x"}
    pager = ItemPaged(lambda token=None: _PipelineResponse(url, foreign), _raw_page)
    got: list[str] = []
    with pytest.raises(ForeignLinkError):
        for item in guarded_records(pager, "sites", lambda raw: str(raw["id"]).upper()):
            got.append(item)
    assert got == ["A", "B"]


def test_policy_refuses_a_request_elsewhere_and_passes_the_endpoint() -> None:
    policy = PinnedEndpointPolicy("https://127.0.0.1:8443", "Resource Graph")
    policy.on_request(PipelineRequest(RestHttpRequest("GET", "https://127.0.0.1:8443/x?y=1"), None))  # type: ignore[arg-type]
    with pytest.raises(ForeignLinkError, match=r"not the Resource Graph endpoint https://127\.0\.0\.1:8443"):
        policy.on_request(PipelineRequest(RestHttpRequest("GET", "https://127.0.0.1:8444/x"), None))  # type: ignore[arg-type]


def test_policy_refuses_every_redirect_answer() -> None:
    from types import SimpleNamespace

    from azure.core.pipeline import PipelineResponse

    from shared.azure.arm_errors import RedirectRefusedError

    def _Answer(status: int, location: str) -> Any:  # what the policy reads of an HTTP response
        return SimpleNamespace(status_code=status, headers={"Location": location})

    policy = PinnedEndpointPolicy("https://127.0.0.1:8443")
    request = PipelineRequest(RestHttpRequest("GET", "https://127.0.0.1:8443/x"), None)  # type: ignore[arg-type]
    for status in (200, 204, 404, 500):
        policy.on_response(request, PipelineResponse(request.http_request, _Answer(status, ""), None))  # type: ignore[arg-type]
    for status in (300, 301, 302, 303, 304, 307, 308):
        answer = PipelineResponse(request.http_request, _Answer(status, "https://127.0.0.1:8443/y"), None)  # type: ignore[arg-type]
        with pytest.raises(RedirectRefusedError, match=rf"ARM answered HTTP {status} redirecting to https://127"):
            policy.on_response(request, answer)


def test_every_arm_and_resource_graph_client_follows_no_redirect() -> None:
    """The clients the audit builds: redirects off in their pipeline, the pin first."""
    from azure.core.credentials import AccessToken
    from azure.core.pipeline.policies import RedirectPolicy

    from shared.azure.inventory import ArmInventory
    from shared.azure.resourcegraph import graph_client
    from shared.core.config import load_settings

    class _Credential:
        def get_token(self, *scopes: str, **kwargs: object) -> AccessToken:
            return AccessToken("t", 0)

    settings = load_settings(
        {"AUDIT_ARM_ENDPOINT": "https://127.0.0.1:8443", "AUDIT_TABLE_CONNECTION_STRING": "UseDevelopmentStorage=true"}
    )
    inventory = ArmInventory(_Credential(), settings)  # type: ignore[arg-type]
    clients = [inventory.web_client("s")._client, graph_client(_Credential(), settings)._client]  # type: ignore[arg-type]
    for client in clients:
        policies = client._pipeline._impl_policies
        redirects = [p for p in policies if isinstance(p, RedirectPolicy)]
        assert redirects and all(p.allow is False for p in redirects), type(client)
        assert any(isinstance(getattr(p, "_policy", p), PinnedEndpointPolicy) for p in policies[:8])
    inventory.close()
