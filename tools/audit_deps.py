"""Dependency vulnerability check for ``make test``: ``pip-audit`` over requirements.txt.

Fails on any known vulnerability. When the vulnerability service cannot be reached (offline
machine), it says so loudly and does not fail: the check is only as good as its data source,
and an unreachable one must not block unrelated work.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OFFLINE_MARKERS = ("ConnectionError", "NameResolutionError", "Max retries exceeded", "Temporary failure in name resolution")


def main() -> int:
    cmd = [sys.executable, "-m", "pip_audit", "-r", str(ROOT / "requirements.txt"), "--progress-spinner", "off"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)  # noqa: S603
    output = proc.stdout + proc.stderr
    if proc.returncode == 0:
        first = "No known vulnerabilities found" if "No known vulnerabilities" in output else output.strip()[:200]
        skipped = output.count("could not be audited")
        print(f"pip-audit: {first}" + (f" ({skipped} packages unknown to the vulnerability service)" if skipped else ""))
        return 0
    if any(marker in output for marker in OFFLINE_MARKERS) and "Found" not in output:
        print("WARNING: pip-audit could not reach the vulnerability service; dependency audit NOT performed")
        return 0
    print(output)
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
