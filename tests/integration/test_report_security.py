"""The security team's daily view against Azurite, with several runs by the real engine: subscription
names and owners in every format, ``--owner`` and ``--group-by``, the fix script and the OCSF findings."""

from __future__ import annotations

import csv
import io
import json
import os
import shlex
import stat
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from shared import report
from shared.core.keys import resource_key
from shared.report import ocsf
from shared.report.fixscript import az_command, comment, portal_link
from tests.reportbed import SUB_A, SUB_B, AuditBed

TAGS: dict[str, dict[str, str]] = {
    "shop": {"Owner": "Alice@contoso.com"},
    "api": {"team": "payments"},  # its slot has no tag: the site's owner
    "portal": {"OWNER": "alice@contoso.com"},
    "jobs": {"Contact": "ops\n; touch pwned #"},  # a hostile tag: must stay inside a comment
}


@pytest.fixture
def bed(azurite: Any, make_arm: Any, monkeypatch: pytest.MonkeyPatch) -> AuditBed:
    return AuditBed(azurite, make_arm, monkeypatch)


def _history(bed: AuditBed) -> None:
    """Three runs: baseline; intranet breaks; blog appears (failing) and shop is exempted."""
    bed.run(tags=TAGS)
    bed.sites["intranet"].update(client_cert_mode="Optional")
    bed.run()
    bed.tenant.get_subscription(SUB_B).add_site("rg-dev", "blog", client_cert_enabled=False)  # type: ignore[union-attr]
    bed.run()


def _csv(out: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(out)))


def test_names_owner_filter_and_groups_in_every_format(
    bed: AuditBed, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    _history(bed)
    rows = _csv(bed.cli(capsys, ["report", "--format", "csv"])[1])
    assert {(r["SubscriptionId"], r["SubscriptionName"]) for r in rows} == {(SUB_A, "Prod"), (SUB_B, "Dev")}
    owners = {(r["AppName"], r["Slot"]): r["Owner"] for r in rows}
    assert owners[("api", "staging")] == "payments" and owners[("intranet", "")] == ""
    assert owners[("jobs", "")] == "ops\n; touch pwned #"  # CSV quotes it; the terminal shows one line
    assert json.loads(next(r for r in rows if r["AppName"] == "shop")["Tags"]) == {"Owner": "Alice@contoso.com"}

    # --owner: a case-insensitive part of the owner
    alice = _csv(bed.cli(capsys, ["report", "--format", "csv", "--owner", "ALICE@"])[1])
    assert sorted(r["AppName"] for r in alice) == ["portal", "shop"]
    code, out, _ = bed.cli(capsys, ["report", "--owner", "payments"])
    assert code == 1 and "owner containing 'payments'" in out
    assert "api/staging" in out and "payments" in out and "portal" not in out

    # --group-by owner: worst first, owners compared case-insensitively, the unowned together
    code, out, _ = bed.cli(capsys, ["report", "--group-by", "owner"])
    block = out.split("\n\n")[2].splitlines()
    assert block[0].split()[0] == "owner"
    assert [line[:40].strip().casefold() for line in block[1:]] == [
        "(no owner)",  # intranet, blog: 2 FAIL
        "alice@contoso.com",  # shop FAIL and portal WARN, whichever casing of the tag
        "ops ; touch pwned #",  # jobs FAIL
        "payments",  # api PASS and its slot FAIL
    ]
    assert block[1].split()[-6:] == ["0", "0", "2", "0", "0", "2"]
    assert block[2].split()[-6:] == ["0", "1", "1", "0", "0", "2"]
    code, out, _ = bed.cli(capsys, ["report", "--group-by", "resource-group", "--format", "csv"])
    groups = _csv(out)
    assert list(groups[0]) == ["Resource group", "PASS", "WARN", "FAIL", "EXEMPT", "ERROR", "Total"]
    assert [(g["Resource group"], g["FAIL"], g["WARN"], g["Total"]) for g in groups] == [
        ("rg-web in Prod (aaaaaaaa)", "2", "1", "4"),
        ("rg-dev in Dev (bbbbbbbb)", "2", "0", "2"),
        ("rg-func in Prod (aaaaaaaa)", "1", "0", "1"),
    ]
    doc = json.loads(bed.cli(capsys, ["report", "--format", "json", "--group-by", "subscription"])[1])
    assert doc["summary"]["groupBy"] == "subscription"
    assert [(g["group"], g["FAIL"], g["total"]) for g in doc["summary"]["byGroup"]] == [
        ("Prod (aaaaaaaa)", 3, 5),
        ("Dev (bbbbbbbb)", 2, 2),
    ]
    assert doc["summary"]["subscriptionNames"] == {SUB_A: "Prod", SUB_B: "Dev"}
    assert {r["SubscriptionName"] for r in doc["results"]} == {"Prod", "Dev"}

    # terminal list: the name with a short id, and the owner
    code, out, _ = bed.cli(capsys, ["report"])
    shop_line = next(line for line in out.splitlines() if line.startswith("FAIL") and " shop " in line)
    assert "Prod (aaaaaaaa)" in shop_line and "Alice@contoso.com" in shop_line
    page = tmp_path / "r.html"
    bed.cli(capsys, ["report", "--format", "html", "--group-by", "owner", "-o", str(page)])
    html = page.read_text(encoding="utf-8")
    assert 'id="by-owner"' in html and "<td>(no owner)</td>" in html
    assert f'title="{SUB_A}">Prod (aaaaaaaa)</td>' in html and '<td class="owner" data-label="Owner">payments</td>' in html


def test_fix_script_covers_fail_and_warn_leaves_exempt_out_and_is_never_run(
    bed: AuditBed, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    _history(bed)
    shop = bed.site_id("shop")
    assert (
        bed.cli(capsys, ["exempt", "add", "--scope", shop, "--reason", "r", "--approver", "a", "--expires", "30d"])[0]
        == 0
    )
    bed.run()  # shop is EXEMPT from this run on
    calls = tmp_path / "calls"
    script = tmp_path / "fix.sh"
    code, out, _ = bed.cli(capsys, ["report", "--format", "script", "-o", str(script)])
    assert code == 1 and f"Wrote {script}" in out
    assert not calls.exists()  # writing it ran nothing
    text = script.read_text(encoding="utf-8")
    assert text.startswith("#!/usr/bin/env bash\n") and "\nset -uo pipefail\n" in text
    assert "breaks every client that does not send one" in text
    commands = [line for line in text.splitlines() if line.startswith("az ")]
    assert len(commands) == 5  # api/staging, jobs, intranet, blog (FAIL) and portal (WARN); not shop
    assert text.endswith('echo "All 5 fix commands ran."\n')
    assert text.index("[FAIL]") < text.index("[WARN]")
    assert shop not in text and "# [FAIL] shop " not in text
    assert "# Owner: ops ; touch pwned #" in text  # the hostile tag stays a comment
    assert "# Owner: payments" in text and "(no owner tag)" in text
    assert f"# Portal: {portal_link(bed.site_id('api/staging'), bed.tenant.tenant_id)}" in text
    staging = next(c for c in commands if "--slot" in c)
    assert "--slot=staging" in shlex.split(staging)
    assert subprocess.run(["bash", "-n", str(script)], check=False).returncode == 0

    # Run by a reviewer, with a stand-in for the Azure CLI: exactly these resources, exactly these names.
    fake = tmp_path / "bin"
    fake.mkdir()
    log = shlex.quote(str(calls))
    (fake / "az").write_text(f"#!/usr/bin/env bash\nprintf '%s\\0' \"$@\" >> {log}\necho >> {log}\n")
    (fake / "az").chmod(0o755 | stat.S_IXUSR)
    env = {**os.environ, "PATH": f"{fake}:{os.environ['PATH']}"}
    subprocess.run(["bash", str(script)], cwd=tmp_path, env=env, check=True, timeout=60)
    assert not (tmp_path / "pwned").exists()
    made = [entry.split("\0") for entry in calls.read_text(encoding="utf-8").split("\0\n") if entry]
    options = [dict(arg.split("=", 1) for arg in a if arg.startswith("--") and "=" in arg) for a in made]
    targets = {(o["--name"], o.get("--slot", "")) for o in options}
    assert targets == {("api", "staging"), ("jobs", ""), ("intranet", ""), ("blog", ""), ("portal", "")}
    assert all(o["--subscription"] in (SUB_A, SUB_B) for o in options)

    # Filters apply; nothing selected still gives a valid script
    only = bed.cli(capsys, ["report", "--format", "script", "--owner", "payments"])[1]
    assert only.count("\naz webapp update ") == 1 and "All 1 fix commands ran." in only
    empty = bed.cli(capsys, ["report", "--format", "script", "--owner", "nobody"])[1]
    assert "# Nothing to fix in this selection." in empty
    assert bed.cli(capsys, ["report", "--format", "script", "--since", "7d"])[0] == 4


def test_script_keeps_estate_text_in_comments_and_commands_on_their_resource() -> None:
    assert comment("a\nb\r\nc\x1b[31m\u2028d\x9b2J\u202eZ") == "a b c\ufffd[31m d\ufffd2J\ufffdZ"
    row = {
        "AppName": "shop",
        "ResourceGroup": "-rg",
        "Slot": "",
        "Kind": "app",
        "SubscriptionId": SUB_A,
        "ResourceId": f"/subscriptions/{SUB_A}/resourceGroups/-rg/providers/Microsoft.Web/sites/shop",
        "Remediation": "Portal: x. az webapp update --resource-group=-rg --name=shop --set clientCertEnabled=true",
    }
    expected = ["az", "webapp", "update", "--resource-group=-rg", "--name=shop", f"--subscription={SUB_A}"]
    assert az_command(row) == [*expected, "--set", "clientCertEnabled=true"]
    # a row recorded by an older version: the command that works today, for the row's kind
    legacy = "Portal: x. az webapp update --name shop --resource-group -rg --set clientCertEnabled=true"
    assert az_command({**row, "Kind": "functionapp", "Remediation": legacy}) == [
        "az", "functionapp", *expected[2:], "--set", "clientCertEnabled=true"
    ]
    assert az_command({**row, "Kind": "", "Remediation": legacy}) == [
        "az", "resource", "patch", f"--ids={row['ResourceId']}", "--api-version=2025-05-01",
        '--properties={"clientCertEnabled": true}',
    ]
    assert az_command({**row, "Remediation": row["Remediation"].replace("--name=shop", "--name=other")}) is None
    assert az_command({**row, "Remediation": row["Remediation"] + " --subscription=" + SUB_B}) is None
    assert az_command({**row, "Remediation": "Portal only."}) is None
    assert az_command({**row, "Remediation": "az webapp update --name 'shop"}) is None  # unbalanced quote
    # nothing but the client certificate properties: a recorded command cannot change anything else
    assert az_command({**row, "Remediation": row["Remediation"] + " siteConfig.alwaysOn=false"}) is None
    assert az_command({**row, "Remediation": row["Remediation"] + " clientCertMode=Optional --slot=x"}) is None
    patch = f"az resource patch --ids={row['ResourceId']} '--properties={{\"clientCertMode\": \"Required\"}}'"
    assert az_command({**row, "Remediation": patch})[:3] == ["az", "webapp", "update"]  # type: ignore[index]
    assert az_command({**row, "Remediation": patch.replace("sites/shop", "sites/other")}) is None
    assert az_command({**row, "Remediation": patch.replace("Required", "Optional")}) is not None
    assert az_command({**row, "Remediation": patch.replace('"Required"', "false")}) is None  # wrong type


# -- OCSF ---------------------------------------------------------------------------------------------------
@cache
def _validator(version: str) -> Any:
    jsonschema = pytest.importorskip("jsonschema")
    schemas = pytest.importorskip("ocsf_json_schema")
    embedded = schemas.OcsfJsonSchemaEmbedded(schemas.get_ocsf_schema(version=version))
    schema = embedded.get_class_schema(embedded.lookup_class_name_from_uid(ocsf.CLASS_UID), profiles=["cloud"])
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def _errors(event: dict[str, Any], version: str) -> list[str]:
    return [f"{list(e.absolute_path)}: {e.message}" for e in _validator(version).iter_errors(event)]


def test_the_validator_rejects_what_ocsf_forbids() -> None:
    """The schema check can fail: an unknown attribute, a missing required one, a wrong enum."""
    good = ocsf.detection_finding({"Status": "FAIL", "ResourceId": "/subscriptions/x/resourceGroups/r"}, "1")
    assert _errors(good, ocsf.OCSF_VERSION) == []
    assert _errors({**good, "made_up": 1}, ocsf.OCSF_VERSION)
    assert _errors({k: v for k, v in good.items() if k != "finding_info"}, ocsf.OCSF_VERSION)
    assert _errors({**good, "status_id": 7}, ocsf.OCSF_VERSION)


def test_ocsf_findings_validate_and_keep_their_uid_from_run_to_run(
    bed: AuditBed, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _history(bed)
    run2 = bed.summaries[1].run_id
    shop = bed.site_id("shop")
    bed.cli(capsys, ["exempt", "add", "--scope", shop, "--reason", "r", "--approver", "a", "--expires", "30d"])
    bed.sites["api/staging"].update(client_cert_mode="Required")
    bed.arm.faults.forbid_subscription(SUB_B)  # one ERROR row
    bed.run(outcome="partial")

    code, out, _ = bed.cli(capsys, ["report", "--format", "ocsf"])
    events = [json.loads(line) for line in out.splitlines()]
    assert code == 1 and len(events) == 6  # SUB_A's 5 resources and SUB_B's ERROR row
    for event in events:
        assert _errors(event, ocsf.OCSF_VERSION) == [], event
        assert _errors(event, "1.8.0") == [], event  # and the newest packaged version
    by_code: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        by_code.setdefault(event["status_code"], []).append(event)
    assert {k: len(v) for k, v in by_code.items()} == {"PASS": 2, "FAIL": 1, "WARN": 1, "EXEMPT": 1, "ERROR": 1}
    assert {(e["status_code"], e["status_id"], e["severity_id"]) for e in events} == {
        ("PASS", 4, 1),
        ("FAIL", 1, 4),
        ("WARN", 1, 3),
        ("EXEMPT", 3, 1),
        ("ERROR", 99, 3),
    }
    exempt = by_code["EXEMPT"][0]
    assert exempt["unmapped"]["exemption"] and exempt["resources"][0]["uid"] == shop
    assert exempt["resources"][0]["owner"] == {"name": "Alice@contoso.com"}
    assert exempt["resources"][0]["tags"] == [{"name": "Owner", "value": "Alice@contoso.com"}]
    assert exempt["cloud"]["account"] == {"uid": SUB_A, "name": "Prod", "type_id": 13, "type": "Azure Subscription"}
    staging = next(e for e in events if e["resources"][0]["name"] == "api/staging")
    assert staging["activity_id"] == 3 and staging["type_uid"] == 200403  # fixed since the last run: closed
    assert staging["resources"][0]["type"] == "Microsoft.Web/sites/slots"
    assert staging["resources"][0]["group"]["name"] == "rg-web" and staging["resources"][0]["region"] == "East US"
    assert staging["unmapped"]["client_cert_mode"] == "Required" and staging["unmapped"]["previous_status"] == "FAIL"
    jobs = by_code["FAIL"][0]
    assert jobs["resources"][0]["name"] == "jobs" and "az functionapp update" in jobs["remediation"]["desc"]
    assert jobs["remediation"]["references"][0] == portal_link(bed.site_id("jobs"), bed.tenant.tenant_id)
    portal = by_code["WARN"][0]
    assert portal["unmapped"]["client_cert_exclusion_paths"] == ["/health"]
    error = by_code["ERROR"][0]
    assert error["cloud"]["account"]["name"] == "Dev" and "Client Certificate Auditor" in error["remediation"]["desc"]

    # The uid is per resource and check: unique within a run, the same in an earlier run
    uids = [e["finding_info"]["uid"] for e in events]
    assert len(set(uids)) == len(uids)
    earlier = [
        json.loads(line) for line in bed.cli(capsys, ["report", "--format", "ocsf", "--run", run2])[1].splitlines()
    ]
    earlier_uids = {e["resources"][0]["uid"].lower(): e["finding_info"]["uid"] for e in earlier}
    assert earlier_uids[shop.lower()] == ocsf.finding_uid({"ResourceId": shop}) == exempt["finding_info"]["uid"]
    assert ocsf.finding_uid({"ResourceId": shop.upper()}) == exempt["finding_info"]["uid"]
    assert resource_key(shop) in exempt["finding_info"]["uid"]
    broke = next(e for e in earlier if e["resources"][0]["name"] == "intranet")  # a new failure in run 2
    assert broke["activity_id"] == 1 and broke["finding_info"]["first_seen_time"] == broke["time"]
    assert report.GROUPINGS == ("subscription", "owner", "resource-group")
