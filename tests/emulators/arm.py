"""Emulated Azure Resource Manager + App Service managed-identity endpoint, over real HTTPS.

The product runs the real SDKs (azure-identity, azure-mgmt-resource-subscriptions, azure-mgmt-web)
against this server, so what is tested is the product's behaviour on the wire: paging, retries,
auth, odd ids and partial failures. One ``ThreadingHTTPServer`` on 127.0.0.1 serves:

* ``GET /msi/token`` - App Service managed identity (protocol 2019-08-01, ``X-IDENTITY-HEADER``),
  issuing unsigned-in-spirit JWTs (fake HS256) that Azurite ``--oauth basic`` accepts for storage;
* ``GET /subscriptions`` and the ``Microsoft.Web/sites`` list/get routes, built from a
  :class:`~tests.emulators.tenant.Tenant`, with ARM-style paging, errors and throttling;
* ``POST /providers/Microsoft.ResourceGraph/resources`` for exactly the product's sites query
  (``shared.resourcegraph.SITES_QUERY``), paged with ``$skipToken``, with Resource Graph's own
  per-principal quota (15 queries per 5 s window; quota headers on every answer);
* fault injection (:mod:`tests.emulators.faults`) on any route, including the token endpoint.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import math
import re
import secrets
import socket
import ssl
import struct
import threading
import time
import uuid
import zlib
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, NamedTuple
from urllib.parse import parse_qsl, quote, unquote

from .faults import FaultSet, Latency, MalformedJson, Reset, Stall, Status, Terminal, Truncated
from .tenant import OMIT, Site, Subscription, Tenant
from .tls import TlsMaterial

__all__ = [
    "RESOURCE_GRAPH_API_VERSIONS",
    "ROUTE_KINDS",
    "SITE_SHAPES",
    "ArmEmulator",
    "RequestRecord",
    "ResourceGraphQuota",
    "ThrottleModel",
    "UserAssignedIdentity",
    "site_json",
]

#: Request kinds counted by :meth:`ArmEmulator.stats`.
ROUTE_KINDS: tuple[str, ...] = (
    "subscriptions",
    "sites_list",
    "rg_sites_list",
    "slots_list",
    "site_get",
    "resourcegraph",
    "token",
    "other",
)
#: List routes (subject to paging options).
LIST_KINDS: frozenset[str] = frozenset({"subscriptions", "sites_list", "rg_sites_list", "slots_list"})

MI_API_VERSION = "2019-08-01"
#: Resource Graph api-versions with the request/response shape emulated here (2024-04-01 is the newest stable).
RESOURCE_GRAPH_API_VERSIONS: frozenset[str] = frozenset({"2021-03-01", "2022-10-01", "2024-04-01"})
RESOURCE_GRAPH_MAX_TOP = 1000
RESOURCE_GRAPH_DEFAULT_TOP = 100
_DEFAULT_REMAINING_READS = 11999
_ERROR_CODES = {
    400: "BadRequest",
    401: "InvalidAuthenticationToken",
    403: "AuthorizationFailed",
    404: "ResourceNotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    429: "TooManyRequests",
    500: "InternalServerError",
    502: "BadGateway",
    503: "ServiceUnavailable",
    504: "GatewayTimeout",
}


class RequestRecord(NamedTuple):
    """One entry of :attr:`ArmEmulator.requests`: ``path`` includes the query string; ``status`` is 0
    when the connection was reset without an answer."""

    method: str
    path: str
    status: int


@dataclass(frozen=True)
class UserAssignedIdentity:
    """A user-assigned identity the MI endpoint will issue tokens for (selected by any of its ids)."""

    client_id: str
    object_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    resource_id: str | None = None


@dataclass
class ThrottleModel:
    """ARM's read throttling, approximated as a token bucket per subscription and principal (and one per
    tenant and principal for ``/subscriptions``): ``capacity`` reads, refilled at ``refill_per_second``."""

    capacity: float = 250.0
    refill_per_second: float = 25.0
    _buckets: dict[str, tuple[float, float]] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def refill(self) -> None:
        """Every bucket full again, as after a quiet day (a benchmark's next night)."""
        with self._lock:
            self._buckets.clear()

    def take(self, key: str) -> tuple[bool, int, int]:
        """Consume one read: ``(allowed, remaining, retry_after_seconds)``."""
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(key, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - last) * self.refill_per_second)
            if tokens >= 1.0:
                tokens -= 1.0
                self._buckets[key] = (tokens, now)
                return True, int(tokens), 0
            self._buckets[key] = (tokens, now)
            wait = (1.0 - tokens) / self.refill_per_second
            return False, 0, max(1, math.ceil(wait))


@dataclass
class ResourceGraphQuota:
    """Resource Graph's own throttling: ``queries`` per ``window_seconds`` per principal (a fixed window
    that starts with the first query after the previous one ran out), reported on every answer as
    ``x-ms-user-quota-remaining`` and ``x-ms-user-quota-resets-after`` (``hh:mm:ss``)."""

    queries: int = 15
    window_seconds: float = 5.0
    _windows: dict[str, tuple[float, int]] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def refill(self) -> None:
        """Every principal's window fresh again."""
        with self._lock:
            self._windows.clear()

    def take(self, principal: str) -> tuple[bool, int, float]:
        """Consume one query: ``(allowed, remaining, seconds_until_reset)``."""
        now = time.monotonic()
        with self._lock:
            start, used = self._windows.get(principal, (now, 0))
            if now - start >= self.window_seconds:
                start, used = now, 0
            resets = max(0.0, start + self.window_seconds - now)
            if used >= self.queries:
                self._windows[principal] = (start, used)
                return False, 0, resets
            used += 1
            self._windows[principal] = (start, used)
            return True, self.queries - used, resets


def _hms(seconds: float) -> str:
    whole = max(0, math.ceil(seconds))
    return f"{whole // 3600:02d}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


@dataclass
class _Response:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


def json_body(doc: Any) -> bytes:
    """A JSON answer as UTF-8, as ARM sends it; a string holding a lone UTF-16 surrogate (an app
    owner's tag can: JSON allows ``"\\ud800"``) is sent as that escape, as a real service does."""
    try:
        return json.dumps(doc, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        return json.dumps(doc).encode()


def arm_error(code: str, message: str) -> bytes:
    """ARM's error envelope."""
    return json.dumps({"error": {"code": code, "message": message}}).encode()


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def normalize_audience(resource: str) -> str:
    """``https://x/.default`` and ``https://x/`` -> ``https://x`` (what a token's ``aud`` carries)."""
    aud = resource.strip()
    if aud.endswith("/.default"):
        aud = aud[: -len("/.default")]
    return aud.rstrip("/")


class _Server(ThreadingHTTPServer):
    """Threaded server doing the TLS handshake in the worker thread, so a client that connects and
    never speaks TLS cannot block the accept loop."""

    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(self, emulator: ArmEmulator, ssl_context: ssl.SSLContext) -> None:
        self.emulator = emulator
        self.ssl_context = ssl_context
        self.connections: set[ssl.SSLSocket] = set()
        self.conn_lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Handler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        request.settimeout(10.0)
        # Headers and body go out as two writes: without TCP_NODELAY, Nagle holds the body until the
        # client's delayed ACK (~40 ms), which would add 40 ms to every answer.
        with contextlib.suppress(OSError):
            request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            conn = self.ssl_context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            return
        with self.conn_lock:
            self.connections.add(conn)
        try:
            _Handler(conn, client_address, self)
        except (ConnectionError, ssl.SSLError, TimeoutError, OSError, ValueError):
            pass
        finally:
            with self.conn_lock:
                self.connections.discard(conn)
            with contextlib.suppress(OSError):
                conn.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Client-side disconnects are normal here (resets are injected on purpose); stay quiet."""

    def close_all_connections(self) -> None:
        with self.conn_lock:
            conns = list(self.connections)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "ArmEmulator/1.0"
    sys_version = ""
    timeout = 30  # idle keep-alive connections are dropped after this
    server: _Server
    principal = ""  # object id of the caller of the request being answered (set by the auth check)

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the default stderr access log; :attr:`ArmEmulator.requests` keeps one."""

    def _dispatch(self) -> None:
        self.server.emulator._handle(self)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _dispatch


class ArmEmulator:
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

    def _abort(self, h: _Handler, method: str, path: str, kind: str, api_version: str | None) -> None:
        """Reset the connection: SO_LINGER 0 turns close() into an RST, no response is sent."""
        # Record before the client can observe the outcome, so stats are exact when a call returns.
        self._record(method, path, kind, 0, api_version)
        h.close_connection = True
        try:
            h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            h.connection.close()
        except OSError:
            pass

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

    def _fault_response(self, action: Terminal, kind: str) -> _Response:
        if isinstance(action, MalformedJson):
            return _Response(action.status, b'{"value": [{"id": "/subscriptions/\x00, "name": tru')
        assert isinstance(action, Status)
        headers = dict(action.headers)
        if action.retry_after is not None:
            ra = action.retry_after
            if isinstance(ra, datetime):
                headers["Retry-After"] = format_datetime(ra, usegmt=True)
            elif isinstance(ra, float) and ra.is_integer():
                headers["Retry-After"] = str(int(ra))
            else:
                headers["Retry-After"] = str(ra)
        if action.body is not None:
            return _Response(action.status, action.body, headers)
        code = action.code or _ERROR_CODES.get(action.status, f"Http{action.status}")
        message = action.message or f"Injected fault: {action.status} {code}."
        if kind == "token":
            body = json.dumps({"statusCode": action.status, "message": message}).encode()
        else:
            body = arm_error(code, message)
        return _Response(action.status, body, headers)

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
        limit_headers: dict[str, str] = {}
        if kind != "other" or route:
            scope = route[1] if len(route) > 1 else "tenant"
            header = (
                "x-ms-ratelimit-remaining-tenant-reads"
                if scope == "tenant"
                else "x-ms-ratelimit-remaining-subscription-reads"
            )
            if self.throttle is not None:
                allowed, remaining, retry_after = self.throttle.take(f"{scope.lower()}|{h.principal}")
                if not allowed:
                    with self._stats_lock:
                        self._throttled_by_model += 1
                    target = "tenant" if scope == "tenant" else f"subscription '{scope}'"
                    return _Response(
                        429,
                        arm_error(
                            "SubscriptionRequestsThrottled" if scope != "tenant" else "TenantRequestsThrottled",
                            f"Number of 'read' requests for {target} exceeded. Please try again after "
                            f"'{retry_after}' seconds after additional tokens are available. Refer to "
                            "https://aka.ms/arm-throttling for additional information.",
                        ),
                        {"Retry-After": str(retry_after), header: "0"},
                    )
                limit_headers[header] = str(remaining)
            else:
                limit_headers[header] = str(_DEFAULT_REMAINING_READS)
        with self.tenant.lock:
            response = self._route(kind, route, raw_path, query)
        response.headers.update(limit_headers)
        return response

    # -- Resource Graph -----------------------------------------------------------------------
    def _resource_graph(self, h: _Handler, method: str, query: dict[str, str], body: bytes) -> _Response:
        """``POST /providers/Microsoft.ResourceGraph/resources``: the product's sites query only."""
        from shared.changes import CHANGES_QUERY
        from shared.resourcegraph import SITES_QUERY  # the queries the product sends

        def bad(code: str, message: str, status: int = 400) -> _Response:
            return _Response(status, arm_error(code, message))

        if method != "POST":
            return bad("MethodNotAllowed", f"The requested resource does not support http method '{method}'.", 405)
        version = query.get("api-version")
        if version is None:
            return bad(
                "MissingApiVersionParameter",
                "The api-version query parameter (?api-version=) is required for all requests.",
            )
        if version not in RESOURCE_GRAPH_API_VERSIONS:
            return bad(
                "InvalidApiVersionParameter",
                f"The api-version '{version}' is invalid. The supported versions are "
                f"'{','.join(sorted(RESOURCE_GRAPH_API_VERSIONS))}'.",
            )
        quota_headers: dict[str, str] = {}
        if self.resource_graph_quota is not None:
            allowed, remaining, resets = self.resource_graph_quota.take(h.principal)
            quota_headers = {
                "x-ms-user-quota-remaining": str(remaining),
                "x-ms-user-quota-resets-after": _hms(resets),
            }
            if not allowed:
                with self._stats_lock:
                    self._resource_graph_throttled += 1
                return _Response(
                    429,
                    arm_error(
                        "RateLimiting",
                        "Please provide below info when asking for support: timestamp, correlationId. "
                        "Details: Too many requests. Please retry.",
                    ),
                    {"Retry-After": str(max(1, math.ceil(resets))), **quota_headers},
                )
        else:
            quota_headers = {"x-ms-user-quota-remaining": "15", "x-ms-user-quota-resets-after": "00:00:05"}
        try:
            request = json.loads(body or b"null")
        except ValueError:
            request = None
        if not isinstance(request, dict):
            return _Response(
                400, arm_error("BadRequest", "The request body is not a valid query request."), quota_headers
            )
        with self._stats_lock:
            self.resource_graph_queries.append(request)
        since = _changes_since(str(request.get("query") or ""), CHANGES_QUERY)
        if request.get("query") != SITES_QUERY and since is None:
            return _Response(
                400,
                arm_error(
                    "BadRequest",
                    "Please provide below info when asking for support: timestamp, correlationId. "
                    "Details: the emulator answers only shared.resourcegraph.SITES_QUERY and "
                    "shared.changes.CHANGES_QUERY, verbatim.",
                ),
                quota_headers,
            )
        options = request.get("options") or {}
        if not isinstance(options, dict):
            options = {}
        result_format = options.get("resultFormat", "objectArray")
        if result_format != "objectArray":
            return _Response(
                400, arm_error("BadRequest", f"resultFormat '{result_format}' is not emulated."), quota_headers
            )
        try:
            top = int(options.get("$top") or RESOURCE_GRAPH_DEFAULT_TOP)
            skip = int(options.get("$skip") or 0)
        except (TypeError, ValueError):
            return _Response(400, arm_error("BadRequest", "$top and $skip must be integers."), quota_headers)
        top = max(1, min(top, RESOURCE_GRAPH_MAX_TOP))
        token = options.get("$skipToken")
        offset = skip
        if token:
            try:
                offset = int(_b64url_decode(str(token)).decode())
            except (ValueError, UnicodeDecodeError):
                return _Response(
                    400, arm_error("InvalidSkipToken", f"The skip token '{token}' is invalid."), quota_headers
                )
        subscriptions = request.get("subscriptions")
        with self.tenant.lock:
            rows = self._resource_graph_rows() if since is None else self._change_rows(since)
        if self.resource_graph_hidden:  # Resource Graph answers an unreadable subscription with no rows
            rows = [r for r in rows if r["subscriptionId"].lower() not in self.resource_graph_hidden]
        hides = self.resource_graph_hides
        if hides is not None:
            rows = [r for r in rows if not hides(r)]
        if isinstance(subscriptions, list) and subscriptions:
            wanted = {str(s).lower() for s in subscriptions}
            rows = [r for r in rows if r["subscriptionId"].lower() in wanted]
        page = rows[offset : offset + top]
        end = offset + len(page)
        doc: dict[str, Any] = {
            "totalRecords": len(rows),
            "count": len(page),
            "data": page,
            "facets": [],
            "resultTruncated": "false",
        }
        if end < len(rows):
            doc["$skipToken"] = _b64url(str(end).encode())
        if self.resource_graph_answer is not None:
            doc = self.resource_graph_answer(doc, request)
        return _Response(200, json_body(doc), quota_headers)

    def _change_rows(self, since: datetime) -> list[dict[str, Any]]:
        """``resourcechanges`` rows after ``since``, projected as ``CHANGES_QUERY`` does and ordered by
        ``changeTime, targetResourceId``; a change becomes visible ``change_lag_seconds`` after it
        happened (Resource Graph is eventually consistent), measured on the tenant's change clock."""
        log = self.tenant.changes or []
        visible_until = self.tenant.change_clock() - timedelta(seconds=self.change_lag_seconds)
        rows = [
            {
                "changeTime": c.timestamp.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                "targetResourceId": c.target_id,
                "targetResourceType": c.target_type.lower(),
                "changeType": c.change_type,
                "subscriptionId": c.target_id.split("/")[2],
            }
            for c in log
            if c.timestamp > since and c.timestamp <= visible_until
        ]
        rows.sort(key=lambda r: (r["changeTime"], r["targetResourceId"]))
        return rows

    def freeze_resource_graph(self) -> None:
        """Resource Graph's ``resources`` index stops following the tenant (it lags): queries answer the
        sites and slots as they are now until :meth:`thaw_resource_graph`, whatever changes meanwhile."""
        with self.tenant.lock:
            self._rg_frozen = [dict(row) for row in self._resource_graph_rows()]

    def thaw_resource_graph(self) -> None:
        self._rg_frozen = None

    def _resource_graph_rows(self) -> list[dict[str, Any]]:
        """Every site and slot of every non-deleted subscription, projected as ``SITES_QUERY`` does and
        ordered by ``subscriptionId, id`` (cached until the tenant changes)."""
        if self._rg_frozen is not None:
            return self._rg_frozen
        cached = self._rg_rows
        if cached is not None and cached[0] == self.tenant.version:
            return cached[1]
        rows: list[dict[str, Any]] = []
        for sub in self.tenant.subscriptions:
            if sub.state == "Deleted":
                continue
            for site in sub.iter_resources():
                full = self._site_json(site, "site_get")
                props = full.get("properties") or {}
                rows.append(
                    {
                        "id": site.served_id("resourcegraph"),
                        "name": site.full_name,
                        # Resource Graph lower-cases type and resourceGroup and normalises location.
                        "type": full["type"].lower(),
                        "kind": site.kind or "",
                        "location": site.location.replace(" ", "").lower(),
                        "subscriptionId": sub.subscription_id,
                        "resourceGroup": site.resource_group.lower(),
                        "tags": dict(site.tags or {}),
                        "properties": {
                            key: props.get(key)
                            for key in (
                                "state",
                                "clientCertEnabled",
                                "clientCertMode",
                                "clientCertExclusionPaths",
                                "httpsOnly",
                                "publicNetworkAccess",
                            )
                        },
                    }
                )
        rows.sort(key=lambda r: (r["subscriptionId"].lower(), r["id"].lower()))
        self._rg_rows = (self.tenant.version, rows)
        return rows

    # -- auth -------------------------------------------------------------------------------
    def _unauthorized(self, code: str, message: str) -> _Response:
        challenge = (
            'Bearer authorization_uri="https://login.microsoftonline.com/'
            f'{self.tenant.tenant_id}", error="invalid_token", error_description="{message}"'
        )
        return _Response(401, arm_error(code, message), {"WWW-Authenticate": challenge})

    def _check_auth(self, h: _Handler) -> _Response | None:
        header = h.headers.get("Authorization")
        if not header:
            return self._unauthorized(
                "AuthenticationFailed", "Authentication failed. The 'Authorization' header is missing."
            )
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return self._unauthorized(
                "AuthenticationFailed", "Authentication failed. The 'Authorization' header is not a Bearer token."
            )
        claims = self.decode_token(token.strip())
        if claims is None:
            return self._unauthorized("InvalidAuthenticationToken", "The access token is invalid.")
        if normalize_audience(str(claims.get("aud", ""))).lower() != self.url.lower():
            return self._unauthorized(
                "InvalidAuthenticationToken",
                f"The access token has been obtained for wrong audience or resource '{claims.get('aud')}'. "
                f"It should exactly match with one of the allowed audiences '{self.url}/','{self.url}'.",
            )
        if float(claims.get("exp", 0)) < time.time():
            return self._unauthorized(
                "ExpiredAuthenticationToken", "The access token expiry UTC time is earlier than current UTC time."
            )
        h.principal = str(claims.get("oid") or claims.get("appid") or "")
        return None

    def make_token(self, audience: str, *, lifetime: int | None = None, **extra: Any) -> str:
        """Mint a token signed with this emulator's key (tests use it for wrong-audience cases)."""
        now = int(time.time())
        claims: dict[str, Any] = {
            "aud": normalize_audience(audience),
            "iss": f"https://sts.windows.net/{self.tenant.tenant_id}/",
            "iat": now,
            "nbf": now,
            "exp": now + (self.token_lifetime if lifetime is None else lifetime),
            "oid": self.principal_id,
            "sub": self.principal_id,
            "tid": self.tenant.tenant_id,
            "appid": self.client_id,
            "appidacr": "2",
            "idtyp": "app",
            "uti": _b64url(secrets.token_bytes(12)),
            "ver": "1.0",
        }
        claims.update(extra)
        header = _b64url(json.dumps({"typ": "JWT", "alg": "HS256", "kid": "arm-emulator"}).encode())
        payload = _b64url(json.dumps(claims, separators=(",", ":")).encode())
        signature = hmac.new(self._secret, f"{header}.{payload}".encode(), hashlib.sha256).digest()
        return f"{header}.{payload}.{_b64url(signature)}"

    def decode_token(self, token: str) -> dict[str, Any] | None:
        """Claims of a token this emulator issued, or None (bad shape or foreign signature)."""
        parts = token.split(".")
        if len(parts) != 3:
            return None
        expected = hmac.new(self._secret, f"{parts[0]}.{parts[1]}".encode(), hashlib.sha256).digest()
        try:
            if not hmac.compare_digest(_b64url_decode(parts[2]), expected):
                return None
            claims = json.loads(_b64url_decode(parts[1]))
        except (ValueError, TypeError):
            return None
        return claims if isinstance(claims, dict) else None

    def _token(self, h: _Handler, method: str, query: dict[str, str]) -> _Response:
        def mi_error(status: int, message: str) -> _Response:
            return _Response(status, json.dumps({"statusCode": status, "message": message}).encode())

        if method != "GET":
            return mi_error(405, "Only GET is supported.")
        if h.headers.get("X-IDENTITY-HEADER") != self.identity_header:
            return mi_error(401, "The X-IDENTITY-HEADER header is missing or does not match IDENTITY_HEADER.")
        if query.get("api-version") != MI_API_VERSION:
            return mi_error(400, f"Unsupported api-version; expected {MI_API_VERSION}.")
        resource = query.get("resource", "")
        if not resource:
            return mi_error(400, "The 'resource' parameter is required.")
        client_id, object_id = self.client_id, self.principal_id
        selector = {k: query[k] for k in ("client_id", "object_id", "mi_res_id", "principal_id") if query.get(k)}
        if selector:
            match = next(
                (
                    ua
                    for ua in self.user_assigned
                    if selector.get("client_id", ua.client_id).lower() == ua.client_id.lower()
                    and selector.get("object_id", selector.get("principal_id", ua.object_id)).lower()
                    == ua.object_id.lower()
                    and ("mi_res_id" not in selector or selector["mi_res_id"].lower() == (ua.resource_id or "").lower())
                ),
                None,
            )
            if match is None:
                return mi_error(
                    400,
                    "No User Assigned or Delegated Managed Identity found for specified "
                    "ClientId/ResourceId/PrincipalId.",
                )
            client_id, object_id = match.client_id, match.object_id
        elif not self.system_assigned:
            return mi_error(400, "No Managed Identity found for the app (system-assigned identity is disabled).")
        token = self.make_token(resource, oid=object_id, sub=object_id, appid=client_id)
        claims = self.decode_token(token) or {}
        with self._stats_lock:
            self.issued_tokens.append(token)
            self.token_requests.append((resource, selector.get("client_id")))
        body = {
            "access_token": token,
            # App Service (2019-08-01) sends epoch seconds as a *string*; MSAL int()s it.
            "expires_on": str(claims.get("exp")),
            "resource": resource,
            "token_type": "Bearer",
            "client_id": client_id,
        }
        return _Response(200, json.dumps(body).encode())

    # -- ARM routes -------------------------------------------------------------------------
    def _route(self, kind: str, route: tuple[str, ...], raw_path: str, query: dict[str, str]) -> _Response:
        if kind == "subscriptions":
            subs = [s for s in self.tenant.subscriptions if self.list_deleted_subscriptions or s.state != "Deleted"]
            return self._page(kind, subs, self._subscription_json, raw_path, query)
        if not route:
            return _Response(404, arm_error("NotFound", "No HTTP resource was found that matches the request URI."))
        sub = self.tenant.get_subscription(route[1]) if len(route) > 1 else None
        if sub is None or sub.state == "Deleted":
            return _Response(
                404, arm_error("SubscriptionNotFound", f"The subscription '{route[1]}' could not be found.")
            )
        op = route[0]
        if op == "subscription":
            return _Response(200, json_body(self._subscription_json(sub)))
        if op == "sites_list":
            return self._page(kind, sub.sites, lambda s: self._site_json(s, kind), raw_path, query)
        rg_name = sub.resource_group_name(route[2])
        if op == "rg_list":
            rgs = sub.resource_groups
            return self._page(kind, rgs, lambda rg: self._rg_json(sub, rg), raw_path, query)
        if rg_name is None:
            return _Response(
                404, arm_error("ResourceGroupNotFound", f"Resource group '{route[2]}' could not be found.")
            )
        if op == "rg_get":
            return _Response(200, json_body(self._rg_json(sub, rg_name)))
        if op == "rg_sites_list":
            include_slots = query.get("includeslots", "").lower() == "true"
            items = sub.sites_in_group(rg_name, include_slots=include_slots) or []
            return self._page(kind, items, lambda s: self._site_json(s, kind), raw_path, query)
        site = sub.get_site(rg_name, route[3])
        if site is None:
            return self._not_found("Microsoft.Web/sites", route[3], rg_name)
        if op == "site_get":
            return _Response(200, json_body(self._site_json(site, kind)))
        if op == "slots_list":
            return self._page(kind, site.slots, lambda s: self._site_json(s, kind), raw_path, query)
        slot = site.get_slot(route[4])
        if slot is None:
            return self._not_found("Microsoft.Web/sites/slots", f"{site.name}/{route[4]}", rg_name)
        return _Response(200, json_body(self._site_json(slot, kind)))

    @staticmethod
    def _not_found(resource_type: str, name: str, rg: str) -> _Response:
        return _Response(
            404,
            arm_error(
                "ResourceNotFound",
                f"The Resource '{resource_type}/{name}' under resource group '{rg}' was not found. "
                "For more details please go to https://aka.ms/ARMResourceNotFoundFix",
            ),
        )

    def _page_size_for(self, kind: str) -> int:
        size = self.page_size
        if isinstance(size, Mapping):
            return max(1, int(size.get(kind, 50)))
        return max(1, int(size))

    def _page(
        self,
        kind: str,
        items: list[Any],
        render: Callable[[Any], dict[str, Any]],
        raw_path: str,
        query: dict[str, str],
    ) -> _Response:
        """One page of ``items``. ``$skiptoken`` is ``N`` (data from offset N) or ``Ne`` (an empty
        page before offset N); the token is opaque to a correct client."""
        size = self._page_size_for(kind)
        token = query.get("$skiptoken", "0")
        empty = token.endswith("e")
        try:
            offset = max(0, int(token[:-1] if empty else token))
        except ValueError:
            return _Response(400, arm_error("InvalidSkipToken", f"The skip token '{token}' is invalid."))
        paging_opts = kind in self.paging_kinds
        total = len(items)
        next_token: str | None
        if empty:
            page: list[Any] = []
            next_token = str(offset) if offset < total else None
        else:
            page = items[offset : offset + size]
            end = offset + len(page)
            next_token = str(end) if end < total else None
            if paging_opts and next_token is not None and self.empty_page_every:
                page_index = offset // size
                if (page_index + 1) % self.empty_page_every == 0:
                    next_token = f"{end}e"
            if paging_opts and next_token is None and self.trailing_empty_page:
                next_token = f"{end}e"
        if paging_opts and next_token is None and self.next_link_loop_to is not None:
            next_token = str(self.next_link_loop_to * size)
        doc: dict[str, Any] = {"value": [render(item) for item in page]}
        if next_token is not None:
            doc["nextLink"] = self._next_link(raw_path, query, next_token)
        return _Response(200, json_body(doc))

    def _next_link(self, raw_path: str, query: dict[str, str], token: str) -> str:
        params = [f"api-version={quote(query['api-version'], safe='')}"]
        for key, value in query.items():
            if key in ("api-version", "$skiptoken"):
                continue
            name = "includeSlots" if key == "includeslots" else key
            params.append(f"{quote(name, safe='$')}={quote(value, safe='')}")
        params.append(f"$skiptoken={quote(token, safe='')}")
        base = next((o for rx, o in self.foreign_next_links.items() if re.search(rx, raw_path)), self.url)
        return f"{base.rstrip('/')}{raw_path.rstrip('/')}?{'&'.join(params)}"

    # -- JSON shapes --------------------------------------------------------------------------
    def _subscription_json(self, sub: Subscription) -> dict[str, Any]:
        return {
            "id": f"/subscriptions/{sub.subscription_id}",
            "authorizationSource": "RoleBased",
            "managedByTenants": [],
            "subscriptionId": sub.subscription_id,
            "tenantId": self.tenant.tenant_id,
            "displayName": sub.display_name,
            "state": sub.state,
            "subscriptionPolicies": {
                "locationPlacementId": "Public_2014-09-01",
                "quotaId": "PayAsYouGo_2014-09-01",
                "spendingLimit": "Off",
            },
            "tags": {},
        }

    @staticmethod
    def _rg_json(sub: Subscription, rg: str) -> dict[str, Any]:
        return {
            "id": f"/subscriptions/{sub.subscription_id}/resourceGroups/{rg}",
            "name": rg,
            "type": "Microsoft.Resources/resourceGroups",
            "location": "eastus",
            "properties": {"provisioningState": "Succeeded"},
        }

    def _site_json(self, site: Site, kind: str) -> dict[str, Any]:
        """A site or slot as ``Microsoft.Web/sites``, in the emulator's :attr:`site_shape`."""
        return site_json(site, kind, self.site_shape)


#: ``siteConfig`` as a real ``WebApps_List`` page carries it (ListWebAppsByResourceGroup.json, 2024-11-01).
_SITE_CONFIG: dict[str, Any] = {
    "numberOfWorkers": 1,
    "defaultDocuments": [
        "Default.htm",
        "Default.html",
        "Default.asp",
        "index.htm",
        "index.html",
        "iisstart.htm",
        "default.aspx",
        "index.php",
        "hostingstart.html",
    ],
    "netFrameworkVersion": "v4.0",
    "phpVersion": "5.6",
    "pythonVersion": "",
    "nodeVersion": "",
    "powerShellVersion": "",
    "linuxFxVersion": "",
    "requestTracingEnabled": False,
    "remoteDebuggingEnabled": False,
    "httpLoggingEnabled": False,
    "acrUseManagedIdentityCreds": False,
    "logsDirectorySizeLimit": 35,
    "detailedErrorLoggingEnabled": False,
    "use32BitWorkerProcess": True,
    "webSocketsEnabled": False,
    "alwaysOn": False,
    "appCommandLine": "",
    "managedPipelineMode": "Integrated",
    "virtualApplications": [{"virtualPath": "/", "physicalPath": "site\\wwwroot", "preloadEnabled": False}],
    "loadBalancing": "LeastRequests",
    "autoHealEnabled": False,
    "vnetName": "",
    "vnetRouteAllEnabled": False,
    "vnetPrivatePortsCount": 0,
    "http20Enabled": False,
    "minTlsVersion": "1.2",
    "scmMinTlsVersion": "1.2",
    "ftpsState": "AllAllowed",
    "functionAppScaleLimit": 0,
    "functionsRuntimeScaleMonitoringEnabled": False,
    "minimumElasticInstanceCount": 0,
    "azureStorageAccounts": {},
}
_OUTBOUND_VNET_ROUTING = {
    "allTraffic": False,
    "applicationTraffic": False,
    "backupRestoreTraffic": False,
    "contentShareTraffic": False,
    "imagePullTraffic": False,
    "managedIdentityTraffic": False,
}
#: The shapes :func:`site_json` serves: ``full`` (a real list page's) and ``compact`` (the minimum
#: the audit reads plus a few common properties; the shape the first benchmark figures used).
SITE_SHAPES = ("full", "compact")


def _custom_hosts(site: Site) -> list[str]:
    """Custom domains of a site: a quarter of the sites have one to three (fixed per name, so
    answers are stable and the tenant's random draws are unchanged)."""
    digest = zlib.crc32(site.name.encode())
    if digest % 4:
        return []
    zone = ("contoso.com", "fabrikam.net", "northwind.io")[digest % 3]
    label = site.name if site.slot_name is None else f"{site.name}-{site.slot_name}"
    return [f"{prefix}{label}.{zone}" for prefix in ("www.", "api.", "")[: 1 + (digest >> 8) % 3]]


def site_json(site: Site, kind: str, shape: str = "full") -> dict[str, Any]:
    """A site or slot as ``Microsoft.Web/sites`` (shape of ListWebApps.json / ListWebAppSlots.json).

    ``full`` carries every property a real ``WebApps_List`` page does (``siteConfig``, host-name
    lists and SSL states, outbound addresses, ...; about 3 KB a site, as the reference examples),
    so what the audit parses and holds per page is what it would in Azure. ``compact`` keeps
    fewer properties (about 1.7 KB).
    """
    if shape not in SITE_SHAPES:
        raise ValueError(f"unknown site shape {shape!r}: one of {SITE_SHAPES}")
    full_shape = shape == "full"
    sub_id = site.subscription.subscription_id
    rg = site.resource_group
    host_label = site.name if site.slot_name is None else f"{site.name}-{site.slot_name}"
    host = f"{host_label}.azurewebsites.net".lower()
    scm = f"{host_label}.scm.azurewebsites.net".lower()
    linux = bool(site.kind and "linux" in site.kind)
    doc: dict[str, Any] = {
        "id": site.served_id(kind),
        "name": site.full_name,
        "type": "Microsoft.Web/sites" if site.slot_name is None else "Microsoft.Web/sites/slots",
    }
    if site.kind is not None:
        doc["kind"] = site.kind
    doc["location"] = site.location
    if site.tags is not None:
        doc["tags"] = dict(site.tags)
    omit = site.omit_properties_on_get if kind == "site_get" else site.omit_properties
    if omit:
        return doc
    custom = _custom_hosts(site) if full_shape else []
    ssl_states = [{"name": host, "sslState": "Disabled", "hostType": "Standard"}]
    ssl_states += [
        {
            "name": name,
            "sslState": "SniEnabled",
            "thumbprint": hashlib.sha1(name.encode()).hexdigest().upper(),  # a certificate label, not a security use
            "hostType": "Standard",
        }
        for name in custom
    ]
    ssl_states.append({"name": scm, "sslState": "Disabled", "hostType": "Repository"})
    props: dict[str, Any] = {
        "name": site.full_name,
        "state": site.state,
        "hostNames": [host, *custom],
        "repositorySiteName": site.name,
        "usageState": "Normal",
        "enabled": True,
        "enabledHostNames": [host, *custom, scm],
        "availabilityState": "Normal",
        "hostNameSslStates": ssl_states,
        "serverFarmId": f"/subscriptions/{sub_id}/resourceGroups/{rg}/providers/Microsoft.Web/serverfarms/asp-{site.name}",
        "reserved": linux,
        "isXenon": False,
        "hyperV": False,
        "lastModifiedTimeUtc": "2025-06-01T12:00:00.000Z",
    }
    if full_shape:
        props.update(
            vnetRouteAllEnabled=False,
            vnetImagePullEnabled=False,
            vnetContentShareEnabled=False,
            outboundVnetRouting=dict(_OUTBOUND_VNET_ROUTING),
        )
        config = dict(_SITE_CONFIG)
        config["defaultDocuments"] = list(_SITE_CONFIG["defaultDocuments"])
        config["virtualApplications"] = [dict(v) for v in _SITE_CONFIG["virtualApplications"]]
        config.update(
            linuxFxVersion="PYTHON|3.11" if linux else "",
            ftpsState="FtpsOnly",
            http20Enabled=True,
            use32BitWorkerProcess=not linux,
        )
        props["siteConfig"] = config
    else:
        props["siteConfig"] = {
            "numberOfWorkers": 1,
            "linuxFxVersion": "PYTHON|3.11" if linux else "",
            "minTlsVersion": "1.2",
            "ftpsState": "FtpsOnly",
            "http20Enabled": True,
        }
    props.update(
        {
            "scmSiteAlsoStopped": False,
            "clientAffinityEnabled": True,
            **site.client_cert_properties(),
            "hostNamesDisabled": False,
        }
    )
    if full_shape:
        props["customDomainVerificationId"] = hashlib.sha256(sub_id.encode()).hexdigest().upper()
    props["outboundIpAddresses"] = "20.0.0.1,20.0.0.2"
    if full_shape:
        props["possibleOutboundIpAddresses"] = (
            "20.0.0.1,20.0.0.2,20.225.184.122,20.225.184.188,20.225.185.12,20.225.185.40"
        )
    props.update(
        {
            "containerSize": 0,
            "dailyMemoryTimeQuota": 0,
            "resourceGroup": rg,
            "defaultHostName": host,
            "httpsOnly": site.https_only,
            "redundancyMode": "None",
            "storageAccountRequired": False,
            "keyVaultReferenceIdentity": "SystemAssigned",
        }
    )
    if site.public_network_access is not None:
        props["publicNetworkAccess"] = site.public_network_access
    if kind == "site_get":
        props["sku"] = "Standard"
    override = site.raw_properties_override
    if override:
        for key, value in override.items():
            if value is OMIT:
                props.pop(key, None)
            else:
                props[key] = value
    doc["properties"] = props
    return doc


def _classify(segments: list[str]) -> tuple[str, tuple[str, ...]]:
    """Map decoded path segments to ``(route_kind, route)``; route is ``(op, sub, rg, site, slot)``
    with as many parts as the op needs, or ``()`` for unknown paths. Literal segments compare
    case-insensitively, as ARM does."""
    low = [s.lower() for s in segments]
    n = len(low)
    if low == ["msi", "token"]:
        return "token", ("token",)
    if low == ["providers", "microsoft.resourcegraph", "resources"]:
        return "resourcegraph", ("resourcegraph",)
    if not low or low[0] != "subscriptions":
        return "other", ()
    if n == 1:
        return "subscriptions", ("subscriptions",)
    sub = segments[1]
    if n == 2:
        return "other", ("subscription", sub)
    if n == 5 and low[2:5] == ["providers", "microsoft.web", "sites"]:
        return "sites_list", ("sites_list", sub)
    if low[2] != "resourcegroups":
        return "other", ()
    if n == 3:
        return "other", ("rg_list", sub, "")
    rg = segments[3]
    if n == 4:
        return "other", ("rg_get", sub, rg)
    if n < 7 or low[4:7] != ["providers", "microsoft.web", "sites"]:
        return "other", ()
    if n == 7:
        return "rg_sites_list", ("rg_sites_list", sub, rg)
    site = segments[7]
    if n == 8:
        return "site_get", ("site_get", sub, rg, site)
    if low[8] != "slots":
        return "other", ()
    if n == 9:
        return "slots_list", ("slots_list", sub, rg, site)
    if n == 10:
        return "site_get", ("slot_get", sub, rg, site, segments[9])
    return "other", ()


def _changes_since(query: str, template: str) -> datetime | None:
    """The ``since`` of a change query made from ``template`` (the product's text, verbatim but for
    the instant), or ``None`` when ``query`` is something else."""
    head, _, tail = template.partition("{since}")
    if not (query.startswith(head) and query.endswith(tail)):
        return None
    raw = query[len(head) : len(query) - len(tail)]
    try:
        parsed = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
