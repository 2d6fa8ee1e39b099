"""Azurite (Table service only) as a managed child process, over TLS with OAuth.

The product writes audit rows with azure-data-tables and a managed-identity bearer token, so the
emulator must speak HTTPS (azure-core refuses bearer tokens over HTTP) and check tokens:
``--oauth basic`` makes Azurite validate the JWT's issuer, audience (``https://storage.azure.com``)
and lifetime - exactly what the ARM emulator's MI endpoint issues. Tests that use the account key
(to read rows back independently of the product) use :attr:`Azurite.connection_string`.
"""

from __future__ import annotations

import atexit
import contextlib
import signal
import socket
import ssl
import subprocess
import time
import weakref
from pathlib import Path

from .tls import TlsMaterial

__all__ = ["ACCOUNT_KEY", "ACCOUNT_NAME", "Azurite", "repo_root"]

#: Azurite's public, well-known development account. Allowed in test code only.
ACCOUNT_NAME = "devstoreaccount1"
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="

_LIVE: weakref.WeakSet[Azurite] = weakref.WeakSet()


def repo_root() -> Path:
    """The repository root: the parent of ``tests/``."""
    return Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Azurite:
    """One ``azurite-table`` process on 127.0.0.1.

    ``in_memory=True`` (default) keeps data in RAM; ``in_memory=False`` persists under ``workdir`` so
    :meth:`restart` keeps the tables, which lets a test kill storage mid-run and bring it back.
    The process is killed on :meth:`stop`, on garbage collection of the context manager, and at exit.
    """

    def __init__(
        self,
        workdir: Path,
        tls: TlsMaterial,
        *,
        in_memory: bool = True,
        port: int | None = None,
        startup_timeout: float = 30.0,
        executable: Path | None = None,
    ) -> None:
        self.workdir = Path(workdir)
        self.tls = tls
        self.in_memory = in_memory
        self.startup_timeout = startup_timeout
        self.executable = executable or repo_root() / "node_modules" / ".bin" / "azurite-table"
        self._fixed_port = port
        self.port: int = port or 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_path = self.workdir / "azurite-table.log"

    # -- endpoints ------------------------------------------------------------------------------
    @property
    def table_service_uri(self) -> str:
        """Path-style account URL, e.g. ``https://127.0.0.1:PORT/devstoreaccount1``."""
        return f"https://127.0.0.1:{self.port}/{ACCOUNT_NAME}"

    @property
    def connection_string(self) -> str:
        """Account-key connection string (test code only) with an HTTPS table endpoint."""
        return (
            f"DefaultEndpointsProtocol=https;AccountName={ACCOUNT_NAME};AccountKey={ACCOUNT_KEY};"
            f"TableEndpoint={self.table_service_uri};"
        )

    def env(self) -> dict[str, str]:
        """The product's identity-based table setting pointing at this Azurite."""
        return {"AUDIT_TABLE_SERVICE_URI": self.table_service_uri}

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # -- lifecycle ------------------------------------------------------------------------------
    def command(self) -> list[str]:
        """The argv used to start Azurite (flags checked against azurite 3.35.0's ``--help``)."""
        argv = [
            str(self.executable),
            "--oauth",
            "basic",
            "--cert",
            str(self.tls.cert_file),
            "--key",
            str(self.tls.key_file),
            "--tableHost",
            "127.0.0.1",
            "--tablePort",
            str(self.port),
            "--silent",
            "--skipApiVersionCheck",
            "--disableTelemetry",
        ]
        # 3.35.0 refuses --location together with --inMemoryPersistence.
        argv += ["--inMemoryPersistence"] if self.in_memory else ["--location", str(self.workdir / "data")]
        return argv

    def start(self) -> Azurite:
        if self.running:
            return self
        if not self.executable.exists():
            raise RuntimeError(f"{self.executable} not found: run `make install` (npm ci) first")
        self.workdir.mkdir(parents=True, exist_ok=True)
        attempts = 1 if self._fixed_port or self.port else 3
        for attempt in range(attempts):
            if not self._fixed_port and (attempt > 0 or not self.port):
                self.port = _free_port()
            try:
                self._spawn_and_wait()
                return self
            except RuntimeError:
                if attempt == attempts - 1 or "EADDRINUSE" not in self._log_tail():
                    raise
        return self

    def _spawn_and_wait(self) -> None:
        with self._log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                self.command(),
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        _LIVE.add(self)
        ctx = ssl.create_default_context(cafile=str(self.tls.ca_file))
        deadline = time.monotonic() + self.startup_timeout
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self._proc = None
                raise RuntimeError(f"azurite-table exited with {code} during startup:\n{self._log_tail()}")
            try:
                with (
                    socket.create_connection(("127.0.0.1", self.port), timeout=1.0) as raw,
                    ctx.wrap_socket(raw, server_hostname="127.0.0.1"),
                ):
                    return
            except (OSError, ssl.SSLError) as exc:
                last_error = exc
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(
            f"azurite-table did not accept TLS on 127.0.0.1:{self.port} within {self.startup_timeout}s "
            f"(last error: {last_error!r}):\n{self._log_tail()}"
        )

    def _log_tail(self, limit: int = 4000) -> str:
        try:
            return self._log_path.read_text(errors="replace")[-limit:]
        except OSError:
            return "<no log>"

    def stop(self, timeout: float = 10.0) -> None:
        """Stop gracefully (SIGINT lets Azurite flush a persistent store), then SIGKILL."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        _LIVE.discard(self)

    def kill(self) -> None:
        """Hard kill (no flush): for tests of storage disappearing mid-run."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)
        _LIVE.discard(self)

    def restart(self) -> Azurite:
        """Stop and start again on the same port (data survives only with ``in_memory=False``)."""
        self.stop()
        self._fixed_port = self.port
        return self.start()

    def __enter__(self) -> Azurite:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __del__(self) -> None:
        proc = getattr(self, "_proc", None)
        if proc is not None and proc.poll() is None:
            proc.kill()


@atexit.register
def _kill_all() -> None:
    for azurite in list(_LIVE):
        azurite.kill()
