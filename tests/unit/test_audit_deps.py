"""tools/audit_deps.py: a vulnerability fails, and what could not be checked is said loudly, never passed off as clean."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

spec = importlib.util.spec_from_file_location("audit_deps", Path(__file__).resolve().parents[2] / "tools" / "audit_deps.py")
assert spec and spec.loader
audit_deps = importlib.util.module_from_spec(spec)
sys.modules["audit_deps"] = audit_deps  # dataclasses look their module up
spec.loader.exec_module(audit_deps)


def _report(*deps: dict[str, object]) -> str:
    return json.dumps({"dependencies": list(deps), "fixes": []})


CLEAN = {"name": "azure-core", "version": "1.41.0", "vulns": []}
SKIPPED = {"name": "cffi", "skip_reason": "Dependency not found on PyPI and could not be audited: cffi (2.1.1)"}
VULNERABLE = {"name": "urllib3", "version": "2.8.0", "vulns": [{"id": "GHSA-xxxx", "fix_versions": ["2.8.1"]}]}


def test_a_vulnerability_fails_whatever_else() -> None:
    verdict = audit_deps.judge(1, _report(CLEAN, SKIPPED, VULNERABLE), "", strict=False)
    assert verdict.code == 1 and any("VULNERABLE: urllib3" in line and "2.8.1" in line for line in verdict.lines)


def test_all_checked_and_clean_passes_quietly() -> None:
    verdict = audit_deps.judge(0, _report(CLEAN), "", strict=True)
    assert verdict.code == 0 and verdict.lines == ["pip-audit: 1 pinned packages checked, no known vulnerabilities."]


def test_nothing_checkable_is_not_a_pass() -> None:
    verdict = audit_deps.judge(0, _report(SKIPPED, {**SKIPPED, "name": "yarl"}), "", strict=False)
    text = "\n".join(verdict.lines)
    assert "DEPENDENCY AUDIT NOT PERFORMED" in text and "none of the 2" in text and audit_deps.BANNER in text
    assert verdict.code == 0  # loud, not blocking, unless strict
    assert audit_deps.judge(0, _report(SKIPPED), "", strict=True).code == 1


def test_partly_checked_names_every_package_left_out() -> None:
    verdict = audit_deps.judge(0, _report(CLEAN, SKIPPED), "", strict=False)
    text = "\n".join(verdict.lines)
    assert "INCOMPLETE" in text and "cffi: Dependency not found" in text and "1 packages checked" in text


def test_an_unreachable_service_or_a_broken_run_is_said() -> None:
    offline = audit_deps.judge(1, "", "requests.exceptions.ConnectionError: Max retries exceeded", strict=False)
    assert offline.code == 0 and "could not be reached" in "\n".join(offline.lines)
    broken = audit_deps.judge(2, "", "usage: pip-audit ...", strict=False)
    assert broken.code == 1 and "did not produce a report" in "\n".join(broken.lines)
