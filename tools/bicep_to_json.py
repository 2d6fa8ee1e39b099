"""Parse Bicep files with pycep-parser and print their syntax trees as one JSON object.

Runs inside .venv-infra (pycep-parser is pinned there, next to checkov, which uses the same
parser). Usage: bicep_to_json.py FILE.bicep... -> {"<path>": <tree> | {"__error__": "..."}}.
Exit status 1 if any file fails to parse. Used by tests/infra.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from pycep import BicepParser


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: bicep_to_json.py FILE.bicep...", file=sys.stderr)
        return 2
    parser = BicepParser(add_line_numbers=False, cache=False)
    out: dict[str, object] = {}
    failed = False
    for name in argv:
        try:
            out[name] = parser.parse(file_path=Path(name))
        except Exception as exc:  # noqa: BLE001 - report every parse failure, keep going
            out[name] = {"__error__": f"{type(exc).__name__}: {exc}"}
            failed = True
    json.dump(out, sys.stdout, default=str)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
