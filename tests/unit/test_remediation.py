"""Remediation text: bash-quoted ``az`` commands that give back the exact names, and the ERROR rows'
guidance naming the role the templates really define."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest

from shared.evaluate import error_finding, evaluate
from shared.models import InventoryError, SiteRecord
from shared.roles import AUDIT_READER_ROLE

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


def _record(app: str, rg: str, slot: str, enabled: bool, mode: str, paths: str | None) -> SiteRecord:
    rid = f"/subscriptions/{SUB}/resourceGroups/{rg}/providers/Microsoft.Web/sites/{app}" + (
        f"/slots/{slot}" if slot else ""
    )
    return SiteRecord(
        rid, SUB, rg, app, slot, client_cert_enabled=enabled, client_cert_mode=mode, exclusion_paths=paths
    )


def _command_text(remediation: str) -> str:
    return remediation[remediation.index("az webapp ") :]


def _bash_args(command: str) -> list[str]:
    """What bash passes to ``az`` for ``command`` (a shell function stands in for the CLI)."""
    script = "az() { printf '%s\\0' \"$@\"; }\n" + command + "\n"
    done = subprocess.run(["bash", "-c", script], capture_output=True, check=True, timeout=30)
    return ["az", *done.stdout.decode("utf-8").split("\0")[:-1]]


@pytest.mark.parametrize(("app", "rg", "slot"), AWKWARD)
def test_every_command_gives_back_the_exact_names(app: str, rg: str, slot: str) -> None:
    for enabled, mode, paths in CASES:
        finding = evaluate(_record(app, rg, slot, enabled, mode, paths))
        command = _command_text(finding.remediation)
        args = shlex.split(command)
        assert args[:3] == ["az", "webapp", "update"]
        assert args[args.index("--name") + 1] == app
        assert args[args.index("--resource-group") + 1] == rg
        assert args[args.index("--subscription") + 1] == SUB
        assert ("--slot" in args) == bool(slot)
        if slot:
            assert args[args.index("--slot") + 1] == slot
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
