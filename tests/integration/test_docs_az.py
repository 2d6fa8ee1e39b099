"""Every ``az`` command in the docs, and in what the ``postprovision`` hook prints, parses with the real
Azure CLI: each command exists, and each option it uses is one its ``--help`` lists.

The CLI is azure-cli 2.91.0 from PyPI (``make azcli``: ``.venv-azcli``), run offline with a
throw-away configuration directory. Commands come from the docs' ``bash`` blocks and inline
``az ...`` spans (:mod:`tests.doc_commands`), so a doc cannot drift from the CLI unseen.

``az monitor log-analytics query`` belongs to the ``log-analytics`` extension, which is published
on Azure's extension index, not on PyPI: it cannot be installed here. What can be checked is: the
core CLI does not know the command (so the docs' ``az extension add --name log-analytics`` step is
needed, and is itself checked like any command), and the options the docs use are the ones the
extension declares, recorded below from its source.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from tests.doc_commands import (
    REPO,
    az_command_and_options,
    az_commands,
    bash_blocks,
    inline_az_commands,
)

AZ = REPO / ".venv-azcli" / "bin" / "az"
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
HOOK = REPO / "infra" / "hooks" / "postprovision.sh"
#: Options of ``az monitor log-analytics query`` as the extension declares them
#: (Azure/azure-cli-extensions, src/log-analytics/azext_loganalytics/aaz/latest/monitor/log_analytics/_query.py
#: at 138f93c6121471a527ed477aac54219e99aa27ee), plus the CLI's global arguments every command takes.
LOG_ANALYTICS_QUERY_OPTIONS = {"-w", "--workspace", "--analytics-query", "-t", "--timespan", "--workspaces"}
GLOBAL_OPTIONS = {"-h", "--help", "-o", "--output", "--query", "--debug", "--verbose", "--only-show-errors", "--subscription"}
EXTENSION_COMMANDS = {("monitor", "log-analytics", "query"): LOG_ANALYTICS_QUERY_OPTIONS}


def _hook_output() -> str:
    env = {
        "PATH": os.environ["PATH"],
        "AZURE_FUNCTION_PRINCIPAL_ID": "0b6f6a3e-1c2d-4e5f-8a9b-0c1d2e3f4a5b",
        "AZURE_TENANT_ID": "72f988bf-86f1-41af-91ab-2d7cd011db47",
    }
    return subprocess.run(["sh", str(HOOK)], env=env, capture_output=True, text=True, check=True).stdout


def _documented() -> dict[tuple[str, ...], set[str]]:
    """``{command words: options used}`` over every doc and the hook's output."""
    found: dict[tuple[str, ...], set[str]] = {}
    sources: list[list[str]] = []
    for doc in DOCS:
        for block in bash_blocks(doc):
            sources += az_commands(block.lines)
        sources += inline_az_commands(doc)
    sources += az_commands([line for line in _hook_output().splitlines() if line.startswith("az ")])
    for words in sources:
        command, options = az_command_and_options(words)
        found.setdefault(command, set()).update(options)
    return found


def _options_in_help(text: str) -> set[str]:
    """The option names of an ``az ... --help`` page (its argument lines: ``--name -n [Required] : ...``)."""
    options: set[str] = set()
    for line in text.splitlines():
        match = re.match(r"^\s{4}((?:--?[A-Za-z][\w-]*\s*)+)(?:\[Required\]\s*)?:", line)
        if match:
            options.update(match.group(1).split())
    return options


@pytest.fixture(scope="module")
def az_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    if not AZ.exists():
        pytest.fail("the Azure CLI is missing: run `make azcli` (make test does)")
    config = tmp_path_factory.mktemp("azconfig")
    (config / "config").write_text("[extension]\nuse_dynamic_install = no\n[core]\ncollect_telemetry = no\n")
    return {**os.environ, "AZURE_CONFIG_DIR": str(config), "AZURE_CORE_COLLECT_TELEMETRY": "no"}


class HelpPage:
    """What ``az <command> --help`` printed, and its exit code."""

    def __init__(self, code: int, stdout: str) -> None:
        self.returncode = code
        self.stdout = stdout


@pytest.fixture(scope="module")
def help_pages(az_env: dict[str, str]) -> dict[tuple[str, ...], HelpPage]:
    """``az <command> --help`` of every documented core command (and of the extension's, which the
    core CLI must not know), in one CLI process (tests/az_help.py)."""
    commands = [c for c in _documented() if c not in EXTENSION_COMMANDS]
    commands += list(EXTENSION_COMMANDS)
    result = subprocess.run(
        [str(AZ.parent / "python"), str(REPO / "tests" / "az_help.py")],
        input=json.dumps([list(c) for c in commands]),
        env=az_env,
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    pages = json.loads(result.stdout)
    return {c: HelpPage(pages[" ".join(c)]["code"], pages[" ".join(c)]["stdout"]) for c in commands}


def test_every_documented_az_command_parses_with_the_real_cli(
    help_pages: dict[tuple[str, ...], HelpPage],
) -> None:
    documented = _documented()
    assert len(documented) >= 20, sorted(documented)
    problems = []
    for command, options in sorted(documented.items()):
        if command in EXTENSION_COMMANDS:
            continue
        page = help_pages[command]
        if page.returncode != 0:
            problems.append(f"az {' '.join(command)}: not a command (exit {page.returncode})")
            continue
        known = _options_in_help(page.stdout)
        if not {"--help", "-h"} <= known:
            problems.append(f"az {' '.join(command)}: a command group, not a command (a wrapped line?)")
            continue
        unknown = sorted(options - known)
        if unknown:
            problems.append(f"az {' '.join(command)}: unknown option(s) {unknown}")
    assert not problems, "\n".join(problems)


def test_the_options_check_catches_a_wrong_option(
    help_pages: dict[tuple[str, ...], HelpPage],
) -> None:
    known = _options_in_help(help_pages[("role", "assignment", "create")].stdout)
    assert {"--assignee-object-id", "--assignee-principal-type", "--role", "--scope"} <= known
    assert "--principal-type" not in known and "--assignee-type" not in known


def test_the_log_analytics_extension_step_is_needed_and_its_options_are_the_extensions(
    help_pages: dict[tuple[str, ...], HelpPage],
) -> None:
    documented = _documented()
    assert ("extension", "add") in documented, "the docs must say to add the log-analytics extension"
    without = help_pages[("monitor", "log-analytics", "query")]
    assert without.returncode == 2 and not without.stdout, "the core CLI must not know the extension's command"
    for command, allowed in EXTENSION_COMMANDS.items():
        used = documented.get(command, set())
        assert used, f"az {' '.join(command)} is no longer documented: drop it from EXTENSION_COMMANDS"
        assert used <= allowed | GLOBAL_OPTIONS, sorted(used - allowed - GLOBAL_OPTIONS)
    extension_lines = [
        line for doc in DOCS for block in bash_blocks(doc) for line in block.lines if "az extension add" in line
    ]
    assert any("--name log-analytics" in line for line in extension_lines), extension_lines


def test_the_hook_prints_the_tenant_admins_commands_filled_in() -> None:
    out = _hook_output()
    assert "can read NOTHING" in out
    lines = [line for line in out.splitlines() if line.startswith("az ")]
    assert [az_command_and_options(words)[0] for words in az_commands(lines)] == [
        ("role", "definition", "create"),
        ("role", "assignment", "create"),
        ("role", "assignment", "list"),
    ]
    scope = "/providers/Microsoft.Management/managementGroups/72f988bf-86f1-41af-91ab-2d7cd011db47"
    assert all(scope in line or "AssignableScopes" in line for line in lines)
    assert all("0b6f6a3e-1c2d-4e5f-8a9b-0c1d2e3f4a5b" in line for line in lines[1:])
    # The role it creates is infra/tenant/audit-reader-role.json (which tests/infra holds to the Bicep role).
    role = json.loads(shlex.split(lines[0])[5])  # az role definition create --role-definition JSON
    template = (REPO / "infra" / "tenant" / "audit-reader-role.json").read_text()
    assert role == json.loads(template.replace("MANAGEMENT_GROUP_ID", "72f988bf-86f1-41af-91ab-2d7cd011db47"))


def test_the_hook_refuses_to_print_without_the_principal(tmp_path: Path) -> None:
    result = subprocess.run(
        ["sh", str(HOOK)], env={"PATH": os.environ["PATH"]}, capture_output=True, text=True, check=False
    )
    assert result.returncode == 1 and "AZURE_FUNCTION_PRINCIPAL_ID" in result.stderr
    odd = subprocess.run(
        ["sh", str(HOOK)],
        env={"PATH": os.environ["PATH"], "AZURE_FUNCTION_PRINCIPAL_ID": "x'; rm -rf /", "AZURE_TENANT_ID": "t"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert odd.returncode == 1 and "unexpected characters" in odd.stderr
