"""The evaluation table: every mode × enabled × exclusion combination, and missing fields."""

from __future__ import annotations

import dataclasses
import itertools
import shlex

import pytest

from shared.core.evaluate import effective_mode, error_finding, evaluate, split_exclusion_paths
from shared.core.fixcommand import parse_fix_command
from shared.core.models import InventoryError, SiteRecord, Status

SITE_ID = "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg-a/providers/Microsoft.Web/sites/app1"

MODES = [None, "", "Required", "required", "Optional", "OptionalInteractiveUser", "Bogus"]
ENABLED = [True, False, None]
PATHS = [None, "", "/health", "/health,/status;/metrics", " ; , ", "/", " / ", "/health; /", "//", "/*"]
HTTPS = [True, False, None]


def record(enabled: bool | None, mode: str | None, paths: str | None, **kw: object) -> SiteRecord:
    kw.setdefault("https_only", True)
    kw.setdefault("kind", "app")
    return SiteRecord(
        resource_id=SITE_ID,
        subscription_id="00000000-0000-0000-0000-000000000001",
        resource_group="rg-a",
        app_name="app1",
        client_cert_enabled=enabled,
        client_cert_mode=mode,
        exclusion_paths=paths,
        **kw,  # type: ignore[arg-type]
    )


def expected(
    enabled: bool | None, mode: str | None, paths: str | None, https: bool | None = True
) -> tuple[Status, str]:
    """Independent statement of the rules in the issues, case by case."""
    if enabled is not True:
        return Status.FAIL, "Ignore"
    if mode in (None, "", "Required", "required"):
        listed = [p.strip() for p in (paths or "").replace(";", ",").split(",") if p.strip()]
        if "/" in listed or https is not True:  # every path exempt, or plain HTTP open: FAIL wins
            return Status.FAIL, "Required"
        return (Status.WARN if listed else Status.PASS), "Required"
    if mode == "Optional":
        return Status.FAIL, "Optional"
    if mode == "OptionalInteractiveUser":
        return Status.FAIL, "OptionalInteractiveUser"
    return Status.FAIL, str(mode)


@pytest.mark.parametrize(("enabled", "mode", "paths", "https"), list(itertools.product(ENABLED, MODES, PATHS, HTTPS)))
def test_every_combination(enabled: bool | None, mode: str | None, paths: str | None, https: bool | None) -> None:
    finding = evaluate(record(enabled, mode, paths, https_only=https))
    status, eff = expected(enabled, mode, paths, https)
    assert (finding.status, finding.client_cert_mode) == (status, eff)
    assert finding.reason
    assert finding.client_cert_enabled is (enabled is True)
    if status is Status.PASS:
        assert finding.remediation == ""
        return
    assert finding.remediation.startswith("Portal:")
    for kind in ("", "app", "functionapp,workflowapp"):  # one command per kind; the same properties
        site = record(enabled, mode, paths, https_only=https, kind=kind)
        fixed = _applied(site, evaluate(site).remediation)
        assert (fixed.https_only is True and https is not True) or fixed.https_only == https  # HTTP closed if open
        assert fixed == _applied(record(enabled, mode, paths, https_only=https), finding.remediation)
    # ... and, applied, the fix makes the app pass: a WARN remains only where paths other than '/' were kept
    fixed = evaluate(_applied(record(enabled, mode, paths, https_only=https), finding.remediation))
    others = [p.strip() for p in (paths or "").replace(";", ",").split(",") if p.strip() not in ("", "/")]
    assert fixed.status is (Status.WARN if status is Status.FAIL and others else Status.PASS), fixed.reason
    assert fixed.remediation == "" or fixed.status is Status.WARN


_FIELDS = {
    "clientCertEnabled": "client_cert_enabled",
    "clientCertMode": "client_cert_mode",
    "clientCertExclusionPaths": "exclusion_paths",
    "httpsOnly": "https_only",
}


def _applied(site: SiteRecord, remediation: str) -> SiteRecord:
    """The record as ARM would serve it once the remediation's command has run."""
    parsed = parse_fix_command(shlex.split(remediation[remediation.index(" az ") + 1 :]))
    assert parsed is not None, remediation
    return dataclasses.replace(site, kind="", **{_FIELDS[name]: value for name, value in parsed.properties.items()})


def test_disabled_with_mode_required_is_ignore_and_fails() -> None:
    """Azure reports clientCertMode Required on apps with certificates off: that is Ignore."""
    finding = evaluate(record(False, "Required", None))
    assert finding.status is Status.FAIL
    assert finding.client_cert_mode == "Ignore"
    assert "no effect" in finding.reason


def test_exclusion_paths_are_listed_in_reason_and_row() -> None:
    finding = evaluate(record(True, "Required", "/health,/status;/metrics"))
    assert finding.status is Status.WARN
    assert finding.exclusion_paths == ("/health", "/status", "/metrics")
    assert "/health, /status, /metrics" in finding.reason


def test_exclusion_paths_do_not_matter_when_not_required() -> None:
    finding = evaluate(record(True, "Optional", "/x"))
    assert finding.status is Status.FAIL and finding.exclusion_paths == ()


def test_split_exclusion_paths() -> None:
    assert split_exclusion_paths(None) == ()
    assert split_exclusion_paths("/a;/b,,/a; ") == ("/a", "/b")


def test_effective_mode_canonicalises_case() -> None:
    assert effective_mode(True, "optional") == "Optional"
    assert effective_mode(True, "OPTIONALINTERACTIVEUSER") == "OptionalInteractiveUser"
    assert effective_mode(None, "Optional") == "Ignore"


def test_slot_remediation_names_the_slot() -> None:
    slot_id = f"{SITE_ID}/slots/staging"
    finding = evaluate(
        dataclasses.replace(record(True, "Optional", None, slot="staging", kind="app"), resource_id=slot_id)
    )
    assert " az webapp update " in finding.remediation and " --slot=staging " in finding.remediation
    assert "--ids" not in finding.remediation  # --ids of a slot makes az write the production site
    no_kind = evaluate(
        dataclasses.replace(record(True, "Optional", None, slot="staging", kind=""), resource_id=slot_id)
    )
    assert f" az resource patch --ids={slot_id} " in no_kind.remediation  # resource patch writes exactly the id


def test_error_finding() -> None:
    finding = error_finding(InventoryError("/subscriptions/abc", "abc", "HTTP 403 AuthorizationFailed: no"))
    assert finding.status is Status.ERROR
    assert finding.resource_id == "/subscriptions/abc"
    assert "403" in finding.reason


@pytest.mark.parametrize(("paths", "kept"), [("/", ""), (" / ", ""), ("/health;/", "/health"), ("/api, /", "/api")])
def test_exclusion_path_slash_exempts_everything_and_fails(paths: str, kept: str) -> None:
    finding = evaluate(record(True, "Required", paths))
    assert finding.status is Status.FAIL
    assert finding.client_cert_mode == "Required"
    assert "every request" in finding.reason
    assert finding.remediation.endswith(f"--set 'clientCertExclusionPaths=\"{kept}\"'")  # only '/' goes


@pytest.mark.parametrize("mode", ["Optional", "OptionalInteractiveUser", "Bogus"])
def test_a_mode_fix_takes_slash_out_too(mode: str) -> None:
    """The evaluation reads exclusion paths only once the mode is Required; the fix must not: setting the
    mode alone would leave '/' exempting every request, and the app failing."""
    finding = evaluate(record(True, mode, "/;/health,/x"))
    assert finding.status is Status.FAIL and finding.exclusion_paths == ()
    assert finding.remediation.endswith(
        "--set clientCertEnabled=true clientCertMode=Required 'clientCertExclusionPaths=\"/health;/x\"'"
    )


@pytest.mark.parametrize("https", [False, None])
def test_required_but_plain_http_open_fails(https: bool | None) -> None:
    finding = evaluate(record(True, "Required", None, https_only=https))
    assert finding.status is Status.FAIL
    assert finding.client_cert_mode == "Required"
    assert "plain HTTP" in finding.reason
    assert finding.remediation.endswith("--set httpsOnly=true")


def test_both_holes_fail_and_are_both_named() -> None:
    finding = evaluate(record(True, "Required", "/health,/", https_only=False))
    assert finding.status is Status.FAIL
    assert "every request" in finding.reason and "plain HTTP" in finding.reason
    assert finding.remediation.endswith("""'clientCertExclusionPaths="/health"' httpsOnly=true""")


def test_other_exclusion_paths_stay_warn_with_https_only() -> None:
    finding = evaluate(record(True, "Required", "/health;/*;//"))
    assert finding.status is Status.WARN
