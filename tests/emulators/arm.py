"""Emulated Azure Resource Manager + App Service managed-identity endpoint, over real HTTPS.

The product runs the real SDKs (azure-identity, azure-mgmt-resource-subscriptions, azure-mgmt-web)
against this server, so what is tested is the product's behaviour on the wire: paging, retries,
auth, odd ids and partial failures. One ``ThreadingHTTPServer`` on 127.0.0.1 serves:

* ``GET /msi/token`` - App Service managed identity (protocol 2019-08-01, ``X-IDENTITY-HEADER``),
  issuing unsigned-in-spirit JWTs (fake HS256) that Azurite ``--oauth basic`` accepts for storage;
* ``GET /subscriptions`` and the ``Microsoft.Web/sites`` list/get routes, built from a
  :class:`~tests.emulators.tenant.Tenant`, with ARM-style paging, errors and throttling;
* ``POST /providers/Microsoft.ResourceGraph/resources`` for exactly the product's sites query
  (``shared.azure.resourcegraph.SITES_QUERY``), paged with ``$skipToken``, with Resource Graph's own
  per-principal quota (15 queries per 5 s window; quota headers on every answer);
* fault injection (:mod:`tests.emulators.faults`) on any route, including the token endpoint.

This module puts the services together; each is its own module, by service: ``identity.py`` (the
token endpoint and the bearer check), ``subscriptions.py`` (the tenant and subscription scope, ARM's
read throttling), ``web.py`` (the site routes, paging, a site's JSON), ``resource_graph.py``
(``resources`` and ``resourcechanges``, its quota), ``faults.py`` (injected faults), on the HTTP
plumbing of ``wire.py``. The names tests import from here stay importable from here.
"""

from __future__ import annotations

import secrets
import threading
import uuid
from collections import Counter, deque
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import parse_qsl, unquote

from .faults import FaultAnswers, FaultSet, Latency, MalformedJson, Reset, Stall, Status, Truncated
from .identity import IdentityService, UserAssignedIdentity
from .resource_graph import RESOURCE_GRAPH_API_VERSIONS, ResourceGraphQuota, ResourceGraphService
from .subscriptions import SubscriptionsService, ThrottleModel
from .tenant import Tenant
from .tls import TlsMaterial
from .web import SITE_SHAPES, WebService, site_json
from .wire import LIST_KINDS, ROUTE_KINDS, RequestRecord, _classify, _Handler, _Response, _Server, arm_error, json_body

__all__ = [
    "RESOURCE_GRAPH_API_VERSIONS",
    "ROUTE_KINDS",
    "SITE_SHAPES",
    "ArmEmulator",
    "RequestRecord",
    "ResourceGraphQuota",
    "ThrottleModel",
    "UserAssignedIdentity",
    "_Response",
    "arm_error",
    "json_body",
    "site_json",
]


class ArmEmulator(IdentityService, SubscriptionsService, WebService, ResourceGraphService, FaultAnswers):
    """ARM + managed identity for one :class:`Tenant`, served over TLS on an ephemeral port.

    Options (all attributes may be changed while running):

    * ``page_size``: items per list page, an int or ``{route_kind: int}`` (missing kinds: 50);
    * ``latency``: seconds added to every answer;
    * ``empty_page_every``: after every N data pages insert an empty page that still has a nextLink;
    * ``trailing_empty_page``: end every paged list with an empty page (ARM does this);
    * ``next_link_loop_to``: the last page's nextLink points back to this page index (0 = first page,
      1 = the exact nextLink already served after page 0) instead of ending - for loop detection;
    * ``paging_kinds``: route kinds the three options above apply to (default all list kinds);
    * ``foreign_next_links``: ``{path_regex: origin}``: a list whose request path (raw, no query) matches
      a regex answers with a ``nextLink`` on that origin (e.g. another host or port) instead of this
      emulator's, as a hostile or broken ARM would - for nextLink pinning;
    * ``throttle``: ``True`` or a :class:`ThrottleModel` to enable ARM-like 429s (off by default);
    * ``token_lifetime``: seconds until issued tokens expire (MSAL refreshes under 5 minutes);
    * ``user_assigned``: identities selectable with ``client_id``/``object_id``/``mi_res_id``;
    * ``list_deleted_subscriptions``: whether ``Deleted`` subscriptions appear in ``/subscriptions``;
    * ``resource_graph_quota``: a :class:`ResourceGraphQuota` (default: Resource Graph's 15 per 5 s) or
      ``None`` for no limit (the quota headers are sent either way);
    * ``site_shape``: ``"full"`` (default: every property a real list page carries, about 3 KB a
      site) or ``"compact"`` (fewer properties); see :func:`site_json`.
    """

    def __init__(
        self,
        tenant: Tenant,
        tls: TlsMaterial,
        *,
        page_size: int | Mapping[str, int] = 50,
        latency: float = 0.0,
        empty_page_every: int | None = None,
        trailing_empty_page: bool = False,
        next_link_loop_to: int | None = None,
        paging_kinds: frozenset[str] | set[str] = LIST_KINDS,
        foreign_next_links: Mapping[str, str] | None = None,
        throttle: bool | ThrottleModel = False,
        token_lifetime: int = 3600,
        user_assigned: tuple[UserAssignedIdentity, ...] | list[UserAssignedIdentity] = (),
        system_assigned: bool = True,
        list_deleted_subscriptions: bool = True,
        request_log_size: int = 10000,
        resource_graph_quota: ResourceGraphQuota | bool | None = True,
        site_shape: str = "full",
    ) -> None:
        if site_shape not in SITE_SHAPES:
            raise ValueError(f"unknown site shape {site_shape!r}: one of {SITE_SHAPES}")
        self.tenant = tenant
        self.tls = tls
        self.site_shape = site_shape
        self.page_size = page_size
        self.latency = latency
        self.empty_page_every = empty_page_every
        self.trailing_empty_page = trailing_empty_page
        self.next_link_loop_to = next_link_loop_to
        self.paging_kinds = frozenset(paging_kinds)
        self.foreign_next_links: dict[str, str] = dict(foreign_next_links or {})
        self.throttle: ThrottleModel | None = ThrottleModel() if throttle is True else (throttle or None)
        self.token_lifetime = token_lifetime
        self.user_assigned = list(user_assigned)
        self.system_assigned = system_assigned
        self.list_deleted_subscriptions = list_deleted_subscriptions
        self.resource_graph_quota: ResourceGraphQuota | None = (
            ResourceGraphQuota() if resource_graph_quota is True else (resource_graph_quota or None)
        )
        #: Request bodies of the Resource Graph queries received (parsed JSON), for tests.
        self.resource_graph_queries: list[Any] = []
        #: How long after a change Resource Graph's ``resourcechanges`` lists it (eventual consistency).
        self.change_lag_seconds = 0.0
        #: Lower-cased subscriptions Resource Graph returns no rows for (no error), as it does for a
        #: subscription the identity can no longer read.
        self.resource_graph_hidden: set[str] = set()
        #: Rows Resource Graph leaves out of its answers without an error, as a deny assignment on one
        #: group does (``True`` hides the row); see :mod:`tests.emulators.graph`.
        self.resource_graph_hides: Callable[[dict[str, Any]], bool] | None = None
        #: Rewrites each Resource Graph answer ``(document, request) -> document`` before it is sent: a
        #: truncated answer, a repeated ``$skipToken`` (see :mod:`tests.emulators.graph`).
        self.resource_graph_answer: Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]] | None = None
        self._rg_rows: tuple[int, list[dict[str, Any]]] | None = None
        #: Resource Graph's ``resources`` index as it stood when frozen (see :meth:`freeze_resource_graph`).
        self._rg_frozen: list[dict[str, Any]] | None = None
        self.faults = FaultSet()
        #: Answers writes (``method, route_kind, route, body`` -> a response, or ``None`` for 405): off by
        #: default, so the product is proven read-only; :mod:`tests.emulators.writes` installs one.
        self.write_handler: Callable[[str, str, tuple[str, ...], bytes], _Response | None] | None = None
        #: Identity of the system-assigned MI (the token's ``oid``/``appid``).
        self.principal_id = str(uuid.uuid4())
        self.client_id = str(uuid.uuid4())
        self.identity_header = secrets.token_urlsafe(24)
        #: Raw access tokens handed out, so tests can grep logs and tables for leaks.
        self.issued_tokens: list[str] = []
        #: ``(resource, client_id or None)`` per successful token request.
        self.token_requests: list[tuple[str, str | None]] = []
        self._secret = secrets.token_bytes(32)
        self._stats_lock = threading.Lock()
        self._stopping = threading.Event()
        self._request_log_size = request_log_size
        self.reset_stats()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> ArmEmulator:
        if self._server is not None:
            return self
        self._stopping.clear()
        self._server = _Server(self, self.tls.server_ssl_context())
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, name="arm-emulator", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.server_close()
        server.close_all_connections()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> ArmEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("emulator is not running")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """ARM endpoint, e.g. ``https://127.0.0.1:PORT`` (no trailing slash)."""
        return f"https://127.0.0.1:{self.port}"

    @property
    def identity_endpoint(self) -> str:
        return f"{self.url}/msi/token"

    @property
    def credential_scopes(self) -> list[str]:
        """What to pass as ``credential_scopes`` to the management clients."""
        return [f"{self.url}/.default"]

    def env(self) -> dict[str, str]:
        """Environment for a process (or ``monkeypatch.setenv``) that should use this emulator."""
        ca = str(self.tls.ca_file)
        return {
            "IDENTITY_ENDPOINT": self.identity_endpoint,
            "IDENTITY_HEADER": self.identity_header,
            "AUDIT_ARM_ENDPOINT": self.url,
            "SSL_CERT_FILE": ca,
            "REQUESTS_CA_BUNDLE": ca,
        }

    # -- stats ------------------------------------------------------------------------------
    def refill_quotas(self) -> None:
        """Full read budgets everywhere (ARM's buckets and Resource Graph's windows), like the next
        night: without it, a run measured right after another starts on a drained budget."""
        if self.throttle is not None:
            self.throttle.refill()
        if self.resource_graph_quota is not None:
            self.resource_graph_quota.refill()

    def reset_stats(self) -> None:
        with self._stats_lock:
            self._by_kind: Counter[str] = Counter()
            self._by_status: Counter[int] = Counter()
            self._api_versions: Counter[str] = Counter()
            self._throttled_by_model = 0
            self._resource_graph_throttled = 0
            self.requests: deque[RequestRecord] = deque(maxlen=self._request_log_size)

    def stats(self) -> dict[str, Any]:
        """Counts since start / :meth:`reset_stats`.

        ``by_kind`` (every kind in :data:`ROUTE_KINDS`), ``by_status`` (0 = reset), ``total``,
        ``throttled`` (all 429s, injected or modelled), ``throttled_by_model`` (ARM's read model),
        ``resource_graph_throttled`` (Resource Graph's quota), ``api_versions``.
        """
        with self._stats_lock:
            by_kind = {kind: self._by_kind.get(kind, 0) for kind in ROUTE_KINDS}
            return {
                "total": sum(self._by_kind.values()),
                "by_kind": by_kind,
                "by_status": dict(self._by_status),
                "throttled": self._by_status.get(429, 0),
                "throttled_by_model": self._throttled_by_model,
                "resource_graph_throttled": self._resource_graph_throttled,
                "api_versions": dict(self._api_versions),
            }

    def _record(self, method: str, raw_path: str, kind: str, status: int, api_version: str | None) -> None:
        with self._stats_lock:
            self._by_kind[kind] += 1
            self._by_status[status] += 1
            if api_version is not None:
                self._api_versions[api_version] += 1
            self.requests.append(RequestRecord(method, raw_path, status))

    # -- request handling -------------------------------------------------------------------
    def _handle(self, h: _Handler) -> None:
        method = h.command
        raw_path, _, raw_query = h.path.partition("?")
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else b""
        segments = [unquote(s, errors="replace") for s in raw_path.split("/") if s]
        decoded_path = "/" + "/".join(segments)
        query: dict[str, str] = {}
        for key, value in parse_qsl(raw_query, keep_blank_values=True):
            query[key.lower()] = value
        kind, route = _classify(segments)
        api_version = query.get("api-version")

        delays, action = self.faults.evaluate(method, decoded_path, raw_query)
        total_delay = self.latency + sum(d.seconds for d in delays if isinstance(d, Latency | Stall))
        if total_delay > 0 and self._stopping.wait(total_delay):
            self._abort(h, method, h.path, kind, api_version)
            return

        if isinstance(action, Reset):
            self._abort(h, method, h.path, kind, api_version)
            return
        if isinstance(action, Status | MalformedJson):
            response = self._fault_response(action, kind)
        else:
            try:
                response = self._answer(h, method, kind, route, raw_path, query, body)
            except Exception as exc:  # an emulator bug must surface as a readable 500, not a reset
                response = _Response(500, arm_error("EmulatorError", f"{type(exc).__name__}: {exc}"))
        self._send(h, response, method, kind, api_version, truncate=action if isinstance(action, Truncated) else None)

    def _send(
        self,
        h: _Handler,
        response: _Response,
        method: str,
        kind: str,
        api_version: str | None,
        truncate: Truncated | None = None,
    ) -> None:
        body = response.body
        # Record before any byte goes out: a test reading stats right after its call returns must see it.
        self._record(method, h.path, kind, response.status, api_version)
        h.send_response(response.status)
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "Cache-Control": "no-cache",
            "x-ms-request-id": str(uuid.uuid4()),
            "x-ms-correlation-request-id": h.headers.get("x-ms-client-request-id") or str(uuid.uuid4()),
        }
        client_request_id = h.headers.get("x-ms-client-request-id")
        if client_request_id:
            headers["x-ms-client-request-id"] = client_request_id
        headers.update(response.headers)
        for name, value in headers.items():
            h.send_header(name, value)
        h.send_header("Content-Length", str(len(body)))
        if truncate is not None:
            h.send_header("Connection", "close")
            h.close_connection = True
        h.end_headers()
        if method != "HEAD":
            if truncate is not None:
                body = body[: max(0, min(len(body) - 1, int(len(body) * truncate.fraction)))]
            try:
                h.wfile.write(body)
            except OSError:
                h.close_connection = True

    def _answer(
        self,
        h: _Handler,
        method: str,
        kind: str,
        route: tuple[str, ...],
        raw_path: str,
        query: dict[str, str],
        body: bytes = b"",
    ) -> _Response:
        if kind == "token":
            return self._token(h, method, query)
        auth_error = self._check_auth(h)
        if auth_error is not None:
            return auth_error
        if kind == "resourcegraph":
            return self._resource_graph(h, method, query, body)
        if "api-version" not in query:
            return _Response(
                400,
                arm_error(
                    "MissingApiVersionParameter",
                    "The api-version query parameter (?api-version=) is required for all requests.",
                ),
            )
        if method not in ("GET", "HEAD"):
            written = self.write_handler(method, kind, route, body) if self.write_handler is not None else None
            if written is None:
                return _Response(405, arm_error("MethodNotAllowed", f"The emulator does not support {method}."))
            return written
        budget = self._read_budget(h, kind, route)
        if isinstance(budget, _Response):
            return budget
        with self.tenant.lock:
            response = self._route(kind, route, raw_path, query)
        response.headers.update(budget)
        return response
