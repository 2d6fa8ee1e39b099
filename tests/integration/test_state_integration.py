"""New failures over consecutive runs of the timer: state, events, partial runs, crashes, overlap."""

from __future__ import annotations

import threading
import time

import pytest

from shared.azure.store import TableStore
from tests.emulators.faults import FaultRule, Latency
from tests.emulators.tenant import Tenant
from tests.harness import AuditHarness

SUB1 = "11111111-1111-4111-8111-111111111111"
SUB2 = "22222222-2222-4222-8222-222222222222"


def build_tenant() -> tuple[Tenant, dict]:
    tenant = Tenant()
    s1 = tenant.add_subscription(SUB1, display_name="prod")
    s2 = tenant.add_subscription(SUB2, display_name="dev")
    req = {"client_cert_enabled": True, "client_cert_mode": "Required"}
    sites = {
        "pass_to_fail": s1.add_site("rg-web", "pass-to-fail", **req),
        "fail_recased": s1.add_site("rg-web", "fail-recased", client_cert_enabled=False),
        "to_delete": s1.add_site("rg-web", "to-delete", client_cert_enabled=False),
        "warn_to_fail": s1.add_site("rg-api", "warn-to-fail", exclusion_paths="/health", **req),
        "stable_pass": s1.add_site("rg-api", "stable-pass", kind="functionapp,linux", **req),
        "with_slot": s1.add_site("rg-api", "with-slot", **req),
        "dev_fail": s2.add_site("rg-dev", "dev-fail", client_cert_enabled=True, client_cert_mode="Optional"),
        "dev_pass": s2.add_site("rg-dev", "dev-pass", **req),
    }
    sites["slot"] = sites["with_slot"].add_slot("staging", **req)
    return tenant, sites


def new_failure_ids(rows: dict) -> set[str]:
    return {k for k, r in rows.items() if r.get("NewFailure")}


def test_second_run_flags_exactly_the_new_failures(make_arm, harness_factory) -> None:
    tenant, sites = build_tenant()
    arm = make_arm(tenant)
    h: AuditHarness = harness_factory(arm)
    h.run_timer()
    first = h.rows_by_id()
    assert not new_failure_ids(first), "the first run is a baseline: nothing pages"
    assert not h.new_failure_events()
    assert h.runs()[-1]["Baseline"] is True

    # changes between the runs
    sites["pass_to_fail"].update(client_cert_mode="Optional")
    sites["warn_to_fail"].update(client_cert_enabled=False)
    sites["slot"].update(client_cert_mode="OptionalInteractiveUser")
    sites["fail_recased"].id_casing = lambda cid, kind: cid.replace("rg-web", "RG-WEB").replace("fail-recased", "FAIL-Recased")
    tenant.subscriptions[0].remove_site(sites["to_delete"])
    new_app = tenant.subscriptions[0].add_site("rg-new", "brand-new", client_cert_enabled=True, client_cert_mode="Optional")
    h.clear_events()
    h.run_timer()

    second = h.rows_by_id()
    expected_new = {s.key for s in (sites["pass_to_fail"], sites["warn_to_fail"], sites["slot"], new_app)}
    assert new_failure_ids(second) == expected_new
    events = h.new_failure_events()
    assert sorted(e["ResourceId"].lower() for e in events) == sorted(expected_new)
    for event in events:
        assert set(event) >= {"ResourceId", "SubscriptionId", "ResourceGroup", "AppName", "Slot", "Kind",
                              "ClientCertMode", "Reason", "RunId"}
        assert event["RunId"] == h.last_run_id()
    slot_event = next(e for e in events if e["Slot"])
    assert slot_event["Slot"] == "staging" and slot_event["ClientCertMode"] == "OptionalInteractiveUser"

    # the re-cased failing app is the same resource: still failing, not new, streak kept
    recased = second[sites["fail_recased"].key]
    assert recased["ResourceId"] != sites["fail_recased"].id and recased["NewFailure"] is False
    assert recased["PreviousStatus"] == "FAIL"
    assert recased["FirstFailedAt"] == first[sites["fail_recased"].key]["FirstFailedAt"]
    assert second[sites["warn_to_fail"].key]["PreviousStatus"] == "WARN"
    assert second[sites["pass_to_fail"].key]["PreviousStatus"] == "PASS"

    # the deleted app is retired from the last-known state and recorded as gone
    state = h.state()
    assert state[sites["to_delete"].key]["Gone"] is True
    assert sites["to_delete"].key not in second
    assert len(h.run_summaries()) == 1 and h.run_summaries()[0]["NewFailures"] == 4

    # third run, nothing changed: nothing new
    h.clear_events()
    h.run_timer()
    assert not new_failure_ids(h.rows_by_id()) and not h.new_failure_events()


def test_unreadable_subscription_keeps_its_state(make_arm, harness_factory) -> None:
    tenant, sites = build_tenant()
    arm = make_arm(tenant)
    h: AuditHarness = harness_factory(arm)
    h.run_timer()
    before = h.state()

    rule = arm.faults.forbid_subscription(SUB2)
    h.run_timer()
    rows = h.rows_by_id()
    assert rows[f"/subscriptions/{SUB2}"]["Status"] == "ERROR"
    assert not any(r["SubscriptionId"] == SUB2 and r["Status"] != "ERROR" for r in rows.values())
    after_403 = h.state()
    for key, row in before.items():
        if row["SubscriptionId"] == SUB2:
            assert after_403[key]["LastRunId"] == row["LastRunId"], "state of an unreadable subscription is untouched"
            assert after_403[key]["Gone"] is False

    arm.faults.remove(rule)
    h.clear_events()
    h.run_timer()
    rows = h.rows_by_id()
    assert rows[sites["dev_fail"].key]["Status"] == "FAIL"
    assert not new_failure_ids(rows), "a subscription that comes back is not a wave of new failures"
    assert not h.new_failure_events()


def test_crash_between_rows_and_state_then_rerun(make_arm, harness_factory, monkeypatch) -> None:
    tenant, sites = build_tenant()
    arm = make_arm(tenant)
    h: AuditHarness = harness_factory(arm)
    h.run_timer()  # baseline
    sites["pass_to_fail"].update(client_cert_mode="Optional")
    sites["dev_pass"].update(client_cert_enabled=False)
    h.clear_events()

    real = TableStore.write_state
    crashed = []

    def crash_on_state(self, entities):  # type: ignore[no-untyped-def]
        if not crashed:
            crashed.append(True)
            raise RuntimeError("injected crash after writing rows, before advancing state")
        return real(self, entities)

    monkeypatch.setattr(TableStore, "write_state", crash_on_state)
    with pytest.raises(RuntimeError, match="injected crash"):
        h.run_timer()
    crashed_run = h.runs()[-1]
    assert crashed_run["Outcome"] == "failed"
    assert [s["Outcome"] for s in h.run_summaries()] == ["failed"]

    h.run_timer()  # the retry resumes the same run
    runs = h.runs()
    assert len(runs) == 2 and runs[-1]["RunId"] == crashed_run["RunId"]
    assert runs[-1]["Outcome"] == "complete" and runs[-1]["Attempts"] == 2
    rows = h.rows_by_id(crashed_run["RunId"])  # no duplicates (asserted inside), none lost:
    assert {k for k, r in rows.items()} == set(tenant.expected())
    expected_new = {sites["pass_to_fail"].key, sites["dev_pass"].key}
    assert new_failure_ids(rows) == expected_new
    events = h.new_failure_events()
    assert sorted(e["ResourceId"].lower() for e in events) == sorted(expected_new), "each new failure alerted once"


def test_overlapping_runs_do_not_race(make_arm, harness_factory) -> None:
    tenant, sites = build_tenant()
    arm = make_arm(tenant)
    h: AuditHarness = harness_factory(arm)
    h.run_timer()  # baseline
    sites["pass_to_fail"].update(client_cert_mode="Optional")
    h.clear_events()
    arm.faults.add(FaultRule(Latency(1.5), path=r"/providers/Microsoft\.Web/sites$"))

    errors: list[BaseException] = []

    def first_run() -> None:
        try:
            h.run_timer()
        except BaseException as exc:  # pragma: no cover - surfaced below
            errors.append(exc)

    thread = threading.Thread(target=first_run)
    thread.start()
    time.sleep(0.7)  # the first run holds the lease and waits on ARM
    h.run_timer()  # overlapping: must skip, not race
    thread.join(timeout=60)
    assert not errors
    runs = h.runs()
    assert len(runs) == 2, "the overlapping invocation did not start a run"
    events = h.new_failure_events()
    assert [e["ResourceId"].lower() for e in events] == [sites["pass_to_fail"].key]
    assert len(h.run_summaries()) == 1
    h.clear_events()
    h.run_timer()  # and the lease was released: the next run proceeds
    assert len(h.runs()) == 3
