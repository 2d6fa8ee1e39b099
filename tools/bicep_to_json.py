"""Parse Bicep files with pycep-parser and print their syntax trees as one JSON object.

Runs inside .venv-infra (pycep-parser is pinned there, next to checkov, which uses the same
parser). Usage: bicep_to_json.py [--typed] FILE.bicep... -> {"<path>": <tree> | {"__error__": "..."}}.
Exit status 1 if any file fails to parse. Used by tests/infra.

pycep returns a quoted literal ('abc') as ``str`` and a reference to a symbol (abc) as its
``BicepElement`` subclass of ``str``; plain JSON loses the difference. With ``--typed`` every
reference is written as ``{"__ident__": "abc"}`` so a type checker can tell ``kind: 'shared'``
(a literal to check) from ``kind: kindParam`` (a parameter to resolve).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from pycep import BicepParser
from pycep.transformer import BicepElement


def typed(node: Any) -> Any:
    """Copy of ``node`` with every symbol reference (BicepElement) as ``{"__ident__": name}``."""
    if isinstance(node, BicepElement):
        return {"__ident__": str(node)}
    if isinstance(node, dict):
        return {str(k): typed(v) for k, v in node.items()}
    if isinstance(node, (list, tuple)):
        return [typed(v) for v in node]
    return node


def main(argv: list[str]) -> int:
    as_typed = "--typed" in argv
    argv = [a for a in argv if a != "--typed"]
    if not argv:
        print("usage: bicep_to_json.py [--typed] FILE.bicep...", file=sys.stderr)
        return 2
    parser = BicepParser(add_line_numbers=False, cache=False)
    out: dict[str, object] = {}
    failed = False
    for name in argv:
        try:
            tree = parser.parse(file_path=Path(name))
            out[name] = typed(tree) if as_typed else tree
        except Exception as exc:  # noqa: BLE001 - report every parse failure, keep going
            out[name] = {"__error__": f"{type(exc).__name__}: {exc}"}
            failed = True
    json.dump(out, sys.stdout, default=str)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
