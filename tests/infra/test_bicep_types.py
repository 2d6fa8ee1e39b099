"""Every resource in infra/ type-checks against Microsoft's Bicep type definitions.

tests/infra/bicep_types.py does what the Bicep compiler does with the same ``types.json`` files
(copied into tests/infra/bicep-types, origin in SOURCES.md there): an unknown or ReadOnly
property, a literal of the wrong type, or a string outside an enum fails. The fixtures in
tests/infra/fixtures/type-check show each of those is caught, so a clean result on infra/ means
something.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.infra.bicep_types import Checker, Problem, TypeIndex, load_typed_trees
from tests.infra.conftest import BICEP_FILES, BICEP_TO_JSON, INFRA_PYTHON, REPO, rel, require_tool

TYPES = Path(__file__).resolve().parent / "bicep-types"
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "type-check"
DECLARED = re.compile(r"^\s*resource\s+\w+\s+'([^'@]+)@([^']+)'", re.M)


@pytest.fixture(scope="module")
def index() -> TypeIndex:
    return TypeIndex(TYPES)


def typed_trees(paths: list[Path]) -> dict[str, Any]:
    require_tool(INFRA_PYTHON, "the infra venv (.venv-infra with pycep-parser)")
    return load_typed_trees(INFRA_PYTHON, BICEP_TO_JSON, [rel(p) for p in paths], REPO)


@pytest.fixture(scope="module")
def infra_problems(index: TypeIndex) -> tuple[Checker, list[Problem]]:
    checker = Checker(typed_trees(BICEP_FILES), index)
    return checker, checker.problems()


@pytest.fixture(scope="module")
def fixture_problems(index: TypeIndex) -> dict[str, list[str]]:
    trees = typed_trees(sorted(FIXTURES.glob("*.bicep")))
    by_file: dict[str, list[str]] = {Path(f).name: [] for f in trees}
    for problem in Checker(trees, index).problems():
        by_file[Path(problem.file).name].append(f"{problem.symbol}{problem.path}: {problem.message}")
    return by_file


def test_every_declared_type_has_a_copied_definition(index: TypeIndex) -> None:
    declared = {f"{t}@{v}" for p in BICEP_FILES for t, v in DECLARED.findall(p.read_text())}
    assert declared, "no resource declarations found in infra/"
    missing = sorted(d for d in declared if d not in index)
    assert not missing, (
        f"no type definition copied for {missing}: run tools/bicep_types_subset.py (see tests/infra/bicep-types/SOURCES.md)"
    )


def test_infra_templates_type_check(infra_problems: tuple[Checker, list[Problem]]) -> None:
    checker, problems = infra_problems
    checked = list(checker.resources_checked())
    assert len(checked) >= 30, f"only {len(checked)} resources were walked: {checked}"
    assert not problems, "type errors in infra/:\n" + "\n".join(str(p) for p in problems)


def test_the_walker_reaches_every_deployed_resource(infra_problems: tuple[Checker, list[Problem]]) -> None:
    checker, _ = infra_problems
    walked = {(Path(f).name, s) for f, s, _ in checker.resources_checked()}
    for path in BICEP_FILES:
        for symbol in re.findall(r"^\s*resource\s+(\w+)\s+'", path.read_text(), re.M):
            assert (path.name, symbol) in walked, f"{rel(path)}: resource {symbol} was not type-checked"


def test_catches_a_misspelt_property(fixture_problems: dict[str, list[str]]) -> None:
    (problem,) = fixture_problems["misspelt-property.bicep"]
    assert problem.startswith("site.properties.httpsOnyl:")
    assert "no property 'httpsOnyl'" in problem and "did you mean 'httpsOnly'" in problem


def test_catches_a_read_only_property(fixture_problems: dict[str, list[str]]) -> None:
    (problem,) = fixture_problems["read-only-property.bicep"]
    assert problem.startswith("site.properties.defaultHostName:") and "ReadOnly" in problem


def test_catches_a_literal_outside_the_allowed_values(fixture_problems: dict[str, list[str]]) -> None:
    (problem,) = fixture_problems["bad-enum-literal.bicep"]
    assert problem.startswith("site.properties.clientCertMode:")
    assert "'Mandatory' is not one of the allowed values" in problem and "'Required'" in problem


def test_catches_literals_of_the_wrong_type(fixture_problems: dict[str, list[str]]) -> None:
    problems = sorted(fixture_problems["wrong-literal-type.bicep"])
    assert problems == [
        'rule.properties.severity: string literal "high" where int is expected',
        'site.properties.httpsOnly: string literal "true" where bool is expected',
    ]


def test_follows_parameters_and_variables(fixture_problems: dict[str, list[str]]) -> None:
    problems = sorted(fixture_problems["bad-parameter.bicep"])
    assert len(problems) == 2, problems
    assert problems[0].startswith("site.properties.clientCertMode:") and "'Sometimes'" in problems[0]
    assert problems[1] == "site.properties.httpsOnly: a int parameter where bool is expected"


def test_a_valid_template_passes(fixture_problems: dict[str, list[str]]) -> None:
    assert fixture_problems["valid.bicep"] == []


def test_an_unknown_api_version_is_an_error(index: TypeIndex) -> None:
    tree = {
        "resources": {
            "site": {"type": "Microsoft.Web/sites", "api_version": "2099-01-01", "existing": False, "config": {}}
        }
    }
    (problem,) = Checker({"x.bicep": tree}, index).problems()
    assert "no type definition for Microsoft.Web/sites@2099-01-01" in problem.message


def test_copied_types_are_only_what_infra_uses(index: TypeIndex) -> None:
    # The copies are a subset (tools/bicep_types_subset.py); a stale type means a stale copy.
    declared = {f"{t}@{v}".lower() for p in BICEP_FILES for t, v in DECLARED.findall(p.read_text())}
    fixture_types = {f"{t}@{v}".lower() for p in FIXTURES.glob("*.bicep") for t, v in DECLARED.findall(p.read_text())}
    extra = sorted(n for n in index.names() if n.lower() not in declared | fixture_types)
    assert not extra, f"copied type definitions nothing uses (re-run tools/bicep_types_subset.py): {extra}"
    assert (TYPES / "SOURCES.md").is_file()
