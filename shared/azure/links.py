"""Requests go only to the service the client was built for: a ``nextLink`` elsewhere is refused,
and so is a redirect.

A list answer's ``nextLink`` is a full URL, and azure-core follows it as given, bearer token
included. A link naming another host (an ARM bug, a tampering proxy, a hostile answer) would hand
the auditor's token, which can read every App Service of the tenant, to whoever listens there. So
a link is followed only to the same origin (scheme, host, port) as the endpoint, and is refused
before any request is made; the refusal is an ``AzureError``, so it ends as the ERROR row of the
scope being listed, like any other unreadable list.

The comparison is deliberately strict, because URL parsers disagree on odd input (userinfo,
backslashes, whitespace): an authority is accepted only as ``host`` or ``host:port`` made of
letters, digits, dots and hyphens (or a bracketed IPv6 literal). Anything else never matches, so
``https://127.0.0.1@evil/`` or ``https://127.0.0.1\\@evil/`` is foreign whatever a parser would
make of it. Hosts compare case-insensitively, a missing port is the scheme's default (443, 80),
and paths, queries and trailing slashes do not matter.

A redirect (3xx) is the same hazard by another road: azure-core's redirect policy sits *after*
the per-call policies, so a request it re-sends to the ``Location`` never passes the pin, and its
answer (an empty list, say) would be trusted as ARM's. So the ARM and Resource Graph clients are
built with redirects off (:func:`pinned_client_kwargs`), and the pin turns the 3xx answer into a
:class:`~shared.core.errors.RedirectRefusedError`: the scope being read gets its ERROR row.
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple

from azure.core.pipeline import PipelineRequest, PipelineResponse
from azure.core.pipeline.policies import SansIOHTTPPolicy

from ..core.terminal import terminal_text
from .arm_errors import ForeignLinkError, RedirectRefusedError

DEFAULT_PORTS = {"https": 443, "http": 80}
_AUTHORITY = re.compile(r"(?P<host>[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::(?P<port>[0-9]{1,5}))?")
_END_OF_AUTHORITY = re.compile(r"[/?#]")
#: At most this much of a foreign URL is quoted in a message (it is attacker-chosen text).
SHOWN_CHARS = 120


class Origin(NamedTuple):
    """Where a URL sends its request: what must match for a token to go there."""

    scheme: str
    host: str
    port: int


def origin(url: str) -> Origin | None:
    """The origin of an absolute http(s) URL, or None if the URL is not plainly one (never matches)."""
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in DEFAULT_PORTS:
        return None
    authority = _END_OF_AUTHORITY.split(rest, maxsplit=1)[0]
    match = _AUTHORITY.fullmatch(authority)
    if match is None:
        return None
    port = int(match["port"]) if match["port"] else DEFAULT_PORTS[scheme]
    if not 0 < port < 65536:
        return None
    return Origin(scheme, match["host"].lower(), port)


def same_origin(url: str, endpoint: str) -> bool:
    """Whether a request to ``url`` goes where ``endpoint`` points (both must parse plainly)."""
    theirs, ours = origin(url), origin(endpoint)
    return theirs is not None and theirs == ours


def shown(url: str) -> str:
    """The scheme and authority of ``url`` for a message: printable, short, no path or query."""
    scheme, sep, rest = url.partition("://")
    text = f"{scheme}{sep}{_END_OF_AUTHORITY.split(rest, maxsplit=1)[0]}" if sep else url
    text = terminal_text(text)
    return text if len(text) <= SHOWN_CHARS else text[: SHOWN_CHARS - 1] + "…"


def check_next_link(link: str, endpoint: str, service: str = "ARM") -> None:
    """Raise :class:`ForeignLinkError` unless ``link`` goes to the same origin as ``endpoint``."""
    if not same_origin(link, endpoint):
        raise ForeignLinkError(
            f"{service} returned a nextLink to {shown(link)}, not {shown(endpoint)}; "
            f"refused so the token does not leave the {service} endpoint"
        )


def pinned_client_kwargs(endpoint: str, service: str = "ARM") -> dict[str, Any]:
    """Keyword arguments that pin an ARM or Resource Graph client to ``endpoint``: the pin as its
    first policy, and no redirect followed (a 3xx answer reaches the pin, which refuses it)."""
    return {"per_call_policies": [PinnedEndpointPolicy(endpoint, service)], "permit_redirects": False}


class PinnedEndpointPolicy(SansIOHTTPPolicy):  # type: ignore[type-arg]
    """First policy of a client's pipeline: a request for another origin than the endpoint is
    refused before redirects, retries or the token policy see it, whatever path built it (the
    raw pager's ``nextLink`` check, or the SDK's own model pager if that is used instead); and an
    answer that is a redirect is refused as it comes back (with redirects off, every 3xx does)."""

    def __init__(self, endpoint: str, service: str = "ARM") -> None:
        self._endpoint = endpoint
        self._service = service

    def on_request(self, request: PipelineRequest[Any]) -> None:
        url = str(request.http_request.url)
        if not same_origin(url, self._endpoint):
            raise ForeignLinkError(
                f"refused a request to {shown(url)} (a nextLink?): not the {self._service} endpoint "
                f"{shown(self._endpoint)}, so the token does not leave it"
            )

    def on_response(self, request: PipelineRequest[Any], response: PipelineResponse[Any, Any]) -> None:
        status = response.http_response.status_code
        if 300 <= status < 400:
            location = str(response.http_response.headers.get("Location") or "")
            raise RedirectRefusedError(
                f"{self._service} answered HTTP {status} redirecting to {shown(location) or '(no Location)'}; "
                f"redirects are not followed: only an answer from {shown(self._endpoint)} is trusted"
            )
