"""The runtime pins the SDK contract test last passed with, and how they are recorded.

``requirements.txt`` pins every runtime package (``==``). ``tested-pins.txt`` next to this file is
the same list as the contract test (``tests/contract/test_fastpaths_contract.py``) last passed with
it installed; ``tests/unit/test_pins.py`` fails while the two differ. So a pin cannot change without the
contract test passing on it.

Changing a pin (a security fix, an SDK upgrade):

1. Edit ``requirements.txt`` and ``pyproject.toml``'s ``dependencies`` (the same pins): the new ``==``
   version, plus any dependency it now needs at run time (``.venv/bin/pip freeze`` after the install
   shows what it pulled in); then ``.venv/bin/python tools/pin_hashes.py`` writes the hashes.
2. ``make install`` (reinstalls the venv from the changed file, checking every hash).
3. ``AUDIT_RECORD_TESTED_PINS=1 .venv/bin/python -m pytest -p no:xdist tests/contract``: runs the
   contract test on the installed versions and, only if every contract test passed, none was
   skipped or deselected, and the venv holds exactly the pinned versions, rewrites
   ``tested-pins.txt``.
4. ``make test``, and commit ``requirements.txt`` with ``tested-pins.txt``.

If the contract test fails, a shortcut in ``shared/azure/fastpaths.py`` no longer matches the SDK: fix
it (or its self-check in ``shared/azure/fastpaths_check.py``) before the pin moves.
"""

from __future__ import annotations

import platform
import re
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
REQUIREMENTS = ROOT / "requirements.txt"
TESTED_PINS = Path(__file__).with_name("tested-pins.txt")
#: Set to 1 to let a passing contract run rewrite :data:`TESTED_PINS`.
RECORD_ENV = "AUDIT_RECORD_TESTED_PINS"

_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([A-Za-z0-9.+!_-]+)$")


def canonical(name: str) -> str:
    """A distribution name as the index compares it (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_lines(path: Path) -> list[str]:
    """The requirement lines of a requirements file, comments, blanks and ``--hash`` options dropped
    (continuation lines joined first, as pip reads them)."""
    text = re.sub(r"\\\n", " ", path.read_text(encoding="utf-8"))
    lines = (line.split("#", 1)[0].strip() for line in text.splitlines())
    return [re.sub(r"\s+--hash=\S+", "", line).strip() for line in lines if line]


def requirement_hashes(path: Path) -> dict[str, list[str]]:
    """``{canonical name: [sha256, ...]}`` of the ``--hash`` options of a requirements file."""
    text = re.sub(r"\\\n", " ", path.read_text(encoding="utf-8"))
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        match = _PIN.match(line.split()[0]) if line else None
        if match:
            found[canonical(match[1])] = re.findall(r"--hash=sha256:([0-9a-f]{64})\b", line)
    return found


def read_pins(path: Path) -> dict[str, str]:
    """``{canonical name: version}`` of a file of ``name==version`` lines; anything else raises."""
    pins: dict[str, str] = {}
    for line in requirement_lines(path):
        match = _PIN.match(line)
        if match is None:
            raise ValueError(f"{path.name}: not an exact pin (name==version): {line!r}")
        pins[canonical(match[1])] = match[2]
    return pins


def installed_mismatches(pins: dict[str, str]) -> dict[str, tuple[str, str | None]]:
    """Pins the running interpreter does not hold: ``{name: (pinned, installed or None)}``."""
    out: dict[str, tuple[str, str | None]] = {}
    for name, version in pins.items():
        try:
            have: str | None = metadata.version(name)
        except metadata.PackageNotFoundError:
            have = None
        if have != version:
            out[name] = (version, have)
    return out


def record_tested_pins() -> str:
    """Write :data:`TESTED_PINS` from ``requirements.txt``; the caller has checked the run passed.
    Returns what was written, or raises when the venv does not hold the pinned versions."""
    pins = read_pins(REQUIREMENTS)
    wrong = installed_mismatches(pins)
    if wrong:
        raise RuntimeError(f"the venv does not hold requirements.txt's pins (run make install): {wrong}")
    text = (
        "# Runtime pins the SDK contract test (tests/contract) last passed with, on "
        f"{platform.python_implementation()} {platform.python_version()}.\n"
        "# Written by that test when run with AUDIT_RECORD_TESTED_PINS=1; never edit by hand.\n"
        "# The procedure for changing a pin is in tests/contract/pins.py.\n"
        + "".join(f"{name}=={version}\n" for name, version in sorted(pins.items()))
    )
    TESTED_PINS.write_text(text, encoding="utf-8")
    return text
