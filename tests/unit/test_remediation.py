"""Remediation text: bash-quoted ``az`` commands that give back the exact names, and the ERROR rows'
guidance naming the role the templates really define."""

from __future__ import annotations

import itertools
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from shared.core.evaluate import error_finding, evaluate
from shared.core.models import InventoryError, SiteRecord
from shared.core.roles import AUDIT_READER_ROLE
from shared.report import ReportContext, write_script

ROOT = Path(__file__).resolve().parents[2]
SUB = "11111111-2222-3333-4444-555555555555"

#: (app, resource group, slot): what ARM allows and more (spaces and quotes cannot occur in Azure
#: names, but nothing may break if they ever reach the text).
AWKWARD: list[tuple[str, str, str]] = [
    ("shop", "rg(legacy)", ""),
    ("shop", "Rg-MixedCase-(eu)", "stäging"),
    ("app with spaces", "rg with 'single' and \"double\" quotes", "slot $(touch /tmp/x) `id`"),
    ("ünïcödé-app", "リソース-グループ", "青"),
    ("semi;colon&amp|pipe", "rg-*-?-[x]", "a\\b"),
    ("-dash-first", "--resource-group", "!history"),
]
CASES = [  # (clientCertEnabled, clientCertMode, exclusion paths): FAIL, FAIL, WARN
    (False, "Required", None),
    (True, "OptionalInteractiveUser", None),
    (True, "Required", "/health"),
]


def _record(app: str, rg: str, slot: str, enabled: bool, mode: str, paths: str | None, kind: str) -> SiteRecord:
    rid = f"/subscriptions/{SUB}/resourceGroups/{rg}/providers/Microsoft.Web/sites/{app}" + (
        f"/slots/{slot}" if slot else ""
    )
    return SiteRecord(
        rid, SUB, rg, app, slot, kind=kind, client_cert_enabled=enabled, client_cert_mode=mode, exclusion_paths=paths
    )


def _command_text(remediation: str) -> str:
    """The command of a remediation: from its first ``az `` on (the text before it is ours only)."""
    return remediation[remediation.index(" az ") + 1 :]


def _bash_args(command: str) -> list[str]:
    """What bash passes to ``az`` for ``command`` (a shell function stands in for the CLI)."""
    script = "az() { printf '%s\\0' \"$@\"; }\n" + command + "\n"
    done = subprocess.run(["bash", "-c", script], capture_output=True, check=True, timeout=30)
    return ["az", *done.stdout.decode("utf-8").split("\0")[:-1]]


def _value(args: list[str], option: str) -> str | None:
    found = [a.split("=", 1)[1] for a in args if a.startswith(f"{option}=")]
    assert len(found) <= 1 and option not in args, f"{option} given twice, or as a separate argument: {args}"
    return found[0] if found else None


KINDS = [("app", "webapp"), ("functionapp,workflowapp", "functionapp"), ("", "resource")]


@pytest.mark.parametrize(("app", "rg", "slot"), AWKWARD)
@pytest.mark.parametrize(("kind", "group"), KINDS)
def test_every_command_gives_back_the_exact_names(app: str, rg: str, slot: str, kind: str, group: str) -> None:
    for enabled, mode, paths in CASES:
        site = _record(app, rg, slot, enabled, mode, paths, kind)
        command = _command_text(evaluate(site).remediation)
        args = shlex.split(command)
        assert args[:2] == ["az", group]
        if group == "resource":  # one argument names the resource: its id, exactly
            assert args[2] == "patch" and _value(args, "--ids") == site.resource_id
            assert _value(args, "--name") is _value(args, "--resource-group") is _value(args, "--slot") is None
        else:  # every option as --option=value: a value starting with '-' is never read as an option
            assert args[2] == "update" and _value(args, "--ids") is None
            assert _value(args, "--name") == app
            assert _value(args, "--resource-group") == rg
            assert _value(args, "--subscription") == SUB
            assert _value(args, "--slot") == (slot or None)
        assert _bash_args(command) == args  # bash reads it exactly as shlex does


def test_role_named_on_error_rows_is_the_one_the_template_defines() -> None:
    bicep = (ROOT / "infra" / "tenant" / "audit-reader-role.bicep").read_text(encoding="utf-8")
    found = re.search(r"^param roleName string = '((?:[^'\\]|\\.)*)'", bicep, re.M)
    assert found, "roleName parameter default not found in audit-reader-role.bicep"
    assert found.group(1) == AUDIT_READER_ROLE
    text = error_finding(InventoryError(f"/subscriptions/{SUB}", SUB, "HTTP 403")).remediation
    assert f"'{AUDIT_READER_ROLE}' role" in text
    assert "ClientCertAudit Reader" not in text
    for source in (ROOT / "shared").glob("*.py"):  # no other spelling of the role anywhere in the code
        assert "ClientCertAudit Reader" not in source.read_text(encoding="utf-8"), source


def test_the_fix_script_hands_az_exactly_the_recorded_arguments(tmp_path: Path) -> None:
    """The script, run by bash with a stand-in ``az`` that records its arguments: every command reaches
    the CLI as the arguments the row's remediation names, whatever the names hold (shell syntax,
    quotes, a leading dash), and nothing from a name is executed."""
    awkward = [*AWKWARD, ("pwn", "rg-$(touch pwned)", "s`touch pwned`"), ("x", "-rg;touch pwned", "")]
    rows, expected = [], []
    for (app, rg, slot), (kind, _) in itertools.product(awkward, KINDS):
        site = _record(app, rg, slot, False, "Required", "/;/a b", kind)
        remediation = evaluate(site).remediation
        rows.append(
            {
                "Status": "FAIL",
                "AppName": app,
                "ResourceGroup": rg,
                "Slot": slot,
                "Kind": kind,
                "SubscriptionId": SUB,
                "ResourceId": site.resource_id,
                "Remediation": remediation,
                "Owner": "eve\n; touch pwned #",
                "Reason": "r\n`touch pwned`",
            }
        )
        expected.append(shlex.split(_command_text(remediation)))
    script = tmp_path / "fix.sh"
    with script.open("w", encoding="utf-8", newline="") as out:
        write_script(rows, out, ReportContext(runs=({"RowKey": "r1", "Outcome": "complete"},)))
    fake = tmp_path / "bin"
    fake.mkdir()
    log = tmp_path / "calls"
    (fake / "az").write_text(
        f"#!/usr/bin/env bash\nprintf '%s\\0' \"$@\" >> {shlex.quote(str(log))}\necho >> {shlex.quote(str(log))}\n"
    )
    (fake / "az").chmod(0o755)
    env = {"PATH": f"{fake}:/usr/bin:/bin", "HOME": str(tmp_path)}
    done = subprocess.run(["bash", str(script)], cwd=tmp_path, env=env, capture_output=True, check=False, timeout=60)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    calls = [["az", *entry.split("\0")] for entry in log.read_text(encoding="utf-8").split("\0\n") if entry]
    assert calls == expected
    assert not (tmp_path / "pwned").exists()
    assert f"All {len(rows)} fix commands ran." in done.stdout.decode()
