"""Hostile text from the estate, end to end: it is put where app owners and ARM can put it (a
subscription name, an owner tag, an exemption-request tag, exclusion paths, an ARM error message
that becomes an ERROR reason, an exemption's reason and approver), audited with the real engine
into Azurite, and read back through the real CLI: no control character reaches table output,
while CSV and JSON keep the exact values. The neutralising rules are in ``tests/unit/test_terminal.py``.
"""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from typing import Any

import pytest

from tests.emulators.faults import FaultRule, Status
from tests.reportbed import SUB_A, AuditBed
from tests.unit.test_terminal import assert_terminal_safe


# -- end to end: the real engine, Azurite and the CLI ------------------------------------------------
@pytest.fixture
def bed(azurite: Any, make_arm: Any, monkeypatch: pytest.MonkeyPatch) -> AuditBed:
    bed = AuditBed(azurite, make_arm, monkeypatch)
    monkeypatch.setenv("AUDIT_EXEMPTION_REQUEST_TAG", "ExemptionRequest")
    return bed


OWNER = "alice\x1b[31m\r\x9b2J"
SUB_NAME = "Prod\x1b]0;pwned\x07\u202e"
REQUEST = "vendor\x1b[8m hidden\u2066"
PATHS = "/health\x1b[5m;/status\r"
ARM_MESSAGE = "denied\x1b[2J\x1b[H\rALL PASS\x9b"
EXEMPT_REASON = "accepted\x1b[2J\rPASS"
EXEMPT_APPROVER = "bob\u202eevil"


def test_hostile_values_from_azure_never_reach_the_terminal(bed: AuditBed, capsys: pytest.CaptureFixture[str]) -> None:
    sub = bed.tenant.get_subscription(SUB_A)
    assert sub is not None
    sub.display_name = SUB_NAME
    bed.sites["portal"].update(exclusion_paths=PATHS)
    bed.arm.faults.add(
        FaultRule(
            Status(403, code="AuthorizationFailed", message=ARM_MESSAGE),
            path=rf"/subscriptions/{SUB_A}/resourceGroups/rg-func/providers/Microsoft\.Web/sites$",
        )
    )
    bed.run(tags={"shop": {"Owner": OWNER}, "jobs": {"ExemptionRequest": REQUEST}}, outcome="partial")
    shop = bed.site_id("shop")
    code, _, err = bed.cli(
        capsys,
        ["exempt", "add", "--scope", shop, "--reason", EXEMPT_REASON, "--approver", EXEMPT_APPROVER, "--expires", "7d"],
    )
    assert code == 0, err
    bed.sites["intranet"].update(exclusion_paths=PATHS)  # PASS -> WARN: a change for the diff, naming the paths
    bed.run(outcome="partial")

    # the stored rows hold the exact values (the table is data)
    rows = bed.rows()
    assert rows[shop.lower()]["Owner"] == OWNER
    assert rows[bed.site_id("jobs").lower()]["ExemptionRequest"] == REQUEST
    error_scope = f"/subscriptions/{SUB_A}/resourcegroups/rg-func"
    assert ARM_MESSAGE in rows[error_scope]["Reason"]

    # report --format table: every status listed, group by owner, expiring exemptions shown
    for args in (
        ["report", "--status", "PASS,WARN,FAIL,EXEMPT,ERROR", "--expiring-days", "30"],
        ["report", "--group-by", "owner"],
        ["report", "--group-by", "subscription"],
        ["report", "--diff", bed.summaries[0].run_id, bed.summaries[1].run_id],
    ):
        _, out, _ = bed.cli(capsys, args)
        assert_terminal_safe(out)
    _, out, _ = bed.cli(capsys, ["report", "--status", "PASS,WARN,FAIL,EXEMPT,ERROR", "--expiring-days", "30"])
    assert "denied\ufffd[2J\ufffd[H ALL PASS\ufffd" in out, "the ERROR reason is shown, neutralised"
    assert "/health\ufffd[5m" in out and "accepted\ufffd[2J PASS" in out and "bob\ufffdevil" in out
    assert "Prod\ufffd]0;pwned\ufffd\ufffd" in out

    # exempt list: table neutralised, JSON and CSV exact
    _, out, _ = bed.cli(capsys, ["exempt", "list"])
    assert_terminal_safe(out)
    assert "accepted\ufffd[2J PASS (approved by bob\ufffdevil" in out
    views = json.loads(bed.cli(capsys, ["exempt", "list", "--format", "json"])[1])
    assert (views[0]["reason"], views[0]["approver"]) == (EXEMPT_REASON, EXEMPT_APPROVER)
    listed = next(csv.DictReader(io.StringIO(bed.cli(capsys, ["exempt", "list", "--format", "csv"])[1])))
    assert (listed["reason"], listed["approver"]) == (EXEMPT_REASON, EXEMPT_APPROVER)

    # report CSV and JSON keep the exact values
    doc = json.loads(bed.cli(capsys, ["report", "--format", "json", "--status", "PASS,WARN,FAIL,EXEMPT,ERROR"])[1])
    by_id = {r["ResourceId"].lower(): r for r in doc["results"]}
    assert by_id[error_scope]["Reason"].endswith(ARM_MESSAGE)
    assert by_id[bed.site_id("intranet").lower()]["ExclusionPaths"].startswith("/health\x1b[5m")
    table = list(csv.DictReader(io.StringIO(bed.cli(capsys, ["report", "--format", "csv"])[1])))
    assert any(r["SubscriptionName"] == SUB_NAME for r in table)

    # subscriptions list: the table neutralised and sized to its data, CSV and JSON exact
    _, out, _ = bed.cli(capsys, ["subscriptions", "list"])
    assert_terminal_safe(out)
    assert "Prod\ufffd]0;pwned\ufffd\ufffd" in out
    listed = json.loads(bed.cli(capsys, ["subscriptions", "list", "--format", "json"])[1])
    assert SUB_NAME in [s["SubscriptionName"] for s in listed]
    assert SUB_NAME in [
        r["SubscriptionName"]
        for r in csv.DictReader(io.StringIO(bed.cli(capsys, ["subscriptions", "list", "--format", "csv"])[1]))
    ]

    # the fix script: estate text only in comments, one line each, without control characters
    script = bed.cli(capsys, ["report", "--format", "script"])[1]
    assert_terminal_safe(script)
    assert "/health\ufffd[5m" in script.split("# Reason: ", 2)[-1]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    """The installed command in its own process: its own logging set-up, as people run it."""
    return subprocess.run(
        [sys.executable, "-m", "shared", *args], capture_output=True, text=True, timeout=300, check=False
    )


def test_run_output_and_its_log_lines_never_steer_the_terminal(bed: AuditBed) -> None:
    """``run`` prints ARM's error text and, with ``-v``, subscription names: through the one helper."""
    sub = bed.tenant.get_subscription(SUB_A)
    assert sub is not None
    sub.display_name = SUB_NAME
    bed.tenant.add_subscription(display_name="Old\x1b[2J\u202eone", state="Disabled")  # -v logs the skip, by name
    bed.arm.faults.add(
        FaultRule(
            Status(403, code="AuthorizationFailed", message=ARM_MESSAGE),
            path=rf"/subscriptions/{SUB_A}/resourceGroups/rg-func/providers/Microsoft\.Web/sites$",
        )
    )
    done = _cli("-v", "run")
    assert done.returncode == 2, done.stderr[-2000:]  # partial: one group unreadable
    assert_terminal_safe(done.stdout + done.stderr)
    assert "denied\ufffd[2J\ufffd[H ALL PASS\ufffd" in done.stderr, "the ARM message is logged, neutralised"
    assert "Old\ufffd[2J\ufffdone" in done.stderr, "the subscription's name is logged, neutralised"

    bed.arm.faults.add(FaultRule(Status(500, code="Boom", message=ARM_MESSAGE), path=r"/subscriptions$"))
    failed = _cli("run")
    assert failed.returncode == 1 and "Audit failed: " in failed.stderr
    assert_terminal_safe(failed.stdout + failed.stderr)
    assert "\ufffd[2J" in failed.stderr
