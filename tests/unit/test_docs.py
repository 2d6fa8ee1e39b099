"""The README stays a front door, and the docs it leads to stay reachable.

The README holds what it is, the two commands, what you see first, the rules, the picture and the
settings; everything else lives in docs/ and bench/README.md (the module map in docs/design.md).
These checks keep that true as the code moves: every relative link (and its #anchor) resolves, the
README stays short, and the module table names every module in ``shared/``. The commands, KQL and OData filters of the docs are checked where they
run (``tests/unit/test_report.py``, ``tests/integration/test_report_integration.py``,
``tests/infra/test_doc_kql.py``), the deploy walk-through in ``tests/infra/test_bicep.py``.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
DESIGN = REPO / "docs" / "design.md"
DOCS = [README, *sorted((REPO / "docs").glob("*.md")), REPO / "bench" / "README.md"]

#: Rows of the module table that name a package or a group of files rather than one module:
#: they stay true while those files move (``shared/report/``, ``shared/commands/``).
GENERIC_ROWS = {
    "report (package)": re.compile(r"report(_.*)?\.py|report/"),
    "CLI commands": re.compile(r"(.*_)?cli\.py|commands/"),
}
README_MAX_LINES = 200


def _prose(text: str) -> str:
    """The text outside fenced code blocks (a link in a code sample is not a link)."""
    return re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    anchors: set[str] = set()
    for heading in re.findall(r"^#{1,6} (.+)$", _prose(path.read_text(encoding="utf-8")), re.M):
        slug, n = _slug(heading), 1
        while slug in anchors:  # a repeated heading gets -1, -2, ...
            slug = f"{_slug(heading)}-{n}"
            n += 1
        anchors.add(slug)
    return anchors


def _links(path: Path) -> list[str]:
    return re.findall(r"\]\(([^)\s]+)\)", _prose(path.read_text(encoding="utf-8")))


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_and_anchor_resolves(doc: Path) -> None:
    broken = []
    for link in _links(doc):
        if re.match(r"[a-z]+:", link):
            continue  # https:, mailto:
        target, _, anchor = link.partition("#")
        file = (doc.parent / target).resolve() if target else doc
        if not file.exists():
            broken.append(f"{link} (no file {target})")
        elif anchor and file.suffix == ".md" and anchor not in _anchors(file):
            broken.append(f"{link} (no heading #{anchor} in {file.relative_to(REPO)})")
    assert not broken, f"{doc.relative_to(REPO)}: " + "; ".join(broken)


def test_slug_matches_github() -> None:
    assert _slug("Scale: design and limits") == "scale-design-and-limits"
    assert _slug("Option A: `azd up`") == "option-a-azd-up"
    assert _slug("Setting up (once)") == "setting-up-once"
    assert (
        _slug("Where the CPU and the time go, and what moved them")
        == "where-the-cpu-and-the-time-go-and-what-moved-them"
    )


def test_readme_is_a_front_door() -> None:
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= README_MAX_LINES, "README.md is for two minutes: move details into docs/"
    for needed in (
        "./demo",
        "make demo",
        "make test",
        "## How it decides",
        "## How it works",
        "## Settings",
        "docs/security-team.md",
        "docs/deploy.md",
        "docs/design.md",
        "bench/README.md",
    ):
        assert needed in text, f"README.md lost {needed!r}"


def _module_table() -> list[str]:
    """The first cells of the module table (``| module | role |``) in docs/design.md."""
    text = DESIGN.read_text(encoding="utf-8")
    table = re.search(r"^\| module \| role \|\n\|[-|]+\|\n((?:\|.*\n)+)", text, re.M)
    assert table, "docs/design.md has no module table"
    return [row.split("|")[1].strip() for row in table.group(1).splitlines()]


def test_module_table_names_every_module_and_only_existing_ones() -> None:
    cells = _module_table()
    named = {m for cell in cells for m in re.findall(r"`shared/([\w/]+\.py|\w+/)`", cell)}
    for module in named:
        assert (REPO / "shared" / module).is_file() or (REPO / "shared" / module / "__init__.py").is_file(), (
            f"docs/design.md's module table names shared/{module}, which does not exist"
        )
    generic = [pattern for row, pattern in GENERIC_ROWS.items() if row in cells]
    modules = [p.relative_to(REPO / "shared").as_posix() for p in (REPO / "shared").glob("*.py")]
    modules += [f"{p.name}/" for p in (REPO / "shared").iterdir() if (p / "__init__.py").is_file()]
    missing = [
        m
        for m in sorted(modules)
        if m not in ("__init__.py", "__main__.py") and m not in named and not any(g.fullmatch(m) for g in generic)
    ]
    assert not missing, f"docs/design.md's module table does not describe shared/{', shared/'.join(missing)}"


def test_readme_rules_table_has_every_rule_of_the_evaluation() -> None:
    """One table with every rule: each mode the evaluation knows, both holes in Required, the
    exclusion-path warning, exemptions and errors, each with its status."""
    from shared.core.models import CertMode, Status

    text = README.read_text(encoding="utf-8")
    section = re.search(r"^## How it decides\n(.*?)(?=^## )", text, re.M | re.S)
    assert section, "README.md has no 'How it decides' section"
    rows = [line for line in section.group(1).splitlines() if line.startswith("| ") and "---" not in line][1:]
    statuses = [re.search(r"\*\*(\w+)\*\*", row).group(1) for row in rows]  # type: ignore[union-attr]
    assert set(statuses) == {s.value for s in Status}
    table = "\n".join(rows)
    for mode in CertMode:
        assert mode.value in table, f"the rules table does not name the mode {mode.value}"
    for rule in ("exclusion path `/`", "HTTPS Only", "exclusion paths", "unknown `clientCertMode`", "exemption"):
        assert rule in table, f"the rules table lost the rule about {rule!r}"
