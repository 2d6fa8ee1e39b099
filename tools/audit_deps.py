"""Dependency vulnerability check for ``make test``: ``pip-audit`` over requirements.txt.

Fails on any known vulnerability. Says **loudly** what it could not check: a package the
vulnerability service does not answer for (pip-audit's ``skip_reason``, e.g. "not found on PyPI"
when the index is a mirror without PyPI's JSON API) is not a pass, and when no package at all could
be checked, or the service cannot be reached, the banner says the audit was NOT performed.
Neither blocks unrelated work by default (the check is only as good as its data source);
``AUDIT_DEPS_STRICT=1`` (for a CI that does reach the service) makes them fail too.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OFFLINE_MARKERS = ("ConnectionError", "NameResolutionError", "Max retries exceeded", "Temporary failure in name resolution")
BANNER = "!" * 78


@dataclass
class Verdict:
    """What one pip-audit run showed: the exit code to return and the lines to print."""

    code: int
    lines: list[str] = field(default_factory=list)


def _loud(*lines: str) -> list[str]:
    return [BANNER, *(f"!! {line}" for line in lines), BANNER]


def judge(returncode: int, stdout: str, stderr: str, *, strict: bool) -> Verdict:
    """Turn pip-audit's JSON report (or its failure) into a verdict. Pure, so every case is tested."""
    failed = 1 if strict else 0
    try:
        report = json.loads(stdout)
        dependencies = report["dependencies"]
    except (ValueError, KeyError, TypeError):
        offline = any(marker in stderr for marker in OFFLINE_MARKERS)
        why = "the vulnerability service could not be reached" if offline else "pip-audit did not produce a report"
        return Verdict(
            failed if offline else 1,
            _loud(f"DEPENDENCY AUDIT NOT PERFORMED: {why}.", *stderr.strip().splitlines()[-3:]),
        )
    vulnerable = [d for d in dependencies if d.get("vulns")]
    skipped = [d for d in dependencies if d.get("skip_reason")]
    checked = len(dependencies) - len(skipped)
    lines: list[str] = []
    for dep in vulnerable:
        for vuln in dep["vulns"]:
            fixes = ", ".join(vuln.get("fix_versions") or []) or "no fixed version"
            lines.append(f"VULNERABLE: {dep['name']} {dep.get('version', '')}: {vuln.get('id')} (fixed in {fixes})")
    if vulnerable:
        return Verdict(1, lines)
    if not dependencies or checked == 0:
        return Verdict(
            failed,
            _loud(
                f"DEPENDENCY AUDIT NOT PERFORMED: none of the {len(dependencies)} pinned packages could be checked.",
                f"First reason: {skipped[0]['skip_reason'] if skipped else 'no dependencies listed'}",
                "Run `make audit-deps` where the vulnerability service (PyPI's JSON API) is reachable.",
            ),
        )
    if skipped:
        return Verdict(
            failed,
            _loud(
                f"Dependency audit INCOMPLETE: {checked} packages checked, no known vulnerabilities; "
                f"{len(skipped)} could NOT be checked:",
                *(f"  {d['name']}: {d['skip_reason']}" for d in skipped),
            ),
        )
    return Verdict(0, [f"pip-audit: {checked} pinned packages checked, no known vulnerabilities."])


def main() -> int:
    cmd = [
        sys.executable,
        "-m",
        "pip_audit",
        "-r",
        str(ROOT / "requirements.txt"),
        "--no-deps",  # every runtime package is pinned: nothing to resolve, no install
        "--disable-pip",
        "--progress-spinner",
        "off",
        "--format",
        "json",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)  # noqa: S603
    verdict = judge(proc.returncode, proc.stdout, proc.stderr, strict=os.environ.get("AUDIT_DEPS_STRICT") == "1")
    print("\n".join(verdict.lines), file=sys.stderr if verdict.code or len(verdict.lines) > 1 else sys.stdout)
    return verdict.code


if __name__ == "__main__":
    sys.exit(main())
