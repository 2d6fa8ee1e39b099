"""A TLS reverse proxy with fault injection, put in front of Azurite.

Azurite cannot be told to fail; the proxy can. It forwards every request unchanged (headers,
body, the OAuth bearer token) and applies the same :class:`~tests.emulators.faults.FaultRule`
set as the ARM emulator: a rejected batch, a 503 burst, a reset, a stall.

Azurite's clock cannot be moved either; the proxy can move the clock it *shows*:
:attr:`FaultProxy.date_offset` is added to the ``Date`` of every answer, which is how the engine
reads the table service's time (the lease is judged by it). A test moves the service's clock
forward (a lease expires without waiting for it) by raising the offset.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import ssl
import struct
import threading
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime, parsedate_to_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .faults import FaultSet, Latency, MalformedJson, Reset, Stall, Status, Truncated
from .tls import TlsMaterial

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 30
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: tests read :attr:`FaultProxy.requests` instead."""

    def _dispatch(self) -> None:
        self.server.proxy.handle(self)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_MERGE = _dispatch


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    proxy: FaultProxy


class FaultProxy:
    """Forward ``https://127.0.0.1:<port>/...`` to ``https://127.0.0.1:<upstream_port>/...``."""

    def __init__(self, upstream_port: int, tls: TlsMaterial) -> None:
        self.upstream_port = upstream_port
        self.tls = tls
        self.faults = FaultSet()
        #: Seconds added to the ``Date`` of every answer: the table service's clock as clients see it.
        self.date_offset = 0.0
        self.requests: list[tuple[str, str, int]] = []
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._client_context = ssl.create_default_context(cafile=str(tls.ca_file))

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.server_address[1])

    def url(self, account: str = "devstoreaccount1") -> str:
        return f"https://127.0.0.1:{self.port}/{account}"

    def start(self) -> FaultProxy:
        server = _Server(("127.0.0.1", 0), _Handler)
        server.socket = self.tls.server_ssl_context().wrap_socket(server.socket, server_side=True)
        server.proxy = self
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="fault-proxy", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _record(self, method: str, path: str, status: int) -> None:
        with self._lock:
            self.requests.append((method, path, status))

    def handle(self, h: _Handler) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else b""
        path, _, query = h.path.partition("?")
        delays, action = self.faults.evaluate(h.command, path, query)
        for delay in delays:
            if isinstance(delay, Latency | Stall):
                threading.Event().wait(delay.seconds)
        if isinstance(action, Reset):
            self._record(h.command, h.path, 0)
            h.close_connection = True
            with contextlib.suppress(OSError):
                h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                h.connection.close()
            return
        if isinstance(action, Status):
            payload = action.body or (
                b'{"odata.error":{"code":"%s","message":{"lang":"en-US","value":"Injected fault"}}}'
                % (action.code or f"Http{action.status}").encode()
            )
            headers = {"Content-Type": "application/json"}
            if action.retry_after is not None:
                headers["Retry-After"] = str(action.retry_after)
            self._reply(h, action.status, headers, payload)
            return
        if isinstance(action, MalformedJson | Truncated):
            raise NotImplementedError("only Status, Reset and delays are meaningful in front of Azurite")
        self._forward(h, body)

    def _forward(self, h: _Handler, body: bytes) -> None:
        conn = http.client.HTTPSConnection("127.0.0.1", self.upstream_port, context=self._client_context, timeout=60)
        try:
            headers = {k: v for k, v in h.headers.items() if k.lower() not in _HOP_BY_HOP}
            headers["Host"] = f"127.0.0.1:{self.upstream_port}"
            conn.request(h.command, h.path, body=body or None, headers=headers)
            response = conn.getresponse()
            payload = response.read()
            out = {k: v for k, v in response.getheaders() if k.lower() not in _HOP_BY_HOP | {"content-length"}}
            self._reply(h, response.status, out, payload)
        except OSError:
            self._record(h.command, h.path, 502)
            self._reply(h, 502, {"Content-Type": "text/plain"}, b"upstream unavailable")
        finally:
            conn.close()

    def service_date(self, upstream: str | None = None) -> str:
        """The ``Date`` an answer carries: Azurite's (or now), moved by :attr:`date_offset`."""
        when = (parsedate_to_datetime(upstream) if upstream else datetime.now(UTC)) + timedelta(
            seconds=self.date_offset
        )
        return format_datetime(when.astimezone(UTC), usegmt=True)

    def _reply(self, h: _Handler, status: int, headers: dict[str, str], payload: bytes) -> None:
        self._record(h.command, h.path, status)
        h.log_request(status)
        h.send_response_only(status)  # one Date, the service's (send_response would add the proxy's own)
        upstream = next((v for k, v in headers.items() if k.lower() == "date"), None)
        h.send_header("Date", self.service_date(upstream))
        for name, value in headers.items():
            if name.lower() != "date":
                h.send_header(name, value)
        h.send_header("Content-Length", str(len(payload)))
        h.end_headers()
        with contextlib.suppress(OSError):
            h.wfile.write(payload)
