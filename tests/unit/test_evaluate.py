"""The evaluation table: every mode × enabled × exclusion combination, and missing fields."""

from __future__ import annotations

import itertools

import pytest

from shared.evaluate import effective_mode, error_finding, evaluate, split_exclusion_paths
from shared.models import InventoryError, SiteRecord, Status

SITE_ID = "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg-a/providers/Microsoft.Web/sites/app1"

MODES = [None, "", "Required", "required", "Optional", "OptionalInteractiveUser", "Bogus"]
ENABLED = [True, False, None]
PATHS = [None, "", "/health", "/health,/status;/metrics", " ; , ", "/", " / ", "/health; /", "//", "/*"]
HTTPS = [True, False, None]


def record(enabled: bool | None, mode: str | None, paths: str | None, **kw: object) -> SiteRecord:
    kw.setdefault("https_only", True)
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


def expected(enabled: bool | None, mode: str | None, paths: str | None, https: bool | None = True) -> tuple[Status, str]:
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


@pytest.mark.parametrize(
    ("enabled", "mode", "paths", "https"), list(itertools.product(ENABLED, MODES, PATHS, HTTPS))
)
def test_every_combination(enabled: bool | None, mode: str | None, paths: str | None, https: bool | None) -> None:
    finding = evaluate(record(enabled, mode, paths, https_only=https))
    status, eff = expected(enabled, mode, paths, https)
    assert (finding.status, finding.client_cert_mode) == (status, eff)
    assert finding.reason
    assert finding.client_cert_enabled is (enabled is True)
    if status is Status.PASS:
        assert finding.remediation == ""
    else:
        assert "az webapp update" in finding.remediation and "Portal:" in finding.remediation
    # the fix command closes plain HTTP whenever it is open
    assert ("httpsOnly=true" in finding.remediation) is (status is not Status.PASS and https is not True)


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
    finding = evaluate(record(True, "Optional", None, slot="staging"))
    assert "--slot staging" in finding.remediation


def test_error_finding() -> None:
    finding = error_finding(InventoryError("/subscriptions/abc", "abc", "HTTP 403 AuthorizationFailed: no"))
    assert finding.status is Status.ERROR
    assert finding.resource_id == "/subscriptions/abc"
    assert "403" in finding.reason


@pytest.mark.parametrize("paths", ["/", " / ", "/health;/", "/api, /"])
def test_exclusion_path_slash_exempts_everything_and_fails(paths: str) -> None:
    finding = evaluate(record(True, "Required", paths))
    assert finding.status is Status.FAIL
    assert finding.client_cert_mode == "Required"
    assert "every request" in finding.reason
    assert 'clientCertExclusionPaths=""' in finding.remediation and "httpsOnly" not in finding.remediation


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
    assert 'clientCertExclusionPaths="" httpsOnly=true' in finding.remediation


def test_other_exclusion_paths_stay_warn_with_https_only() -> None:
    finding = evaluate(record(True, "Required", "/health;/*;//"))
    assert finding.status is Status.WARN
