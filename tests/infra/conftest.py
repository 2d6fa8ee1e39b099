"""Fixtures for the infra/ validation: pycep parse trees, one checkov scan, the Kusto checker.

The tools live outside the app's venv: checkov and pycep-parser in ``.venv-infra`` (pinned in
requirements-infra.txt), the Kusto language service in ``node_modules``. ``make test`` installs
both. Nothing is skipped: a missing tool fails the test with the command that installs it.
Every test below this directory is marked ``infra`` here.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.kinds import mark_below

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"
INFRA_VENV = REPO / ".venv-infra"
INFRA_PYTHON = INFRA_VENV / "bin" / "python"
CHECKOV = INFRA_VENV / "bin" / "checkov"
BICEP_TO_JSON = REPO / "tools" / "bicep_to_json.py"
KQL_CHECK = REPO / "tools" / "kql_check.js"
KUSTO_PACKAGE = REPO / "node_modules" / "@kusto" / "language-service-next" / "package.json"
INSTALL_HINT = "run `make test` (or `make infra-tools`) from the repository root to install the infra validation tools"

BICEP_FILES = sorted(INFRA.rglob("*.bicep"))
KQL_FILES = sorted((INFRA / "queries").glob("*.kql"))


@pytest.hookimpl(tryfirst=True)  # before the ``-m`` selection reads the markers
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    mark_below(Path(__file__).parent, pytest.mark.infra, items)


def rel(path: Path) -> str:
    return path.relative_to(REPO).as_posix()


def require_tool(path: Path, what: str) -> None:
    if not path.exists():
        pytest.fail(f"{what} is missing ({rel(path)}): {INSTALL_HINT}", pytrace=False)


def node() -> str:
    found = shutil.which("node")
    if not found:
        pytest.fail(f"node is not on PATH: install Node.js, then {INSTALL_HINT}", pytrace=False)
    return found


@pytest.fixture(scope="session")
def bicep_trees() -> dict[str, Any]:
    """``{relative path: pycep JSON tree}`` for every .bicep file; a parse failure maps to ``{"__error__": msg}``."""
    require_tool(INFRA_PYTHON, "the infra venv (.venv-infra with pycep-parser)")
    assert BICEP_FILES, "no .bicep files under infra/"
    proc = subprocess.run(
        [str(INFRA_PYTHON), str(BICEP_TO_JSON), *(rel(p) for p in BICEP_FILES)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if proc.returncode not in (0, 1) or not proc.stdout.strip():
        pytest.fail(f"bicep_to_json.py crashed (exit {proc.returncode}):\n{proc.stderr}", pytrace=False)
    trees: dict[str, Any] = json.loads(proc.stdout)
    return trees


def _content_key() -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in INFRA.rglob("*") if p.is_file()):
        digest.update(rel(path).encode())
        digest.update(path.read_bytes())
    digest.update((REPO / "requirements-infra.txt").read_bytes())
    return digest.hexdigest()[:16]


def _run_checkov() -> dict[str, Any]:
    proc = subprocess.run(
        [
            str(CHECKOV),
            "--framework",
            "bicep",
            "--directory",
            str(INFRA),
            "--output",
            "json",
            "--skip-download",  # no network: use the checks shipped in the pinned package
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env={**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_LOG_LEVEL": "ERROR"},
    )
    # checkov exits 1 when a check fails; the report is still complete.
    if proc.returncode not in (0, 1):
        pytest.fail(f"checkov crashed (exit {proc.returncode}):\n{proc.stderr[-4000:]}", pytrace=False)
    try:
        report = json.loads(proc.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"checkov printed no JSON report:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}", pytrace=False)
    if isinstance(report, list):  # one entry per framework
        report = next(r for r in report if r.get("check_type") == "bicep")
    return dict(report)


@pytest.fixture(scope="session")
def checkov_report(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """One checkov scan of infra/ per test run, shared by the pytest-xdist workers.

    The first worker to get the lock scans and writes the report next to the workers' temp
    directories; the others wait on the lock and read it (the key covers infra/ and the tool pins).
    """
    require_tool(CHECKOV, "checkov (.venv-infra)")
    shared = tmp_path_factory.getbasetemp().parent
    report_file = shared / f"checkov-{_content_key()}.json"
    with (shared / "checkov.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if report_file.exists():
                report = json.loads(report_file.read_text())
            else:
                report = _run_checkov()
                report_file.write_text(json.dumps(report))
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    yield report


def run_kql_check(*args: str, stdin: str | None = None) -> tuple[int, dict[str, Any]]:
    """Run tools/kql_check.js; returns (exit status, parsed JSON report)."""
    require_tool(KUSTO_PACKAGE, "@kusto/language-service-next (node_modules)")
    proc = subprocess.run(
        [node(), str(KQL_CHECK), *args],
        cwd=REPO,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    try:
        report = json.loads(proc.stdout)
    except json.JSONDecodeError:
        pytest.fail(
            f"kql_check.js printed no JSON (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}", pytrace=False
        )
    return proc.returncode, report
