"""Copy the Bicep type definitions that infra/ uses into the project, and nothing else.

    python tools/bicep_types_subset.py --reference ../shared/reference/bicep-types \
        --out tests/infra/bicep-types infra

Every ``resource <symbol> '<Type>@<api-version>'`` declared under the given directories is
looked up in the reference files (Microsoft's ``types.json`` from Azure/bicep-types-az, one per
provider folder and API version; format in that folder's SOURCES.md). For each reference file
that defines at least one of them, the tool writes a file of the same name to ``--out`` holding
only those ResourceType nodes and the type nodes they reach, renumbered (``{"$ref": "#/N"}``).
The type check in tests/infra/test_bicep_types.py reads those copies, so the tests need nothing
outside the repository. A type missing from the reference is reported; a copy for it may be
added by hand to ``--out`` (its origin noted in SOURCES.md there), and is then accepted.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

RESOURCE = re.compile(r"^\s*resource\s+\w+\s+'([^'@]+)@([^']+)'", re.M)


def declared_types(roots: list[Path]) -> set[str]:
    """``Type@api`` (lower case) of every resource declared in the .bicep files under ``roots``."""
    found: set[str] = set()
    for root in roots:
        files = [root] if root.is_file() else sorted(root.rglob("*.bicep"))
        for path in files:
            for type_, api in RESOURCE.findall(path.read_text()):
                found.add(f"{type_}@{api}".lower())
    return found


def refs(node: Any) -> list[int]:
    """Indexes of every ``{"$ref": "#/N"}`` inside ``node``."""
    if isinstance(node, dict):
        if set(node) == {"$ref"} and isinstance(node["$ref"], str) and node["$ref"].startswith("#/"):
            return [int(node["$ref"][2:])]
        return [i for v in node.values() for i in refs(v)]
    if isinstance(node, list):
        return [i for v in node for i in refs(v)]
    return []


def renumber(node: Any, mapping: dict[int, int]) -> Any:
    if isinstance(node, dict):
        if set(node) == {"$ref"} and isinstance(node["$ref"], str) and node["$ref"].startswith("#/"):
            return {"$ref": f"#/{mapping[int(node['$ref'][2:])]}"}
        return {k: renumber(v, mapping) for k, v in node.items()}
    if isinstance(node, list):
        return [renumber(v, mapping) for v in node]
    return node


def subset(nodes: list[dict[str, Any]], wanted: set[str]) -> tuple[list[dict[str, Any]], set[str]]:
    """The ResourceType nodes named in ``wanted`` plus every node they reach, in original order."""
    roots = [
        i for i, n in enumerate(nodes) if n.get("$type") == "ResourceType" and str(n.get("name", "")).lower() in wanted
    ]
    keep: set[int] = set()
    stack = list(roots)
    while stack:
        i = stack.pop()
        if i in keep:
            continue
        keep.add(i)
        stack.extend(refs(nodes[i]))
    order = sorted(keep)
    mapping = {old: new for new, old in enumerate(order)}
    found = {str(nodes[i]["name"]).lower() for i in roots}
    return [renumber(nodes[i], mapping) for i in order], found


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference", type=Path, required=True, help="folder of types.json copies")
    parser.add_argument("--out", type=Path, required=True, help="folder the subset files are written to")
    parser.add_argument("roots", nargs="+", type=Path, help=".bicep files or folders to scan")
    args = parser.parse_args(argv)
    wanted = declared_types(args.roots)
    args.out.mkdir(parents=True, exist_ok=True)
    covered: set[str] = set()
    for source in sorted(args.reference.glob("*.json")):
        nodes = json.loads(source.read_text())
        kept, found = subset(nodes, wanted)
        if found:
            (args.out / source.name).write_text(json.dumps(kept, indent=1, sort_keys=True) + "\n")
            covered |= found
            print(f"{source.name}: {', '.join(sorted(found))} ({len(kept)} of {len(nodes)} nodes)")
    # Hand-added copies (types the reference folder lacks) count as covered.
    for extra in sorted(args.out.glob("*.json")):
        if not (args.reference / extra.name).exists():
            names = {
                str(n.get("name", "")).lower()
                for n in json.loads(extra.read_text())
                if n.get("$type") == "ResourceType"
            }
            covered |= names & wanted
    missing = sorted(wanted - covered)
    for name in missing:
        print(f"MISSING: {name} is in neither the reference nor {args.out}", file=sys.stderr)
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
