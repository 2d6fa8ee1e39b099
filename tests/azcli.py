"""The real Azure CLI (azure-cli 2.91.0 from PyPI, in ``.venv-azcli``: ``make azcli``), signed in to
the ARM emulator, offline.

How, with nothing but what the CLI itself supports:

* a private ``AZURE_CONFIG_DIR`` per test, so nothing of a developer's own ``az`` is read or changed;
* ``az cloud register --skip-endpoint-discovery`` of a cloud whose Resource Manager endpoint and
  token audience are the emulator (``https://127.0.0.1:PORT/``), then ``az cloud set``;
* ``az login --identity``: azure-cli 2.91 signs in with MSAL's ``ManagedIdentityClient``
  (``azure/cli/core/auth/msal_credentials.py``), which speaks App Service's protocol when
  ``IDENTITY_ENDPOINT`` and ``IDENTITY_HEADER`` are set: the emulator's token endpoint;
* the emulator's CA through ``REQUESTS_CA_BUNDLE`` (TLS on loopback), no proxy for loopback,
  telemetry and surveys off.

Each ``az`` start costs about a second: tests group their resources so that a handful of calls
covers every case.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from tests.emulators.arm import ArmEmulator

ROOT = Path(__file__).resolve().parents[1]
AZCLI_BIN = ROOT / ".venv-azcli" / "bin"
AZ = AZCLI_BIN / "az"
CLOUD = "ClientcertAuditEmulator"
#: The variables of the caller's environment that would point ``az`` (or its HTTP stack) elsewhere.
_DROPPED = ("AZURE_", "IDENTITY_", "MSI_", "REQUESTS_CA_BUNDLE", "SSL_CERT", "CURL_CA_BUNDLE")


def require_az() -> Path:
    """The CLI, or a failed test that says how to install it (``make test`` installs it first)."""
    if not AZ.exists():
        pytest.fail(f"The real Azure CLI is not installed at {AZ}: run `make azcli` (make test does).")
    return AZ


class AzCli:
    """``az`` with a private configuration, signed in to ``arm`` through its managed-identity endpoint."""

    def __init__(self, arm: ArmEmulator, workdir: Path) -> None:
        require_az()
        self.arm = arm
        self.config_dir = workdir / "azure-config"
        self.config_dir.mkdir(parents=True, exist_ok=True)
        base = {k: v for k, v in os.environ.items() if not k.upper().startswith(_DROPPED) and "PROXY" not in k.upper()}
        self.env: dict[str, str] = {
            **base,
            "PATH": f"{AZCLI_BIN}{os.pathsep}{base.get('PATH', '/usr/bin:/bin')}",
            "AZURE_CONFIG_DIR": str(self.config_dir),
            "AZURE_EXTENSION_DIR": str(workdir / "azure-extensions"),
            "AZURE_CORE_COLLECT_TELEMETRY": "false",
            "AZURE_CORE_SURVEY_MESSAGE": "false",
            "AZURE_CORE_NO_COLOR": "true",
            "REQUESTS_CA_BUNDLE": str(arm.tls.ca_file),
            "IDENTITY_ENDPOINT": arm.identity_endpoint,
            "IDENTITY_HEADER": arm.identity_header,
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
        }

    def run(self, args: Sequence[str], *, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """``az ARGS``; with ``check``, a failure shows the CLI's own stderr."""
        done = subprocess.run(
            [str(AZ), *args], env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and done.returncode != 0:
            pytest.fail(f"az {' '.join(args)} exited {done.returncode}:\n{done.stderr[-3000:]}")
        return done

    def sign_in(self) -> AzCli:
        """Register and select the emulator's cloud, then sign in with the managed identity."""
        url = self.arm.url
        self.run(
            [
                "cloud",
                "register",
                "--name",
                CLOUD,
                "--skip-endpoint-discovery",
                "--endpoint-resource-manager",
                f"{url}/",
                "--endpoint-management",
                f"{url}/",
                "--endpoint-active-directory",
                url,
                "--endpoint-active-directory-resource-id",
                f"{url}/",
                "--output",
                "none",
            ]
        )
        self.run(["cloud", "set", "--name", CLOUD, "--output", "none"])
        self.run(["login", "--identity", "--output", "none"])
        return self

    def bash(
        self, script: Path, *, cwd: Path, timeout: float = 300, extra: Mapping[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run a bash script with this ``az`` first on ``PATH`` and its configuration."""
        return subprocess.run(
            ["bash", str(script)],
            env={**self.env, **(extra or {})},
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
