"""Write the sha256 of every file a deploy may install next to each pin of requirements.txt.

The Flex Consumption remote build (Oryx) runs ``python -m pip install --prefer-binary -r
requirements.txt --target=...`` (or ``uv pip install -r requirements.txt``, falling back to pip),
and pip switches to hash-checking mode by itself as soon as one requirement carries ``--hash``: every
requirement must then be pinned with ``==`` and every downloaded file must match one of its hashes.
So a hash per file the build may pick closes the gap between "the version we tested" and "the bytes
that were deployed".

The files listed are the ones such a build can choose: the source distribution, pure-Python wheels,
and the CPython 3.11 / 3.12 wheels for glibc Linux on x86-64 (``pythonVersion`` of infra/main.bicep;
Flex Consumption runs Linux on x86-64). The hashes come from PyPI's JSON simple API (PEP 691), one
request per pinned package: run this after changing a pin (see tests/contract/pins.py), then
``make install`` proves them (pip checks every hash it installs).

    .venv/bin/python tools/pin_hashes.py            # rewrites requirements.txt in place
"""

from __future__ import annotations

import json
import re
import sys
import urllib.request
from pathlib import Path

from packaging.tags import Tag
from packaging.utils import canonicalize_name, parse_sdist_filename, parse_wheel_filename

ROOT = Path(__file__).resolve().parent.parent
REQUIREMENTS = ROOT / "requirements.txt"
INDEX = "https://pypi.org/simple/{name}/"
PYTHONS = ("cp311", "cp312")
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([A-Za-z0-9.+!_-]+)")


def deployable(tag: Tag) -> bool:
    """Whether a wheel with this tag can be installed on Flex Consumption (Linux x86-64, CPython 3.11/3.12)."""
    if tag.platform == "any":
        return tag.interpreter.startswith("py3") or tag.interpreter in PYTHONS
    if not (tag.platform.startswith("manylinux") and tag.platform.endswith("x86_64")):
        return False
    if tag.abi == "abi3":
        return tag.interpreter.startswith("cp3") and int(tag.interpreter[3:]) <= 12
    return tag.interpreter in PYTHONS


def file_hashes(name: str, version: str) -> list[str]:
    url = INDEX.format(name=canonicalize_name(name))
    request = urllib.request.Request(url, headers={"Accept": "application/vnd.pypi.simple.v1+json"})  # noqa: S310 - https only
    with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310 - a fixed https URL
        files = json.load(response)["files"]
    hashes = []
    for entry in files:
        filename = entry["filename"]
        if filename.endswith(".whl"):
            _, wheel_version, _, tags = parse_wheel_filename(filename)
            if str(wheel_version) == version and any(deployable(t) for t in tags):
                hashes.append(entry["hashes"]["sha256"])
        elif filename.endswith((".tar.gz", ".zip")):
            try:
                _, sdist_version = parse_sdist_filename(filename)
            except ValueError:
                continue
            if str(sdist_version) == version:
                hashes.append(entry["hashes"]["sha256"])
    if not hashes:
        raise SystemExit(f"{name}=={version}: no deployable file on the index")
    return sorted(set(hashes))


def main() -> int:
    out: list[str] = []
    for line in REQUIREMENTS.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if stripped.startswith("--hash"):
            continue  # replaced below
        match = _PIN.match(stripped)
        if match is None:
            out.append(line)
            continue
        name, version = match.groups()
        hashes = file_hashes(name, version)
        out.append(f"{name}=={version} \\")
        out += [f"    --hash=sha256:{h}" + (" \\" if i < len(hashes) - 1 else "") for i, h in enumerate(hashes)]
        print(f"{name}=={version}: {len(hashes)} files", file=sys.stderr)
    REQUIREMENTS.write_text("\n".join(out) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
