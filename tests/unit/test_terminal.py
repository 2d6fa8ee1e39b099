"""Text from the estate never steers the terminal: no control character reaches ``report`` table or
``exempt list`` output, while CSV and JSON keep the exact values.

The end-to-end case puts hostile text where app owners and ARM can put it (a subscription name, an
owner tag, an exemption-request tag, exclusion paths, an ARM error message that becomes an ERROR
reason, an exemption's reason and approver), audits with the real engine into Azurite, and reads
it back through the real CLI.
"""

from __future__ import annotations

import csv
import io
import json
import re
import unicodedata
from typing import Any

import pytest

from shared import report
from shared.terminal import REPLACEMENT, terminal_row, terminal_text
from tests.emulators.faults import FaultRule, Status
from tests.reportbed import SUB_A, AuditBed

#: Everything that must never be printed on a terminal (the renderer's own "\n" is checked apart).
FORBIDDEN = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029]")


def assert_terminal_safe(out: str) -> None:
    found = sorted({f"U+{ord(m.group()):04X}" for m in FORBIDDEN.finditer(out)})
    assert not found, f"control characters reached the terminal: {found}"


# -- unit -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("plain name-1", "plain name-1"),
        ("red\x1b[31mtext\x1b[0m", "red\ufffd[31mtext\ufffd[0m"),  # ESC / CSI
        ("title\x1b]0;owned\x07", "title\ufffd]0;owned\ufffd"),  # OSC with BEL
        ("hyper\x1b]8;;https://evil\x1b\\x", "hyper\ufffd]8;;https://evil\ufffd\\x"),  # OSC 8 with ST
        ("FAIL\rPASS", "FAIL PASS"),  # carriage return cannot overwrite the line
        ("two\nlines", "two lines"),  # nor can a newline forge one
        ("tab\there", "tab here"),
        ("c1\x9b2J csi", "c1\ufffd2J csi"),  # one-byte CSI
        ("osc\x9d0;x\x9c", "osc\ufffd0;x\ufffd"),
        ("del\x7f", "del\ufffd"),
        ("nul\x00", "nul\ufffd"),
        ("nel\x85x", "nel x"),
        ("line\u2028para\u2029end", "line para end"),
        ("admin\u202egnp.exe", "admin\ufffdgnp.exe"),  # right-to-left override
        ("iso\u2066late\u2069", "iso\ufffdlate\ufffd"),
        ("mark\u200e\u200f\u061c", "mark\ufffd\ufffd\ufffd"),
        ("lone\ud800surrogate", "lone\ufffdsurrogate"),  # would make print() raise
        ("Zürich café 東京 \u200d", "Zürich café 東京 \u200d"),  # printable text and joiners are kept
    ],
)
def test_terminal_text(value: str, shown: str) -> None:
    assert terminal_text(value) == shown


def test_every_c0_c1_and_bidi_control_is_neutralised() -> None:
    controls = [chr(c) for c in (*range(0x20), 0x7F, *range(0x80, 0xA0))]
    controls += [chr(c) for c in (0x61C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A))]
    for ch in controls:
        shown = terminal_text(f"a{ch}b")
        assert shown in ("a b", f"a{REPLACEMENT}b"), repr(ch)
        assert all(unicodedata.category(c) not in ("Cc", "Cs") for c in shown)


def test_terminal_row_cleans_strings_only_and_keeps_clean_rows_as_they_are() -> None:
    clean = {"AppName": "shop", "NewFailure": True, "Count": 3}
    assert terminal_row(clean) is clean
    dirty = {"AppName": "sh\x1bop", "NewFailure": True, "Owner": None}
    assert terminal_row(dirty) == {"AppName": "sh\ufffdop", "NewFailure": True, "Owner": None}
    assert dirty["AppName"] == "sh\x1bop", "the row itself is not changed"


def _row(**values: Any) -> dict[str, Any]:
    base = {
        "RunId": "r1",
        "Status": "FAIL",
        "ResourceId": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Web/sites/app",
        "SubscriptionId": "s",
        "SubscriptionName": "Prod",
        "ResourceGroup": "rg",
        "AppName": "app",
        "Slot": "",
        "Owner": "",
        "ClientCertMode": "Optional",
        "Reason": "r",
        "NewFailure": False,
    }
    return {**base, **values}


def test_table_writer_prints_no_control_character_and_csv_json_keep_them() -> None:
    hostile = {
        "SubscriptionName": "Prod\x1b]0;pwned\x07",
        "ResourceGroup": "rg\x9b2J",
        "Owner": "eve\x1b[8m",
        "Reason": "paths: /x\r\x1b[32mPASS",
        "ExemptionRequest": "please\u202eexe",
        "Remediation": "az webapp update \x1b[5m",
    }
    ctx = report.ReportContext(
        runs=({"RowKey": "r1", "Outcome": "complete"},), flt=report.RowFilter(), group_by="owner"
    )
    out = io.StringIO()
    report.write_table([_row(**hostile)], out, ctx)
    assert_terminal_safe(out.getvalue())
    assert "eve\ufffd[8m" in out.getvalue() and "paths: /x \ufffd[32mPASS" in out.getvalue()

    csv_out = io.StringIO()
    report.write_csv([_row(**hostile)], csv_out)
    row = next(csv.DictReader(io.StringIO(csv_out.getvalue())))
    assert row["Owner"] == hostile["Owner"] and row["ResourceGroup"] == hostile["ResourceGroup"]
    json_out = io.StringIO()
    report.write_json([_row(**hostile)], json_out, ctx)
    assert json.loads(json_out.getvalue())["results"][0]["Reason"] == hostile["Reason"]


def test_diff_table_prints_no_control_character() -> None:
    older = [_row(Status="PASS", RowKey="k")]
    newer = [_row(Status="FAIL", RowKey="k", Reason="now\x1b[2J\rfailing", ResourceGroup="rg\u202e")]
    out = io.StringIO()
    report.write_diff(report.diff_rows(older, newer), out, "table", "a", "b")
    assert_terminal_safe(out.getvalue())
    assert "now\ufffd[2J failing" in out.getvalue()


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


@pytest.mark.integration
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
