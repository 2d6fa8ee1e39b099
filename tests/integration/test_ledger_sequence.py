"""The nightly run and the change poll go through one ledger sequence (``RunLedger.run``): open,
the run's body, record, close; a body that raises is recorded as a failed run, its RunSummary event
says so, the lease is kept for a resume, and the caller gets ``AuditFailed`` naming the run.

The body fails here through the engine's checkpoint hook (a crash where the pipeline reports a
stage), end to end through the worker, the ARM emulator and Azurite.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest

from shared.azure.exemptions import load_exemptions
from shared.core.errors import AuditFailed
from shared.run import audit, changes
from tests.emulators.faults import FaultRule, Status
from tests.emulators.tenant import Tenant
from tests.harness import AuditHarness

SUB = "1ed9e7a0-0000-4000-8000-000000000024"
REQ = {"client_cert_enabled": True, "client_cert_mode": "Required"}
NIGHT = datetime(2026, 11, 2, 2, 0, tzinfo=UTC)


class Injected(RuntimeError):
    """The crash the test injects into a run's body."""


def crash(stage: str, _sub: str) -> None:
    raise Injected(f"crashed at {stage}")


BROKEN = [True]


def unreadable_exemptions(store: object) -> list[object]:
    if BROKEN[0]:
        raise Injected("the exemptions table could not be read")
    return load_exemptions(store)  # type: ignore[arg-type]


@pytest.mark.parametrize("where", ["pipeline", "body"])
def test_a_failing_body_is_recorded_and_raised_alike_by_the_nightly_run_and_the_poll(
    make_arm, harness_factory, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    """``pipeline``: a crash inside a subscription's pipeline (already an ``AuditFailed`` naming the
    subscription, passed on unchanged); ``body``: a failure outside it (wrapped, naming the run)."""
    now = [NIGHT]
    tenant = Tenant()
    site = tenant.add_subscription(SUB, display_name="prod").add_site("rg-a", "app", **REQ)
    tenant.start_change_log(lambda: now[0])
    h: AuditHarness = harness_factory(make_arm(tenant))
    h.run_at(NIGHT)  # the baseline, complete
    assert h.runs()[-1]["Outcome"] == "complete"
    checkpoint = crash if where == "pipeline" else None
    BROKEN[0] = True
    if where == "body":
        monkeypatch.setattr(changes, "load_exemptions", unreadable_exemptions)
        monkeypatch.setattr(audit, "load_exemptions", unreadable_exemptions)
    expected = {
        "pipeline": f"subscription {SUB}: Injected: crashed at ",
        "body": "{what} {run} failed: Injected: the exemptions table could not be read",
    }[where]

    now[0] = NIGHT + timedelta(hours=9)
    site.update(client_cert_mode="Optional")
    h.clear_events()
    with pytest.raises(AuditFailed) as poll_failed:
        h.poll_at(now[0] + timedelta(minutes=4), checkpoint=checkpoint)
    poll = [r for r in h.runs() if r.get("Kind") == "changes"][-1]
    assert str(poll_failed.value).startswith(expected.format(what="change run", run=poll["RunId"]))
    detail = {"pipeline": "Injected: crashed at ", "body": "Injected: the exemptions table could not be read"}[where]
    assert poll["Outcome"] == "failed" and detail in poll["Error"]
    assert [(s["Kind"], s["Outcome"]) for s in h.run_summaries()] == [("changes", "failed")]

    h.clear_events()
    night2 = NIGHT + timedelta(days=1)
    with pytest.raises(AuditFailed) as nightly_failed:
        h.run_at(night2, checkpoint=checkpoint)
    nightly = [r for r in h.runs() if r.get("Kind") == "nightly"][-1]
    assert str(nightly_failed.value).startswith(expected.format(what="audit run", run=nightly["RunId"]))
    assert nightly["Outcome"] == "failed" and detail in nightly["Error"]
    assert [(s["Kind"], s["Outcome"]) for s in h.run_summaries()] == [("nightly", "failed")]

    BROKEN[0] = False
    h.run_at(night2 + timedelta(hours=1), checkpoint=None)  # the lease was kept for a resume: the same run, finished
    resumed = [r for r in h.runs() if r.get("Kind") == "nightly"][-1]
    assert resumed["RunId"] == nightly["RunId"] and resumed["Outcome"] == "complete"


class Killed(BaseException):
    """A run killed where it stands (not an ``Exception``: nothing on the way may swallow it)."""


def lease_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name == "lease" and t.is_alive()}


@pytest.mark.parametrize("where", ["pipeline", "body"])
def test_a_run_killed_as_its_store_goes_down_stops_its_heartbeat_and_still_says_it_failed(
    make_arm, harness_factory, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    """The store refuses every write from the moment the run is killed (as a dying host's would): the
    run's record cannot be written (a ``StoreError``), yet its failed RunSummary is logged, the caller
    gets the run's own failure, and the lease heartbeat is stopped before the run's store is closed
    (it used to run on and meet the closed transport minutes later: an unhandled thread exception)."""
    tenant = Tenant()
    tenant.add_subscription(SUB, display_name="prod").add_site("rg-a", "app", **REQ)
    h: AuditHarness = harness_factory(make_arm(tenant))
    h.run_at(NIGHT)
    proxy = h.service_clock()
    h.apply_env(AUDIT_RETRY_TOTAL="0")

    def kill(stage: str, _sub: str = "") -> list[object]:
        proxy.faults.add(FaultRule(Status(503), method="*"))
        raise Killed(f"killed at {stage}")

    if where == "body":
        monkeypatch.setattr(audit, "load_exemptions", lambda store: kill("exemptions"))
    expected = {"pipeline": AuditFailed, "body": Killed}[where]
    before = lease_threads()
    h.clear_events()
    with pytest.raises(expected, match="killed at "):
        h.run_at(NIGHT + timedelta(days=1), checkpoint=kill if where == "pipeline" else None)
    assert lease_threads() <= before, "the heartbeat outlived its run"
    assert [(s["Kind"], s["Outcome"]) for s in h.run_summaries()] == [("nightly", "failed")]
