"""Text from the estate never steers the terminal: no control character reaches ``report`` table or
``exempt list`` output, while CSV and JSON keep the exact values.

The end-to-end case (hostile values through the real engine, Azurite and the CLI) is in
``tests/integration/test_terminal_integration.py``.
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
from shared.core.terminal import REPLACEMENT, terminal_row, terminal_text

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
