"""The fix script, run by the real Azure CLI (azure-cli 2.91.0 from PyPI) against the ARM emulator.

The tenant has what broke the pasted commands before: function apps and Logic Apps (Standard), which
``az webapp update`` refuses; a Flex Consumption app without ``kind``, which both ``az webapp update``
and ``az functionapp update`` crash on; slots, which ``--ids`` would silently turn into their
production site; resource groups ``rg(legacy)``, ``-rg`` (read as an option when passed as a separate
argument) and with unicode letters; ``/`` next to other exclusion paths; ``Optional`` with ``/``.

The script is written by ``clientcert-audit report --format script`` from a real run, run whole with
``bash`` and the real ``az`` (signed in through the emulator's managed-identity endpoint), one of its
resources deleted in between; then the audit runs again. Every write the CLI sent is checked: exactly
the resources the script names, nothing but the client certificate properties, and every resource it
touched now passes (or warns where other exclusion paths remain). Evidence for the choice of command
per kind (docs/security-team.md) is pinned by the second test.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest

from shared.core.fixcommand import PATCH_API_VERSION
from tests.azcli import AzCli
from tests.emulators.arm import site_json
from tests.emulators.tenant import Site
from tests.emulators.writes import FIX_PROPERTIES, SiteWrites
from tests.reportbed import SUB_A, SUB_B, AuditBed


def _add_awkward_estate(bed: AuditBed) -> None:
    a, b = bed.tenant.get_subscription(SUB_A), bed.tenant.get_subscription(SUB_B)
    assert a is not None and b is not None
    s = bed.sites
    s["legacy"] = a.add_site("rg(legacy)", "legacy", client_cert_enabled=True, client_cert_mode="Required")
    s["legacy/staging"] = s["legacy"].add_slot("staging", client_cert_enabled=True, client_cert_mode="Optional")
    s["legacy2"] = a.add_site("rg(legacy)", "legacy2", client_cert_enabled=False, https_only=False)
    s["fn-dash"] = a.add_site(
        "-rg",
        "fn-dash",
        kind="functionapp,linux",
        client_cert_enabled=True,
        client_cert_mode="Optional",
        exclusion_paths="/;/health",
    )
    s["fn-dash/blue"] = s["fn-dash"].add_slot("blue", client_cert_enabled=True, https_only=False)
    s["dash-pass"] = a.add_site("-rg", "dash-pass", client_cert_enabled=True, client_cert_mode="Required")
    s["logic-jp"] = a.add_site(
        "リソース-グループ",
        "logic-jp",
        kind="functionapp,workflowapp",
        client_cert_enabled=True,
        client_cert_mode="Required",
        exclusion_paths="/api; /",
    )
    s["flex-app"] = a.add_site("rg-café-ü", "flex-app", kind=None, client_cert_enabled=False, https_only=False)
    s["wf-only"] = a.add_site(
        "rg-café-ü", "wf-only", kind="workflowapp", client_cert_enabled=True, client_cert_mode="Optional"
    )
    s["api-app"] = a.add_site(
        "rg-café-ü",
        "api-app",
        kind="api",
        client_cert_enabled=True,
        client_cert_mode="OptionalInteractiveUser",
        exclusion_paths="/",
    )
    s["dev-fn"] = b.add_site("-rg", "dev-fn", kind="functionapp", client_cert_enabled=True, client_cert_mode="Optional")
    s["gone-app"] = a.add_site("rg-web", "gone-app", client_cert_enabled=False)


def _option(args: list[str], name: str) -> str:
    """An option's value, written ``--name=value`` or ``--name value``."""
    for i, arg in enumerate(args):
        if arg.startswith(f"{name}="):
            return arg.split("=", 1)[1]
        if arg == name and i + 1 < len(args):
            return args[i + 1]
    return ""


def _named_id(args: list[str]) -> str:
    """The resource id a fix command names, read the way az reads it."""
    if args[1] == "resource":
        return _option(args, "--ids")
    base = (
        f"/subscriptions/{_option(args, '--subscription')}/resourceGroups/{_option(args, '--resource-group')}"
        f"/providers/Microsoft.Web/sites/{_option(args, '--name')}"
    )
    slot = _option(args, "--slot")
    return f"{base}/slots/{slot}" if slot else base


def _read_only_site_properties() -> set[str]:
    """The properties of a site that are read-only in the REST API (azure-mgmt-web's model marks them
    ``visibility=["read"]``): a PUT may leave them out without changing anything."""
    from azure.mgmt.web._utils.model_base import _is_readonly
    from azure.mgmt.web.models import SiteProperties

    SiteProperties()  # the class's field map is built on first use
    names = {f._rest_name for f in SiteProperties._attr_to_rest_field.values() if _is_readonly(f)}
    assert {"state", "hostNames", "defaultHostName"} <= names, names
    return names


def _served(site: Site) -> dict[str, Any]:
    return site_json(site, "site_get")


@pytest.fixture
def bed(azurite: Any, make_arm: Any, monkeypatch: pytest.MonkeyPatch) -> AuditBed:
    bed = AuditBed(azurite, make_arm, monkeypatch)
    _add_awkward_estate(bed)
    return bed


def test_the_fix_script_run_by_the_real_cli_fixes_exactly_what_it_names(
    bed: AuditBed, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    writes = SiteWrites(bed.arm)
    bed.run()
    shop = bed.site_id("shop")
    assert (
        bed.cli(capsys, ["exempt", "add", "--scope", shop, "--reason", "r", "--approver", "a", "--expires", "30d"])[0]
        == 0
    )
    bed.run()
    before = {key: dict(row) for key, row in bed.rows().items()}
    script = tmp_path / "fix.sh"
    assert bed.cli(capsys, ["report", "--format", "script", "-o", str(script)])[0] == 1
    text = script.read_text(encoding="utf-8")
    commands = [shlex.split(line) for line in text.splitlines() if line.startswith("az ")]
    named = [_named_id(args) for args in commands]
    expected = {
        bed.site_id(n)
        for n in (
            "api/staging",
            "portal",
            "jobs",
            "legacy/staging",
            "legacy2",
            "fn-dash",
            "fn-dash/blue",
            "logic-jp",
            "flex-app",
            "wf-only",
            "api-app",
            "dev-fn",
            "gone-app",
        )
    }
    assert sorted(named) == sorted(expected), "one command per FAIL/WARN resource, the exempted one left out"
    groups = {_named_id(args): args[1] for args in commands}
    assert (
        groups[bed.site_id("jobs")] == groups[bed.site_id("logic-jp")] == groups[bed.site_id("dev-fn")] == "functionapp"
    )
    assert groups[bed.site_id("fn-dash/blue")] == "functionapp"
    assert groups[bed.site_id("flex-app")] == "resource" and groups[bed.site_id("wf-only")] == "webapp"
    assert all(f"--api-version={PATCH_API_VERSION}" in args for args in commands if args[1] == "resource")

    # Between the run and the fix, one app is deleted: its block fails, and the script goes on.
    untouched = {k: _served(s) for k, s in bed.sites.items() if s.id not in expected}
    touched_before = {k: _served(s) for k, s in bed.sites.items() if s.id in expected and k != "gone-app"}
    gone = bed.sites.pop("gone-app")
    bed.tenant.get_subscription(SUB_A).remove_site(gone)  # type: ignore[union-attr]

    az = AzCli(bed.arm, tmp_path).sign_in()
    done = az.bash(script, cwd=tmp_path)
    assert done.returncode == 1, done.stderr[-3000:]
    failed = [line for line in done.stderr.splitlines() if line.startswith("FAILED (exit ")]
    assert len(failed) == 1 and "--name=gone-app" in failed[0], done.stderr[-3000:]
    assert f"1 of {len(commands)} fix commands failed; the others ran." in done.stderr

    # Exactly the named resources were written, once each, with nothing but the fix's properties.
    written = [w.resource_id for w in writes.writes]
    assert sorted(written) == sorted(expected - {gone.id})
    read_only = _read_only_site_properties()
    for write in writes.writes:
        assert write.others == {}, f"{write.resource_id}: changed more than the fix: {write.others}"
        assert set(write.omitted) <= read_only, f"{write.resource_id}: a PUT left out {set(write.omitted) - read_only}"
        assert set(write.applied) <= set(FIX_PROPERTIES)
        assert write.method == ("PATCH" if write.resource_id == bed.site_id("flex-app") else "PUT")
    for key, served in untouched.items():
        assert _served(bed.sites[key]) == served, f"{key} was not in the script but changed"
    for key, served in touched_before.items():
        now = _served(bed.sites[key])
        changed = {
            p
            for p in set(served["properties"]) | set(now["properties"])
            if served["properties"].get(p) != now["properties"].get(p)
        }
        assert changed <= set(FIX_PROPERTIES), f"{key}: {changed}"
        assert {k: v for k, v in served.items() if k != "properties"} == {
            k: v for k, v in now.items() if k != "properties"
        }
    assert bed.sites["fn-dash"].exclusion_paths == "/health"  # '/' gone, the other path kept
    assert bed.sites["logic-jp"].exclusion_paths == "/api"

    # The next audit: every resource the script fixed passes, or warns where other paths remain.
    bed.run()
    after = bed.rows()
    for key, site in bed.sites.items():
        row = after[site.key]
        if site.id in expected:
            assert row["Status"] == site.expected_status, key
            assert row["Status"] == ("WARN" if key in ("fn-dash", "logic-jp") else "PASS"), (key, row["Reason"])
        else:
            assert row["Status"] == before[site.key]["Status"], key
    assert after[shop.lower()]["Status"] == "EXEMPT"


def test_what_the_cli_does_with_the_forms_it_refuses(bed: AuditBed, tmp_path: Path) -> None:
    """The evidence docs/security-team.md cites, pinned to azure-cli 2.91: what the old and the
    tempting forms do. Each is the real CLI against the emulator."""
    writes = SiteWrites(bed.arm)
    az = AzCli(bed.arm, tmp_path).sign_in()
    sets = ["--set", "clientCertEnabled=true", "clientCertMode=Required", "--output", "none"]

    jobs = az.run(
        ["webapp", "update", "--name", "jobs", "--resource-group", "rg-func", "--subscription", SUB_A, *sets],
        check=False,
    )
    assert jobs.returncode != 0 and "please use 'az functionapp update'" in jobs.stderr
    flex = az.run(
        ["webapp", "update", "--name=flex-app", "--resource-group=rg-café-ü", f"--subscription={SUB_A}", *sets],
        check=False,
    )
    assert flex.returncode != 0 and "NoneType" in flex.stderr  # no kind: az crashes (a TypeError)
    dash = az.run(["webapp", "update", "--name", "dash-pass", "--resource-group", "-rg", *sets], check=False)
    assert dash.returncode == 2 and re.search(r"argument --resource-group/-g: expected one argument", dash.stderr)
    assert writes.writes == []

    # --ids of a slot: az reads and writes the production site.
    slot_id = bed.site_id("legacy/staging")
    az.run(
        ["webapp", "update", "--ids", slot_id, "--set", "clientCertMode=OptionalInteractiveUser", "--output", "none"]
    )
    assert [w.resource_id for w in writes.writes] == [bed.site_id("legacy")]
    assert bed.sites["legacy"].client_cert_mode == "OptionalInteractiveUser"
    assert bed.sites["legacy/staging"].client_cert_mode == "Optional"
