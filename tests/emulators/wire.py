"""The emulator's HTTP plumbing: the TLS server, the handler, how a path maps to a route, answers
and ARM's error envelope. The services (identity, subscriptions, web, Resource Graph, faults) answer
through these; :mod:`tests.emulators.arm` puts them together.
"""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from .arm import ArmEmulator


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
