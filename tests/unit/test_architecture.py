"""The architecture docs/design.md describes, read from the code itself: ``shared/``'s imports.

* No import cycle anywhere in ``shared/`` (type-only and function-level imports count: a cycle
  a lazy import hides is still two modules that cannot be understood one without the other).
* The pure core imports nothing but itself and the standard library: no SDK, no adapter, no I/O.
* The wings depend one way only: core ← azure (the adapters) ← run (the nightly run and the
  poll) ← report ← commands (the command line); nothing imports a wing above its own.
* Size: no module over ~400 lines, no function over ~50, no class over ~250 (a newcomer reads a
  module whole).

The imports are read with :mod:`ast`, so this is about the source, not about what happens to be
imported at run time.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "shared"

#: The wings, lowest first: a module may import its own wing and the wings below it.
WINGS = ("core", "azure", "run", "report", "commands", "entry")

#: The modules at shared/'s top: the command line's entry points (every other module is in a wing's sub-package).
FLAT: dict[str, str] = {
    "__init__": "entry",
    "__main__": "entry",
    "cli": "entry",
}

#: Breaks still to be mended, each named: the test fails when one is mended and still listed, so
#: this list only shrinks. Empty is the goal (issue 24).
KNOWN: frozenset[tuple[str, str]] = frozenset()

#: Cycles still to be broken (the test fails when one is broken and still listed). Empty is the goal.
KNOWN_CYCLES: frozenset[frozenset[str]] = frozenset()

LIMITS = {"module": 400, "function": 50, "class": 250}
#: Over a limit today, to be cut (issue 24): the test fails when one is cut and still listed.
OVERSIZE: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Module:
    name: str  # shared.x.y
    path: Path
    tree: ast.Module

    @property
    def wing(self) -> str:
        parts = self.name.split(".")
        if parts[1] in WINGS and parts[1] not in FLAT:
            return parts[1]
        return FLAT.get(parts[1], "unknown") if len(parts) == 2 else "unknown"


def modules() -> dict[str, Module]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__" and len(parts) > 1:
            parts = parts[:-1] if len(parts) > 2 else parts  # shared/__init__ stays shared.__init__
        name = ".".join(parts)
        found[name] = Module(name, path, ast.parse(path.read_text(encoding="utf-8"), str(path)))
    return found


def imports(module: Module, known: dict[str, Module]) -> Iterator[str]:
    """Every module this one imports (absolute names), wherever the import statement is."""
    is_package = module.path.name == "__init__.py"
    here = module.name.split(".") if is_package else module.name.split(".")[:-1]
    if module.name == "shared.__init__":
        here = ["shared"]
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = here[: len(here) - node.level + 1] if node.level else []
            target = ".".join([*base, *([node.module] if node.module else [])])
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                yield sub if sub in known else target


def graph() -> tuple[dict[str, Module], dict[str, set[str]]]:
    known = modules()
    aliases = {"shared": "shared.__init__"}
    edges = {name: {aliases.get(t, t) for t in imports(module, known)} - {name} for name, module in known.items()}
    return known, edges


def internal(target: str) -> bool:
    return target == "shared" or target.startswith("shared.")


def test_every_module_has_a_wing() -> None:
    known, _ = graph()
    assert [name for name, module in known.items() if module.wing == "unknown"] == []


def test_no_import_cycle_in_shared() -> None:
    known, edges = graph()
    internal_edges = {name: {t for t in targets if t in known} for name, targets in edges.items()}
    cycles = {frozenset(c) for c in strongly_connected(internal_edges) if len(c) > 1}
    new = [" <-> ".join(sorted(c)) for c in cycles - KNOWN_CYCLES]
    assert new == [], "import cycles in shared/: " + "; ".join(new)
    assert cycles >= KNOWN_CYCLES, "mended: take them off KNOWN_CYCLES"


def test_the_pure_core_imports_only_itself_and_the_standard_library() -> None:
    known, edges = graph()
    wrong = sorted(
        f"{name} imports {target}"
        for name, targets in edges.items()
        if known[name].wing == "core"
        for target in targets
        if not (
            (target in known and known[target].wing == "core")
            or (not internal(target) and target.split(".")[0] in sys.stdlib_module_names)
        )
    )
    assert wrong == [], "\n".join(wrong)


def test_the_wings_depend_one_way() -> None:
    known, edges = graph()
    upward = {
        (name, target)
        for name, targets in edges.items()
        for target in targets
        if target in known and WINGS.index(known[target].wing) > WINGS.index(known[name].wing)
    }
    assert sorted(upward - KNOWN) == [], "imports of a wing above the importer's own"
    assert sorted(KNOWN - upward) == [], "mended: take them off KNOWN"


def test_one_ledger_sequence() -> None:
    """Only the ledger opens, records, fails and closes a run (``RunLedger.run``): the nightly run and
    the poll hand it their body; none repeats the sequence."""
    steps = {"open", "record", "fail", "close"}
    callers = sorted(
        f"{module.name}:{node.lineno}"
        for module in modules().values()
        if not module.name.endswith(".ledger")
        for node in ast.walk(module.tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in steps
        and "ledger" in ast.unparse(node.func.value).lower()
    )
    assert callers == []
    runs = sorted(
        module.name
        for module in modules().values()
        for node in ast.walk(module.tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "run"
        if "ledger" in ast.unparse(node.func.value).lower()
    )
    assert [name.rsplit(".", 1)[-1] for name in runs] == ["audit", "changes"]


def sizes() -> Iterator[tuple[str, str, int]]:
    """``(kind, where, lines)`` of every module, class and function (methods included) in shared/."""
    for module in modules().values():
        where = module.path.relative_to(ROOT).as_posix()
        yield "module", where, len(module.path.read_text(encoding="utf-8").splitlines())
        yield from _nested(module.tree, where, "")


def _nested(node: ast.AST, where: str, prefix: str) -> Iterator[tuple[str, str, int]]:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            kind = "class" if isinstance(child, ast.ClassDef) else "function"
            name = f"{prefix}{child.name}"
            start = min([child.lineno, *(d.lineno for d in child.decorator_list)])
            yield kind, f"{where}:{name}", (child.end_lineno or child.lineno) - start + 1
            yield from _nested(child, where, f"{name}.")


def test_no_module_function_or_class_over_its_size() -> None:
    over = {where for kind, where, lines in sizes() if lines > LIMITS[kind]}
    detail = {where: lines for kind, where, lines in sizes() if where in over - OVERSIZE}
    assert sorted(over - OVERSIZE) == [], f"over the limits {LIMITS}: {detail}"
    assert sorted(OVERSIZE - over) == [], "cut down: take them off OVERSIZE"


def strongly_connected(edges: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components (iterative: no recursion limit to meet)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in edges:
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                found.append(component)
    return found


def test_the_cycle_finder_finds_cycles() -> None:
    """The checker itself: a cycle through three modules, a self-contained one, and a chain."""
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert sorted(sorted(c) for c in strongly_connected(edges) if len(c) > 1) == [["a", "b", "c"]]
    assert [c for c in strongly_connected({"a": {"b"}, "b": set()}) if len(c) > 1] == []
