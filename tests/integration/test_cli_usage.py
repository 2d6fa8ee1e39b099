"""The command line as people use it, against Azurite with runs of the real engine: the exit codes the
docs list are the ones returned (usage errors included), ``--subscription`` by name or prefix, tables
whose columns fit their data, ``subscriptions list`` as CSV and JSON, ``report --new`` on a baseline,
and one line, not a page, when nobody is signed in."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from shared.commands.common import ExitCode
from tests.reportbed import SUB_A, SUB_B, AuditBed

DOCS = Path(__file__).resolve().parents[2] / "docs" / "security-team.md"


@pytest.fixture
def bed(azurite: Any, make_arm: Any, monkeypatch: pytest.MonkeyPatch) -> AuditBed:
    bed = AuditBed(azurite, make_arm, monkeypatch)
    third = bed.tenant.add_subscription("cccccccc-3333-4333-8333-333333333333", "Production EU")
    third.add_site("rg-eu", "eu-shop", client_cert_enabled=False)
    return bed


def _documented_codes() -> dict[str, int]:
    """The member -> code rows of docs/security-team.md's "Exit codes" table."""
    section = DOCS.read_text(encoding="utf-8").split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    return {m.group(2): int(m.group(1)) for m in re.finditer(r"^\| (\d) \| `([A-Z_]+)` \|", section, re.M)}


def test_the_docs_list_every_exit_code_the_commands_return() -> None:
    assert _documented_codes() == {name: int(code) for name, code in ExitCode.__members__.items()}


def test_usage_errors_exit_with_the_documented_code(bed: AuditBed, capsys: pytest.CaptureFixture[str]) -> None:
    for args in (
        ["report", "--no-such-option"],
        ["report", "--status", "MAYBE"],
        ["report", "--since", "yesterday-ish"],
        ["report", "--trend", "-1"],
        ["subscriptions", "list", "--format", "xml"],
        ["exempt"],
        [],
    ):
        code, _, err = bed.cli(capsys, args)
        assert code == ExitCode.INVALID == 4, (args, err)
        assert "usage: clientcert-audit" in err and "error:" in err
    assert bed.cli(capsys, ["report", "--help"])[0] == 0
    # the installed command, in its own process, exits with the same code
    done = subprocess.run([sys.executable, "-m", "shared", "report", "--bogus"], capture_output=True, check=False)
    assert done.returncode == 4


def test_subscription_by_name_or_prefix(bed: AuditBed, capsys: pytest.CaptureFixture[str]) -> None:
    bed.run()

    def apps(selector: str) -> tuple[int, set[str], str]:
        code, out, err = bed.cli(capsys, ["report", "--format", "csv", "--subscription", selector])
        return code, {r["AppName"] for r in csv.DictReader(io.StringIO(out))}, err

    assert apps("Dev")[1] == {"intranet"}  # a name, exactly
    assert apps("dev")[1] == {"intranet"}  # in any casing
    assert apps("Prod")[1] == {"shop", "api", "portal", "jobs"}  # the exact name wins over "Production EU"
    assert apps("production")[1] == {"eu-shop"}  # the only name that starts with it
    assert apps("bbbb")[1] == {"intranet"}  # the start of an id, as the report's labels show it
    assert apps(SUB_B.upper())[1] == {"intranet"}
    code, found, err = apps("Pro")
    assert code == ExitCode.INVALID and not found
    assert "matches 2 subscriptions" in err and "Prod (" in err and "Production EU (" in err
    code, found, err = apps("Staging")
    assert code == ExitCode.INVALID and "No subscription the audit has read" in err
    # retire takes the same selector
    assert bed.cli(capsys, ["subscriptions", "retire", "nothing-like-it"])[0] == ExitCode.NOT_FOUND
    code, out, _ = bed.cli(capsys, ["subscriptions", "retire", "production"])
    assert code == 0 and "cccccccc-3333-4333-8333-333333333333" in out


def test_columns_fit_their_data(bed: AuditBed, capsys: pytest.CaptureFixture[str]) -> None:
    bed.tenant.get_subscription(SUB_A).display_name = "A rather long subscription name (shared services)"  # type: ignore[union-attr]
    bed.run()
    bed.run()

    code, out, _ = bed.cli(capsys, ["subscriptions", "list"])
    lines = out.splitlines()
    assert code == 0 and lines[0].split() == ["subscription", "name", "last", "audited", "last", "run"]
    starts = [lines[0].index(h) for h in ("name", "last audited", "last run")]
    for line in lines[1:]:
        assert line[starts[0] - 2 : starts[0]] == "  " and line[starts[1] - 2 : starts[1]] == "  ", line
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC", line[starts[1] : starts[2]].strip()), line
        assert line[starts[2] :].strip() == bed.summaries[-1].run_id
    assert "A rather long subscription name (shared services)" in out  # whole, not cut

    listed = json.loads(bed.cli(capsys, ["subscriptions", "list", "--format", "json"])[1])
    assert [s["SubscriptionId"] for s in listed] == sorted([SUB_A, SUB_B, "cccccccc-3333-4333-8333-333333333333"])
    assert listed[0]["LastRunId"] == bed.summaries[-1].run_id and listed[0]["LastAuditedAt"].endswith("Z")
    assert {s["TenantId"] for s in listed} == {bed.tenant.tenant_id}  # each subscription's tenant, from ARM
    rows = list(csv.DictReader(io.StringIO(bed.cli(capsys, ["subscriptions", "list", "--format", "csv"])[1])))
    assert [r["SubscriptionName"] for r in rows][1] == "Dev" and set(rows[0]) >= {"SubscriptionId", "LastRunId"}

    since = (bed.summaries[0].started_at.replace(microsecond=0)).isoformat()
    code, out, _ = bed.cli(capsys, ["report", "--since", since])
    block = out.split("Run totals (whole tenant, as each run recorded them):\n", 1)[1].split("\n\n", 1)[0]
    head, *runs = block.splitlines()
    assert len(runs) == 2
    for run, summary in zip(runs, bed.summaries, strict=True):
        cells = run.split()
        assert cells[0] == summary.run_id and cells[1] == "complete", run  # never run together
        assert run.index("complete") == head.index("outcome")
    listing = out.split("\nRUN", 1)[1].splitlines()
    status_at = listing[0].index("STATUS") + len("RUN")
    entries = [line for line in listing[1:] if line[:8].isdigit()]
    assert entries and all(line[status_at:].split()[0] in ("FAIL", "WARN", "ERROR") for line in entries), listing[:4]


def test_new_on_a_baseline_says_nothing_counts_as_new(bed: AuditBed, capsys: pytest.CaptureFixture[str]) -> None:
    bed.run()
    code, out, err = bed.cli(capsys, ["report", "--new"])
    assert code == 0 and "nothing to act on" in out
    assert f"Run {bed.summaries[0].run_id} is the baseline" in err and "nothing counts as new on a baseline" in err
    bed.sites["intranet"].update(client_cert_mode="Optional")
    bed.run()
    code, out, err = bed.cli(capsys, ["report", "--new"])
    assert code == 1 and "baseline" not in err and "intranet" in out


def test_without_sign_in_one_line_says_how(bed: AuditBed, tmp_path: Path) -> None:
    """The deployed setting (a service URI, no connection string) with no identity at all: no page of
    the credential chain's notes, one line that says what to do."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "IDENTITY_", "MSI_", "AUDIT_TABLE"))}
    env.update(
        AUDIT_TABLE_SERVICE_URI="https://127.0.0.1:9/",
        HOME=str(tmp_path),
        PATH="/usr/bin:/bin",
        AZURE_CONFIG_DIR=str(tmp_path),
    )
    for args in (["report"], ["subscriptions", "list"], ["exempt", "list"]):
        done = subprocess.run(
            [sys.executable, "-m", "shared", *args], env=env, capture_output=True, text=True, timeout=120, check=False
        )
        assert done.returncode == ExitCode.STORE, done.stderr
        assert done.stderr.splitlines() == [
            "Cannot use the results tables: not signed in. Sign in with `az login` (the commands use your Azure CLI "
            "sign-in), then run this again."
        ]


def test_the_html_report_goes_to_its_own_folder_by_default(
    bed: AuditBed, capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Run from the checkout, the page lands in a folder that git ignores and the package leaves out."""
    bed.run()
    monkeypatch.chdir(tmp_path)
    code, out, _ = bed.cli(capsys, ["report", "--format", "html"])
    page = tmp_path / "clientcert-audit-reports" / "clientcert-audit-report.html"
    assert (
        code == 1 and page.is_file() and out.startswith("Wrote clientcert-audit-reports/clientcert-audit-report.html: ")
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clientcert-audit-reports"]
