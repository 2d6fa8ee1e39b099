"""What the deployment package holds: ``.funcignore`` is an allow-list, and report files never land in it.

``azd deploy`` packages the repository root minus ``.funcignore``, read with standard gitignore syntax
(learn.microsoft.com, "Configure service packaging file exclusions"). The package is listed here with
git's own matcher, the reference implementation of that syntax: a scratch copy of the checkout, with
what a working checkout also holds (a virtualenv, caches, report files an analyst wrote, local
settings), and ``git ls-files --others --exclude-from=.funcignore`` (no other ignore file is read).
"""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest

from shared.commands.report import DEFAULT_HTML

ROOT = Path(__file__).resolve().parents[2]
#: What a developer's or analyst's checkout holds besides the tracked files.
PLANTED = (
    ".venv/lib/python3.11/site-packages/azure/__init__.py",
    ".venv-azcli/bin/az",
    "shared/__pycache__/audit.cpython-311.pyc",
    "shared/report/__pycache__/html.cpython-311.pyc",
    "clientcert_audit.egg-info/PKG-INFO",
    "shared/clientcert_audit.egg-info/PKG-INFO",
    DEFAULT_HTML,
    "clientcert-audit-report.html",  # written by an older version, or with -o
    "findings.csv",
    "fix.sh",
    "findings.ocsf.jsonl",
    "local.settings.json",
    ".demo/azurite/__azurite_db_table__.json",
    ".azurite/x",
    "node_modules/x/index.js",
    ".pytest_cache/v/cache/lastfailed",
    ".mypy_cache/3.11/x.json",
    ".ruff_cache/x",
    "bench/results/x.json",
    ".wheelhouse/azure_core-1.0-py3-none-any.whl",
)


def _tracked() -> list[str]:
    done = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=False, timeout=60)
    if done.returncode != 0:
        pytest.skip(f"not a git checkout: {done.stderr.strip()}")
    return [line for line in done.stdout.splitlines() if (ROOT / line).is_file()]


def package_contents(tmp_path: Path, planted: Sequence[str] = PLANTED) -> set[str]:
    """The files ``azd deploy`` would package from a checkout with ``planted`` files in it."""
    scratch = tmp_path / "checkout"
    for name in [*_tracked(), *planted]:
        target = scratch / name
        target.parent.mkdir(parents=True, exist_ok=True)
        source = ROOT / name
        if source.is_file() and name not in planted:
            shutil.copyfile(source, target)
        else:
            target.write_text("planted\n", encoding="utf-8")
    env = {
        "GIT_CONFIG_GLOBAL": "/dev/null",
        "GIT_CONFIG_SYSTEM": "/dev/null",
        "HOME": str(tmp_path),
        "PATH": "/usr/bin:/bin",
    }
    subprocess.run(["git", "init", "-q"], cwd=scratch, check=True, env=env, timeout=60)
    listed = subprocess.run(
        ["git", "ls-files", "--others", "--exclude-from=.funcignore"],
        cwd=scratch,
        capture_output=True,
        text=True,
        check=True,
        env=env,
        timeout=60,
    )
    return set(listed.stdout.splitlines())


def test_the_package_holds_what_the_function_needs_and_nothing_else(tmp_path: Path) -> None:
    package = package_contents(tmp_path)
    modules = {name for name in _tracked() if name.startswith("shared/") and name.endswith(".py")}
    assert package == {"function_app.py", "host.json", "requirements.txt", *modules}
    assert not any(name in package for name in PLANTED), "a report, cache or local file would be deployed"


def test_nothing_make_clean_removes_is_ever_packaged(tmp_path: Path) -> None:
    """Everything ``make clean`` removes is local state (virtualenvs, caches, Azurite's data, the demo):
    planted inside, none of it is in the package."""
    cleaned = re.search(r"^clean:\n\trm -rf (.*)$", (ROOT / "Makefile").read_text(encoding="utf-8"), re.M)
    assert cleaned
    paths = [
        p.replace("$(VENV)", ".venv").replace("$(INFRA_VENV)", ".venv-infra").replace("$(AZCLI_VENV)", ".venv-azcli")
        for p in cleaned.group(1).split()
    ]
    assert all("$(" not in p for p in paths), paths
    package = package_contents(tmp_path, [f"{p}/planted.py" for p in paths])
    assert not [name for name in package if any(name.startswith(f"{p}/") for p in paths)]


def test_every_module_the_function_imports_is_in_the_package(tmp_path: Path) -> None:
    """The allow-list cannot leave out what the app imports: function_app.py's own imports (and the
    engine's, transitively) resolve to files the package holds or to requirements.txt's packages."""
    package = package_contents(tmp_path)
    seen: set[str] = set()
    todo = ["function_app.py"]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        assert name in package, f"{name} is imported by the app but not deployed"
        tree = ast.parse((ROOT / name).read_text(encoding="utf-8"))
        base = Path(name).parent
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level:  # relative: inside shared/
                folder = base
                for _ in range(node.level - 1):
                    folder = folder.parent
                parts = [*folder.parts, *(node.module or "").split(".")]
                candidates = [Path(*parts).with_suffix(".py"), Path(*parts, "__init__.py")]
                candidates += [Path(*parts, f"{alias.name}.py") for alias in node.names]
                todo += [c.as_posix() for c in candidates if (ROOT / c).is_file()]
            elif isinstance(node, ast.ImportFrom | ast.Import):
                modules = [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
                for module in modules:
                    if module.split(".")[0] == "shared":
                        path = Path(*module.split("."))
                        todo += [
                            c.as_posix()
                            for c in (path.with_suffix(".py"), path / "__init__.py")
                            if (ROOT / c).is_file()
                        ]
    assert "shared/run/audit.py" in seen and "shared/report/__init__.py" not in seen  # the timer needs no report


def test_report_files_default_outside_the_package_and_git(tmp_path: Path) -> None:
    assert Path(DEFAULT_HTML).parts[0] == "clientcert-audit-reports"
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", "--no-index", DEFAULT_HTML], cwd=ROOT, check=False, timeout=60
    )
    assert ignored.returncode == 0, ".gitignore must ignore the default report folder"
