"""Remediation commands end to end: names ARM allows, through the engine and Azurite, over two runs,
still paste back the exact names. The quoting itself is in ``tests/unit/test_remediation.py``."""

from __future__ import annotations

import shlex
from typing import Any

import pytest

from shared.report.fixscript import az_command
from tests.reportbed import SUB_A, AuditBed
from tests.unit.test_remediation import _command_text


# -- end to end: names ARM allows, through the engine and Azurite, over two runs ---------------------------
@pytest.fixture
def bed(azurite: Any, make_arm: Any, monkeypatch: pytest.MonkeyPatch) -> AuditBed:
    bed = AuditBed(azurite, make_arm, monkeypatch)
    sub = bed.tenant.get_subscription(SUB_A)
    assert sub is not None
    bed.sites["legacy"] = sub.add_site("rg(legacy)", "legacy", client_cert_enabled=False)
    bed.sites["café"] = sub.add_site("rg-café-ü", "café-app", client_cert_enabled=True, client_cert_mode="Optional")
    bed.sites["café/blue"] = bed.sites["café"].add_slot("blue", client_cert_enabled=False)
    bed.sites["jp"] = sub.add_site("リソース-グループ", "jp-app", client_cert_enabled=True, exclusion_paths="/a;/b")
    return bed


def test_stored_commands_paste_over_several_runs(bed: AuditBed, capsys: pytest.CaptureFixture[str]) -> None:
    for expected in (8, 9):  # shop, api/staging, portal, jobs and the four above; then intranet too
        bed.run()
        rows = [r for r in bed.rows().values() if r["Status"] in ("FAIL", "WARN")]
        assert len(rows) == expected
        for row in rows:
            args = shlex.split(_command_text(row["Remediation"]))
            options = dict(a.split("=", 1) for a in args if a.startswith("--") and "=" in a)
            assert options["--name"] == row["AppName"]
            assert options["--resource-group"] == row["ResourceGroup"]
            assert options["--subscription"] == row["SubscriptionId"]
            assert options.get("--slot", "") == row["Slot"]
            assert az_command(row) == args
        bed.sites["intranet"].update(client_cert_mode="Optional")
    groups = {r["ResourceGroup"] for r in bed.rows().values()}
    assert {"rg(legacy)", "rg-café-ü", "リソース-グループ"} <= groups
    code, out, _ = bed.cli(capsys, ["report"])
    fixes = [line.split("Fix: ", 1)[1] for line in out.splitlines() if "Fix: " in line]
    assert len(fixes) == 9 and code == 1
    groups = sorted(shlex.split(_command_text(fix))[1] for fix in fixes)
    assert groups == ["functionapp"] + ["webapp"] * 8  # jobs is a function app
    assert "'--resource-group=rg(legacy)'" in out
