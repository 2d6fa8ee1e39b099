"""A loopback TCP relay whose server answers each new connection late, as a loaded one does.

A server under load accepts a connection at once (the kernel does) but is slow to answer its TLS
handshake. The relay forwards bytes both ways unchanged (TLS ends at the server behind it), and holds
the server's first bytes of every connection, its ``ServerHello``, for ``hold`` seconds.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time


class SlowHandshakes:
    """Forward ``127.0.0.1:<port>`` to ``127.0.0.1:<upstream_port>``; each connection's first answer waits ``hold`` s."""

    def __init__(self, upstream_port: int, hold: float) -> None:
        self.upstream_port = upstream_port
        self.hold = hold
        self.connections = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._stopping = threading.Event()
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept, name="slow-handshakes", daemon=True)

    @property
    def port(self) -> int:
        return int(self._listener.getsockname()[1])

    def start(self) -> SlowHandshakes:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._listener.close()
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.close()
        self._thread.join(5)

    def __enter__(self) -> SlowHandshakes:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            with self._lock:
                self.connections += 1
                self._sockets += [client, upstream]
            threading.Thread(target=self._pipe, args=(client, upstream, 0.0), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, self.hold), daemon=True).start()

    def _pipe(self, source: socket.socket, target: socket.socket, hold: float) -> None:
        try:
            while data := source.recv(65536):
                if hold:
                    time.sleep(hold)
                    hold = 0.0
                target.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                target.shutdown(socket.SHUT_WR)
