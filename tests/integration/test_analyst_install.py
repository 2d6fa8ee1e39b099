"""The analyst's install, as docs/security-team.md writes it, in a clean venv: one command, runtime only.

The page's install block holds ``pipx install .`` and, for machines without pipx, the plain venv
line that does the same (pipx makes a venv and runs ``pip install .`` in it). This test runs that
venv line exactly as printed, in a copy of the repository's tracked files, with ``HOME`` in a
temporary directory. pip reads the wheels ``make wheelhouse`` downloaded (``PIP_NO_INDEX``,
``PIP_FIND_LINKS``), so the test needs no network; the command line is the page's.

Then the installed command works (``--help``, and ``report`` against Azurite through the real
SDKs), and the venv holds the runtime pins and nothing else: no test, lint or Node tooling.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.contract.pins import REQUIREMENTS, canonical, read_pins
from tests.doc_commands import REPO, bash_blocks
from tests.emulators.azurite import Azurite

DOC = REPO / "docs" / "security-team.md"
WHEELHOUSE = REPO / ".wheelhouse"
VENV_LINE_START = "python3 -m venv ~/.local/clientcert-audit"


def _install_line() -> str:
    lines = [line for block in bash_blocks(DOC) for line in block.lines if line.startswith(VENV_LINE_START)]
    assert len(lines) == 1, f"docs/security-team.md: expected one install line starting {VENV_LINE_START!r}"
    return lines[0]


def _tracked_copy(target: Path) -> Path:
    """The repository as a fresh clone has it (tracked files only, as they are in the work tree)."""
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, files):
        source = REPO / name.decode()
        if source.is_file():
            (target / name.decode()).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name.decode())
    return target


def test_the_documented_analyst_install_gives_the_runtime_only(tmp_path: Path, azurite: Azurite) -> None:
    if not (WHEELHOUSE / ".downloaded").is_file():
        pytest.fail("the wheels are missing: run `make wheelhouse` (make test does)")
    home = tmp_path / "home"
    home.mkdir()
    src = _tracked_copy(tmp_path / "src")
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PIP_", "VIRTUAL_ENV", "PYTHON", "AUDIT_")) and k != "HOME"
    }
    env.update(HOME=str(home), PIP_NO_INDEX="1", PIP_FIND_LINKS=str(WHEELHOUSE), PIP_DISABLE_PIP_VERSION_CHECK="1")
    install = subprocess.run(
        ["bash", "-c", _install_line()], cwd=src, env=env, capture_output=True, text=True, timeout=600, check=False
    )
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]

    venv = home / ".local" / "clientcert-audit"
    listed = subprocess.run(
        [str(venv / "bin" / "pip"), "list", "--format", "json"], env=env, capture_output=True, text=True, check=True
    )
    installed = {canonical(p["name"]): p["version"] for p in json.loads(listed.stdout)}
    pins = read_pins(REQUIREMENTS)
    assert {name: installed.get(name) for name in pins} == pins, "the analyst gets exactly the deployed versions"
    extra = set(installed) - set(pins) - {"clientcert-audit", "pip", "setuptools"}
    assert not extra, f"the analyst install brings more than the runtime: {sorted(extra)}"

    command = venv / "bin" / "clientcert-audit"
    assert subprocess.run([str(command), "--help"], env=env, capture_output=True, check=False).returncode == 0
    # The installed command reaches Table Storage through the real SDKs (an empty account: nothing to report).
    report = subprocess.run(
        [str(command), "report"],
        cwd=tmp_path,
        env={
            **env,
            "AUDIT_TABLE_CONNECTION_STRING": azurite.connection_string,
            "AUDIT_RESULTS_TABLE": "AnalystInstallResults",
            "AUDIT_RUNS_TABLE": "AnalystInstallRuns",
            "REQUESTS_CA_BUNDLE": str(azurite.tls.ca_file),
            "SSL_CERT_FILE": str(azurite.tls.ca_file),
        },
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert report.returncode == 5, report.stdout + report.stderr  # NO_DATA: no run recorded yet
    assert "no audit run is recorded" in report.stderr.lower()
