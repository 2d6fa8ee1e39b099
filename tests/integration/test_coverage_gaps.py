"""Lost access never costs coverage: silence is not absence, a vanished subscription stays visible,
and one row the store refuses never fails the run."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from shared.cli import main
from tests.emulators.faults import FaultRule, Latency, Status
from tests.emulators.proxy import FaultProxy
from tests.emulators.tenant import Tenant
from tests.harness import AuditHarness

SUB_A = "aaaaaaaa-0000-4000-8000-00000000000a"
SUB_B = "bbbbbbbb-0000-4000-8000-00000000000b"
REQ = {"client_cert_enabled": True, "client_cert_mode": "Required"}
NIGHT1 = datetime(2026, 11, 2, 2, 0, tzinfo=UTC)


def two_subscriptions() -> tuple[Tenant, dict]:
    tenant = Tenant()
    a = tenant.add_subscription(SUB_A, display_name="prod")
    b = tenant.add_subscription(SUB_B, display_name="legacy")
    sites = {
        "a-pass": a.add_site("rg-a", "a-pass", **REQ),
        "b-fail": b.add_site("rg-b", "b-fail", client_cert_enabled=False),
        "b-pass": b.add_site("rg-b", "b-pass", **REQ),
    }
    return tenant, sites


def live_state(h: AuditHarness, subscription: str) -> set[str]:
    return {k for k, r in h.state().items() if r["SubscriptionId"] == subscription and not r["Gone"]}


# -- Resource Graph: silence is not absence ---------------------------------------------------------
def test_resource_graph_silence_is_confirmed_with_arm_before_anything_is_retired(
    make_arm, harness_factory
) -> None:
    tenant, sites = two_subscriptions()
    arm = make_arm(tenant)
    h: AuditHarness = harness_factory(arm)
    h.apply_env(AUDIT_INVENTORY_SOURCE="resourcegraph")
    h.run_at(NIGHT1)
    known = live_state(h, SUB_B)
    assert known == {sites["b-fail"].key, sites["b-pass"].key}

    # Resource Graph stops returning B's rows (no error), but ARM still lists its sites.
    arm.resource_graph_hidden.add(SUB_B)
    h.run_at(NIGHT1 + timedelta(days=1))
    rows = h.rows_by_id()
    error = rows[f"/subscriptions/{SUB_B}"]
    assert error["Status"] == "ERROR" and "ARM lists some" in error["Reason"]
    assert live_state(h, SUB_B) == known, "nothing retired as gone"
    assert h.runs()[-1]["Outcome"] == "partial"

    # ... and the identity cannot read B through ARM either: the confirmation is refused.
    rule = arm.faults.forbid_subscription(SUB_B)
    h.run_at(NIGHT1 + timedelta(days=2))
    error = h.rows_by_id()[f"/subscriptions/{SUB_B}"]
    assert error["Status"] == "ERROR" and "403" in error["Reason"]
    assert live_state(h, SUB_B) == known

    # Access comes back: no wave of "new" failures.
    arm.faults.remove(rule)
    arm.resource_graph_hidden.clear()
    h.clear_events()
    h.run_at(NIGHT1 + timedelta(days=3))
    assert not h.new_failure_events()
    assert h.rows_by_id()[sites["b-fail"].key]["NewFailure"] is False

    # A subscription that really is empty now (ARM agrees) retires its resources.
    for site in list(tenant.subscriptions[1].sites):
        tenant.subscriptions[1].remove_site(site)
    h.run_at(NIGHT1 + timedelta(days=4))
    assert live_state(h, SUB_B) == set()
    assert h.runs()[-1]["Outcome"] == "complete"


# -- A subscription that disappears is a visible gap -------------------------------------------------
def test_vanished_subscription_is_an_error_row_until_retired(make_arm, harness_factory, capsys) -> None:
    tenant, _ = two_subscriptions()
    arm = make_arm(tenant)
    h: AuditHarness = harness_factory(arm)
    h.run_at(NIGHT1)
    known = live_state(h, SUB_B)

    tenant.subscriptions[1].set_state("Disabled")  # the list skips it from now on
    h.clear_events()
    h.run_at(NIGHT1 + timedelta(days=1))
    rows = h.rows_by_id()
    error = rows[f"/subscriptions/{SUB_B}"]
    assert error["Status"] == "ERROR" and "no longer visible to the auditor" in error["Reason"]
    assert error["SubscriptionName"] == "legacy"
    assert not any(r["SubscriptionId"] == SUB_B and r["Status"] != "ERROR" for r in rows.values())
    assert live_state(h, SUB_B) == known, "its state is kept"
    run = h.runs()[-1]
    assert run["Outcome"] == "partial" and run["SubscriptionsFailed"] == 1
    assert h.run_summaries()[-1]["SubscriptionsFailed"] == 1

    # It stays visible night after night ...
    h.run_at(NIGHT1 + timedelta(days=2))
    assert h.rows_by_id()[f"/subscriptions/{SUB_B}"]["Status"] == "ERROR"

    # ... until the security team retires it.
    capsys.readouterr()
    assert main(["subscriptions", "list"]) == 0
    assert SUB_B in capsys.readouterr().out
    assert main(["subscriptions", "retire", SUB_B]) == 0
    h.run_at(NIGHT1 + timedelta(days=3))
    assert f"/subscriptions/{SUB_B}" not in h.rows_by_id()
    assert h.runs()[-1]["Outcome"] == "complete"
    assert main(["subscriptions", "retire", SUB_B]) == 1, "retiring an unknown subscription says so"


def test_vanished_subscription_ages_out_after_the_retention_period(make_arm, harness_factory) -> None:
    tenant, _ = two_subscriptions()
    h: AuditHarness = harness_factory(make_arm(tenant))
    h.apply_env(AUDIT_RETENTION_DAYS="30")
    h.run_at(NIGHT1)
    tenant.subscriptions[1].set_state("Disabled")
    h.run_at(NIGHT1 + timedelta(days=29))
    assert h.rows_by_id()[f"/subscriptions/{SUB_B}"]["Status"] == "ERROR"
    h.run_at(NIGHT1 + timedelta(days=31))
    assert f"/subscriptions/{SUB_B}" not in h.rows_by_id()


def test_configured_subscriptions_are_the_scope(make_arm, harness_factory) -> None:
    tenant, _ = two_subscriptions()
    h: AuditHarness = harness_factory(make_arm(tenant))
    h.run_at(NIGHT1)
    h.apply_env(AUDIT_SUBSCRIPTIONS=SUB_A)  # B taken out of scope on purpose: not a gap
    h.run_at(NIGHT1 + timedelta(days=1))
    assert {r["SubscriptionId"] for r in h.rows_by_id().values()} == {SUB_A}
    assert h.runs()[-1]["Outcome"] == "complete"


# -- One rejected row never fails the run ---------------------------------------------------------
def test_non_bmp_exclusion_paths_far_past_the_limit_are_cut_by_utf16(make_arm, harness_factory) -> None:
    tenant = Tenant()
    sub = tenant.add_subscription(SUB_A)
    # 1,500 distinct paths of 45 characters (85 UTF-16 code units): ~69,000 characters, ~129,000
    # code units, 258 KB as UTF-16, where a property holds 64 KiB.
    huge = ";".join(f"/{i:04d}" + "\U0001f512" * 40 for i in range(1500))
    app = sub.add_site("rg-a", "emoji-paths", exclusion_paths=huge, **REQ)
    other = sub.add_site("rg-a", "neighbour", **REQ)
    h: AuditHarness = harness_factory(make_arm(tenant))
    h.run_timer()
    rows = h.rows_by_id()
    row = rows[app.key]
    assert row["Status"] == "WARN" and "truncated" in row["ExclusionPaths"]
    assert len(row["ExclusionPaths"].encode("utf-16-le")) <= 64 * 1024
    assert "\ufffd" not in row["ExclusionPaths"], "never cut inside a surrogate pair"
    assert rows[other.key]["Status"] == "PASS"
    assert h.runs()[-1]["Outcome"] == "complete"


def test_a_row_the_store_refuses_becomes_an_error_row_and_the_rest_is_stored(
    make_arm, harness_factory, azurite, tls
) -> None:
    tenant = Tenant()
    sub = tenant.add_subscription(SUB_A)
    apps = [sub.add_site("rg-a", f"app-{i}", **REQ) for i in range(6)]
    victim = apps[3]
    h: AuditHarness = harness_factory(make_arm(tenant))
    with FaultProxy(azurite.port, tls) as proxy:
        # The results transaction is refused, then the victim's own row (and only its first write).
        results = h.tables["AUDIT_RESULTS_TABLE"]
        proxy.faults.add(FaultRule(Status(400, code="InvalidInput"), method="POST", path=r"/\$batch$", times=1))
        proxy.faults.add(
            FaultRule(Status(400, code="PropertyValueTooLarge"), method="PUT",
                      path=rf"/{results}\(.*{victim.name}'\)$", times=1)
        )
        h.apply_env(AUDIT_TABLE_SERVICE_URI=proxy.url())
        h.run_timer()
    rows = h.rows_by_id()
    assert set(rows) == {a.key for a in apps}, "every resource keeps a row"
    assert rows[victim.key]["Status"] == "ERROR" and "refused" in rows[victim.key]["Reason"]
    assert "PASS" in rows[victim.key]["Reason"], "the ERROR row says what the verdict was"
    assert all(rows[a.key]["Status"] == "PASS" for a in apps if a is not victim)
    assert h.runs()[-1]["Outcome"] in ("complete", "partial")


# -- Overlapping runs: the lease renews itself, and a run that loses it stops writing -------------
def _slow_tenant() -> tuple[Tenant, dict]:
    tenant, sites = two_subscriptions()
    c = tenant.add_subscription("cccccccc-0000-4000-8000-00000000000c", display_name="more")
    sites["c-pass"] = c.add_site("rg-c", "c-pass", **REQ)
    return tenant, sites


def test_heartbeat_keeps_the_lease_through_a_slow_run(make_arm, harness_factory, monkeypatch) -> None:
    import threading
    import time

    from shared.core import config

    monkeypatch.setattr(config, "LEASE_FLOOR_SECONDS", 1)
    tenant, sites = _slow_tenant()
    arm = make_arm(tenant)
    h: AuditHarness = harness_factory(arm)
    h.apply_env(AUDIT_LEASE_SECONDS="2", AUDIT_CONCURRENCY="1")
    h.run_timer()  # baseline
    sites["a-pass"].update(client_cert_mode="Optional")
    arm.faults.add(FaultRule(Latency(1.5), path=r"/providers/Microsoft\.Web/sites$"))  # 3 × 1.5 s > the lease
    h.clear_events()
    errors: list[BaseException] = []

    def first() -> None:
        try:
            h.run_timer()
        except BaseException as exc:  # pragma: no cover - surfaced below
            errors.append(exc)

    thread = threading.Thread(target=first)
    thread.start()
    time.sleep(3.2)  # past the first lease's expiry: only the heartbeat keeps it
    h.run_timer()  # overlapping: must skip
    thread.join(timeout=60)
    assert not errors
    assert len(h.runs()) == 2 and h.runs()[-1]["Outcome"] == "complete"
    assert [e["ResourceId"].lower() for e in h.new_failure_events()] == [sites["a-pass"].key]
    assert any("skipped" in r.getMessage() for r in h.host.kept)


def test_a_run_that_loses_its_lease_stops_writing(make_arm, harness_factory, azurite, tls, monkeypatch) -> None:
    import threading
    import time

    from shared.core import config

    monkeypatch.setattr(config, "LEASE_FLOOR_SECONDS", 1)
    tenant, sites = _slow_tenant()
    arm = make_arm(tenant)
    h: AuditHarness = harness_factory(arm)
    h.apply_env(AUDIT_LEASE_SECONDS="2")
    h.run_timer()  # baseline (the lease entity exists from here on)
    sites["a-pass"].update(client_cert_mode="Optional")
    sites["c-pass"].update(client_cert_enabled=False)
    expected_new = {sites["a-pass"].key, sites["c-pass"].key}
    arm.faults.add(FaultRule(Latency(3.0), path=rf"/subscriptions/{SUB_A}/providers/Microsoft\.Web/sites$", times=1))
    h.clear_events()
    errors: list[BaseException] = []
    runs = h.tables["AUDIT_RUNS_TABLE"]
    with FaultProxy(azurite.port, tls) as proxy:
        # Run A renews its lease through this proxy, which fails every renewal after its first two
        # lease writes (acquire, RunId): A's lease lapses while its ARM read is slow.
        proxy.faults.add(
            FaultRule(Status(503), method="PUT", path=rf"/{runs}\(PartitionKey='lease',RowKey='audit'\)$", skip=2)
        )
        h.apply_env(AUDIT_LEASE_SECONDS="2", AUDIT_TABLE_SERVICE_URI=proxy.url(), AUDIT_RETRY_TOTAL="0")

        def run_a() -> None:
            try:
                h.run_timer()
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=run_a)
        thread.start()
        time.sleep(0.8)  # A has read its settings
        h.apply_env(AUDIT_LEASE_SECONDS="2")  # B talks to the store directly
        # B takes over (and resumes A's RunId) once A's lease has expired by the service's clock, whose
        # Date has whole seconds: until then it skips (A's acquisition may come late on a busy machine)
        deadline = time.monotonic() + 20
        time.sleep(1.7)
        while time.monotonic() < deadline:
            h.run_timer()
            if h.runs()[-1]["Outcome"] == "complete":
                break
            time.sleep(0.5)
        thread.join(timeout=60)
    assert errors and "lease" in str(errors[0]), errors
    runs_now = h.runs()
    assert len(runs_now) == 2 and runs_now[-1]["Outcome"] == "complete", "B's record, not A's failure"
    rows = h.rows_by_id()  # asserts one row per resource
    assert set(rows) == set(tenant.expected())
    events = [e["ResourceId"].lower() for e in h.new_failure_events()]
    assert sorted(events) == sorted(expected_new), "each new failure alerted once, by B"
    summaries = h.run_summaries()
    assert sorted(s["Outcome"] for s in summaries) == ["complete", "failed"]
