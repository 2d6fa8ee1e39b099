"""A TLS server that records whoever reaches it: the "other host" a hostile ``nextLink`` names.

It presents the same loopback certificate as the emulators (so a client that follows a link to it
would succeed, and the test could fail), counts every TCP connection it accepts before any TLS,
and records each request's method, path and headers (``Authorization`` included). It answers any
request with an empty list (an ARM page, or a Resource Graph answer for a Resource Graph path), so a
client that follows a link or a redirect here would go on as if all were well: only the recording
shows that it came.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, NamedTuple

from .tls import TlsMaterial

EMPTY_PAGE = b'{"value": []}'
EMPTY_GRAPH_ANSWER = b'{"totalRecords": 0, "count": 0, "data": [], "facets": [], "resultTruncated": "false"}'


class Recorded(NamedTuple):
    """One request that reached the recorder."""

    method: str
    path: str
    headers: dict[str, str]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 10
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: tests read :attr:`RecordingTlsServer.requests`."""

    def _record(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        self.server.recorder._add(Recorded(self.command, self.path, dict(self.headers.items())))
        body = EMPTY_GRAPH_ANSWER if "microsoft.resourcegraph" in self.path.lower() else EMPTY_PAGE
        self.send_response(200)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _record


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, recorder: RecordingTlsServer, host: str) -> None:
        self.recorder = recorder
        super().__init__((host, 0), _Handler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        self.recorder._connected()
        request.settimeout(10.0)
        try:
            conn = self.recorder.tls.server_ssl_context().wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            return
        try:
            _Handler(conn, client_address, self)
        except (ConnectionError, ssl.SSLError, TimeoutError, OSError, ValueError):
            pass
        finally:
            with contextlib.suppress(OSError):
                conn.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Client disconnects are not the test's concern; the recording is."""


class RecordingTlsServer:
    """``https://127.0.0.1:<port>`` (another port than any emulator's) that records every visitor."""

    def __init__(self, tls: TlsMaterial, host: str = "127.0.0.1") -> None:
        self.tls = tls
        self.host = host
        self.connections = 0
        self.requests: list[Recorded] = []
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def _connected(self) -> None:
        with self._lock:
            self.connections += 1

    def _add(self, record: Recorded) -> None:
        with self._lock:
            self.requests.append(record)

    @property
    def url(self) -> str:
        assert self._server is not None, "recorder is not running"
        return f"https://{self.host}:{self._server.server_address[1]}"

    def start(self) -> RecordingTlsServer:
        self._server = _Server(self, self.host)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, name="recorder", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> RecordingTlsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def probe(self) -> None:
        """One request from a verifying client: proves the recorder would have recorded a visitor."""
        context = self.tls.client_ssl_context()
        assert self._server is not None
        port = int(self._server.server_address[1])
        with (
            socket.create_connection((self.host, port), timeout=5) as raw,
            context.wrap_socket(raw, server_hostname=self.host) as conn,
        ):
            conn.sendall(f"GET /probe HTTP/1.1\r\nHost: {self.host}\r\nConnection: close\r\n\r\n".encode())
            while conn.recv(4096):
                pass
