"""Runtime pins: exact, complete, installed, and the ones the SDK contract test last passed with.

``shared/azure/fastpaths.py`` relies on azure-core and azure-data-tables internals that
``tests/contract`` proves per version; these tests make a pin impossible to change without that
proof (the procedure is in ``tests/contract/pins.py``).
"""

from __future__ import annotations

import ast
import sys
from importlib import metadata

from packaging.markers import default_environment
from packaging.requirements import Requirement

from tests.contract.pins import (
    REQUIREMENTS,
    ROOT,
    TESTED_PINS,
    canonical,
    installed_mismatches,
    read_pins,
    requirement_hashes,
)

PROCEDURE = "a pin changed without the contract test passing on it: see tests/contract/pins.py"


def test_every_runtime_dependency_is_an_exact_pin() -> None:
    pins = read_pins(REQUIREMENTS)  # raises on anything but name==version
    assert {"azure-core", "azure-data-tables", "azure-mgmt-web"} <= set(pins)


def test_the_pins_are_the_ones_the_contract_test_last_passed_with() -> None:
    pins, tested = read_pins(REQUIREMENTS), read_pins(TESTED_PINS)
    changed = {name: (tested.get(name), pins.get(name)) for name in set(pins) | set(tested)}
    changed = {name: versions for name, versions in changed.items() if versions[0] != versions[1]}
    assert not changed, f"{PROCEDURE}; (tested, pinned): {changed}"


def test_the_tests_run_on_the_pinned_versions() -> None:
    wrong = installed_mismatches(read_pins(REQUIREMENTS))
    assert not wrong, f"the venv does not hold requirements.txt's pins (run make install): {wrong}"


def _third_party_imports() -> set[str]:
    """Top-level modules imported by the deployed code that are neither stdlib nor ours."""
    files = [*sorted((ROOT / "shared").glob("*.py")), ROOT / "function_app.py"]
    found: set[str] = set()
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return {name for name in found if name not in sys.stdlib_module_names and name not in ("shared", "__future__")}


def test_every_package_the_app_imports_is_pinned() -> None:
    pins = read_pins(REQUIREMENTS)
    owners = metadata.packages_distributions()
    for module in _third_party_imports():
        dists = {canonical(d) for d in owners.get(module, [])}
        assert dists, f"{module}: no installed distribution provides it"
        if module == "azure":  # a namespace shared by every azure-* distribution
            continue
        assert dists & set(pins), f"{module} ({dists}) is imported by the app but not pinned in requirements.txt"


def test_every_dependency_of_a_pinned_package_is_pinned_too() -> None:
    """The deploy resolves nothing itself: what a pinned package needs at run time (on this
    interpreter, without optional extras) is pinned as well."""
    pins = read_pins(REQUIREMENTS)
    env = default_environment()
    missing: dict[str, str] = {}
    for name in pins:
        for text in metadata.requires(name) or []:
            requirement = Requirement(text)
            if requirement.marker is not None and not requirement.marker.evaluate({**env, "extra": ""}):
                continue
            if canonical(requirement.name) not in pins:
                missing[requirement.name] = name
    assert not missing, f"needed at run time but not pinned (needed by): {missing}"


def test_every_pin_carries_the_hashes_of_what_a_deploy_installs() -> None:
    """requirements.txt is hash-pinned (the remote build's pip checks them; docs/deploy.md, Supply chain)."""
    hashes = requirement_hashes(REQUIREMENTS)
    pins = read_pins(REQUIREMENTS)
    assert set(hashes) == set(pins)
    missing = sorted(name for name, found in hashes.items() if not found)
    assert not missing, f"pins without --hash (run tools/pin_hashes.py): {missing}"
    everything = [h for found in hashes.values() for h in found]
    assert len(everything) == len(set(everything)), "a hash listed twice"


def test_the_package_metadata_pins_the_same_versions() -> None:
    """`pip install .` (the analyst's install) gets exactly the deployed versions."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert "dependencies" not in project.get("dynamic", [])
    declared = {}
    for text in project["dependencies"]:
        requirement = Requirement(text)
        (spec,) = requirement.specifier
        assert spec.operator == "==", f"pyproject.toml: {text} is not an exact pin"
        declared[canonical(requirement.name)] = spec.version
    assert declared == read_pins(REQUIREMENTS)


def test_dev_requirements_do_not_pull_the_hashed_file_in() -> None:
    """pip refuses a hash-checking install with unhashed requirements mixed in: the dev tools are a
    second install (make install), never `-r requirements.txt`."""
    text = (ROOT / "requirements-dev.txt").read_text(encoding="utf-8")
    assert not [line for line in text.splitlines() if line.strip().startswith(("-r", "--requirement"))]
