"""The partition layout end to end: what the timer function really stores, with the partition size
shrunk to 20 rows so that a few dozen sites exercise packed results partitions, state shards,
re-sharding, the move from the older one-partition-per-subscription layout, and a crash between
state batches.

``shared.core.layout.PARTITION_ROWS`` is read at call time everywhere (``layout.state_shards`` reads the
module global; ``PackedWriter`` reads it when an ``AuditRun`` is built, i.e. during the run), so
patching the module attribute is enough.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError

from shared.azure.store import TableStore
from shared.core import layout
from tests.emulators.tenant import Site, Subscription, Tenant
from tests.harness import AuditHarness

ROWS = 20  # PARTITION_ROWS for these tests
REQUIRED = {"client_cert_enabled": True, "client_cert_mode": "Required"}
FAILING = {"client_cert_enabled": True, "client_cert_mode": "Optional"}


@pytest.fixture(autouse=True)
def small_partitions(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(layout, "PARTITION_ROWS", ROWS)


def sub_id(first: str, n: int) -> str:
    """A subscription id starting with ``first`` (which picks its state bucket)."""
    return f"{first}{n:07x}-0000-4000-8000-000000000000"


def add_sites(
    sub: Subscription, count: int, *, start: int = 0, failing_every: int = 0, rg: str = "rg-app"
) -> list[Site]:
    sites = []
    for i in range(start, start + count):
        fails = failing_every and i % failing_every == 0
        sites.append(sub.add_site(rg, f"app-{i:04d}", **(FAILING if fails else REQUIRED)))
    return sites


def state_rows(h: AuditHarness) -> list[dict[str, Any]]:
    return h.table("AUDIT_LATEST_TABLE")


def assert_no_duplicate_state(rows: list[dict[str, Any]]) -> None:
    keys = Counter(r["RowKey"] for r in rows)
    assert not [k for k, n in keys.items() if n > 1], "a resource has two state rows"


def partitions_of(rows: list[dict[str, Any]], subscription: str) -> Counter[str]:
    return Counter(r["PartitionKey"] for r in rows if r["SubscriptionId"].lower() == subscription.lower())


def expected_partitions(subscription: str, size: int) -> set[str]:
    """Written out here, not computed with the product's own helpers."""
    if size < ROWS:
        return {f"bucket-{subscription[0]}"}
    return {f"{subscription}_{k:04d}" for k in range(size // ROWS)}


def assert_layout(h: AuditHarness, sizes: dict[str, int]) -> list[dict[str, Any]]:
    """Every live state row of each subscription sits in tonight's layout for its size."""
    rows = state_rows(h)
    assert_no_duplicate_state(rows)
    for subscription, size in sizes.items():
        live = Counter(r["PartitionKey"] for r in rows if r["SubscriptionId"].lower() == subscription and not r["Gone"])
        assert sum(live.values()) == size
        assert set(live) == expected_partitions(subscription, size), (subscription, size, live)
    return rows


def result_partitions(h: AuditHarness, run_id: str) -> Counter[str]:
    return Counter(r["PartitionKey"] for r in h.rows(run_id))


def new_failures(h: AuditHarness) -> set[str]:
    return {k for k, r in h.rows_by_id().items() if r["NewFailure"]}


# -- a. results partitions ------------------------------------------------------------------------
def test_results_are_packed_into_numbered_partitions_of_bounded_size(make_arm, harness_factory) -> None:
    tenant = Tenant()
    subs = [tenant.add_subscription(sub_id("ab"[k % 2], k)) for k in range(20)]
    for k, sub in enumerate(subs):
        sites = add_sites(sub, 3 + k % 2, failing_every=2)
        if k % 2 == 0:
            sites[0].add_slot("staging", **REQUIRED)  # 4 resources each: 3 sites and a slot, or 4 sites
    total = len(tenant.expected())
    assert total == 80
    h: AuditHarness = harness_factory(make_arm(tenant))

    for _ in range(2):  # the baseline, then a run that reads state and writes it back in place
        h.run_timer()
        run = h.runs()[-1]
        assert run["Outcome"] == "complete"
        rows = h.rows_by_id()
        assert set(rows) == set(tenant.expected())
        sizes = result_partitions(h, run["RunId"])
        assert sorted(sizes) == [f"{run['RunId']}_{i:05d}" for i in range(math.ceil(total / ROWS))]
        assert all(n <= ROWS for n in sizes.values())
        assert list(sizes.values()) == [ROWS] * (total // ROWS), "partitions are filled before the next one opens"
        owners: dict[str, set[str]] = defaultdict(set)
        for row in rows.values():
            owners[row["PartitionKey"]].add(row["SubscriptionId"].lower())
        assert all(len(subs_in) >= 4 for subs_in in owners.values()), "subscriptions share partitions"

        # Transactions: at most ⌈rows/100⌉ per partition written (results and state), nothing else.
        state_sizes = Counter(r["PartitionKey"] for r in state_rows(h))
        assert set(state_sizes) == {"bucket-a", "bucket-b"}
        bound = sum(math.ceil(n / 100) for n in sizes.values()) + sum(math.ceil(n / 100) for n in state_sizes.values())
        assert bound == 4 + 2
        assert run["Transactions"] <= bound, run["Transactions"]
        assert run["Partitions"] == len(sizes) + len(state_sizes) == 6
        assert run["Transactions"] < len(subs) * 2 / 5, "one partial transaction per subscription and table is gone"
        assert run["Rows"] == total


def test_waiting_subscriptions_past_the_memory_cap_send_partial_batches_early(
    make_arm, harness_factory, monkeypatch
) -> None:
    # Small subscriptions wait (findings and prior state in memory) until their shared partitions
    # fill; past MAX_HELD_RESOURCES the partial batches go out early. With a cap of 10 resources,
    # 20 subscriptions of 4 force early flushes: more (partial) transactions, the same rows, state
    # and alerts as with the default cap.
    from shared.run import pipeline as audit

    def run_twice(cap: int, firsts: str) -> tuple[dict[str, Any], set[str]]:
        monkeypatch.setattr(audit, "MAX_HELD_RESOURCES", cap)
        tenant = Tenant()
        subs = [tenant.add_subscription(sub_id(firsts[k % 2], k)) for k in range(20)]
        sites = [site for sub in subs for site in add_sites(sub, 4)]
        h: AuditHarness = harness_factory(make_arm(tenant))
        h.run_timer()
        for site in sites[::3]:
            site.update(**FAILING)
        h.clear_events()
        h.run_timer()
        run = h.runs()[-1]
        assert run["Outcome"] == "complete"
        assert set(h.rows_by_id()) == set(tenant.expected())
        state = state_rows(h)
        assert_no_duplicate_state(state)
        assert {r["LastRunId"] for r in state} == {run["RunId"]}
        events = Counter(e["ResourceId"].lower() for e in h.new_failure_events())
        assert set(events) == {s.key for s in sites[::3]} and set(events.values()) == {1}
        return run, {key.split("/", 3)[3] for key in new_failures(h)}  # without the subscription

    default, default_new = run_twice(audit.MAX_HELD_RESOURCES, "cd")
    capped, capped_new = run_twice(10, "ab")
    assert capped_new == default_new
    # Default: 4 results partitions, 2 buckets, and one alert mark per subscription.
    assert default["Transactions"] == 4 + 2 + 20
    assert capped["Transactions"] > default["Transactions"], "the cap sent partial batches early"


# -- b. state layout ------------------------------------------------------------------------------
def test_state_layout_buckets_and_shards(make_arm, harness_factory) -> None:
    tenant = Tenant()
    sizes = {}
    for first, n, count in (
        ("1", 1, 5),
        ("1", 2, ROWS - 1),
        ("2", 3, ROWS),
        ("3", 4, 2 * ROWS + 7),
        ("4", 5, 3 * ROWS),
    ):
        sub = tenant.add_subscription(sub_id(first, n))
        sites = add_sites(sub, count - 2, failing_every=3)
        sites[1].add_slot("blue", **FAILING)
        sites[2].add_slot("green", **REQUIRED)  # slots count as resources of the subscription
        sizes[sub.subscription_id] = count
    h: AuditHarness = harness_factory(make_arm(tenant))
    h.run_timer()

    rows = assert_layout(h, sizes)
    assert len(rows) == sum(sizes.values()) == len(tenant.expected())
    assert partitions_of(rows, sub_id("1", 1)) + partitions_of(rows, sub_id("1", 2)) == Counter(
        {"bucket-1": 5 + ROWS - 1}
    ), "two small subscriptions with the same first character share one bucket"
    assert set(partitions_of(rows, sub_id("2", 3))) == {f"{sub_id('2', 3)}_0000"}, "exactly PARTITION_ROWS: one shard"
    assert len(partitions_of(rows, sub_id("3", 4))) == 2
    assert len(partitions_of(rows, sub_id("4", 5))) == 3
    assert {r["RowKey"] for r in rows} == {k.replace("/", "|") for k in tenant.expected()}

    h.run_timer()  # a second run finds everything where it belongs: nothing moves, nothing doubles
    again = assert_layout(h, sizes)
    assert {(r["PartitionKey"], r["RowKey"]) for r in again} == {(r["PartitionKey"], r["RowKey"]) for r in rows}
    assert not new_failures(h)


# -- c. moves without false alarms ----------------------------------------------------------------
def test_previous_one_partition_per_subscription_layout_is_migrated(make_arm, harness_factory) -> None:
    tenant = Tenant()
    small = tenant.add_subscription(sub_id("5", 1))
    large = tenant.add_subscription(sub_id("6", 2))
    add_sites(small, 6, failing_every=3)
    large_sites = add_sites(large, 2 * ROWS + 5, failing_every=4)
    sizes = {small.subscription_id: 6, large.subscription_id: 2 * ROWS + 5}
    h: AuditHarness = harness_factory(make_arm(tenant))
    h.run_timer()  # baseline
    first_state = {r["RowKey"]: r for r in state_rows(h)}

    # Rewrite the state as the previous version stored it: one partition per subscription.
    with h.service() as svc:
        latest = svc.get_table_client(h.tables["AUDIT_LATEST_TABLE"])
        for row in list(latest.list_entities()):
            legacy = dict(row)
            legacy["PartitionKey"] = row["SubscriptionId"].lower()
            latest.upsert_entity(legacy)
            latest.delete_entity(row["PartitionKey"], row["RowKey"])
    legacy_rows = state_rows(h)
    assert {r["PartitionKey"] for r in legacy_rows} == set(sizes)
    assert len(legacy_rows) == len(first_state)

    flipped = next(s for s in large_sites if s.expected_status == "PASS")
    flipped.update(client_cert_mode="Optional")
    h.clear_events()
    h.run_timer()

    assert new_failures(h) == {flipped.key}, "the moved state is read: only the real change is new"
    assert [e["ResourceId"].lower() for e in h.new_failure_events()] == [flipped.key]
    rows = assert_layout(h, sizes)
    assert not {r["PartitionKey"] for r in rows} & set(sizes), "the legacy copies are gone"
    assert len(rows) == len(first_state)
    for row in rows:
        if row["Status"] == "FAIL" and row["RowKey"] in first_state and first_state[row["RowKey"]]["Status"] == "FAIL":
            assert row["FirstFailedAt"] == first_state[row["RowKey"]]["FirstFailedAt"], "failure streaks carried over"

    h.clear_events()
    h.run_timer()  # settled: nothing new, nothing moves
    assert not new_failures(h) and not h.new_failure_events()
    assert {(r["PartitionKey"], r["RowKey"]) for r in assert_layout(h, sizes)} == {
        (r["PartitionKey"], r["RowKey"]) for r in rows
    }


def test_interrupted_move_leaves_copies_that_the_next_run_resolves(make_arm, harness_factory, monkeypatch) -> None:
    """Moved rows whose old copy could not be deleted: the newer copy wins, the next run tidies up."""
    tenant = Tenant()
    sub = tenant.add_subscription(sub_id("c", 1))
    sites = add_sites(sub, 30, failing_every=5)  # 30 resources: one shard
    h: AuditHarness = harness_factory(make_arm(tenant))
    h.run_timer()  # baseline
    with h.service() as svc:  # back to the previous layout
        latest = svc.get_table_client(h.tables["AUDIT_LATEST_TABLE"])
        for row in list(latest.list_entities()):
            latest.upsert_entity({**row, "PartitionKey": sub.subscription_id})
            latest.delete_entity(row["PartitionKey"], row["RowKey"])

    real_delete = TableStore.delete_state_copies

    def deletes_fail(self, copies):  # type: ignore[no-untyped-def]
        raise HttpResponseError(message="injected: delete of the old copies failed")

    monkeypatch.setattr(TableStore, "delete_state_copies", deletes_fail)
    flipped = sites[1]
    flipped.update(client_cert_mode="Optional")  # the new copy says FAIL, the old one PASS
    h.clear_events()
    h.run_timer()
    assert h.runs()[-1]["Outcome"] == "complete", "a failed tidy-up does not fail the run"
    assert new_failures(h) == {flipped.key}
    copies = Counter(r["PartitionKey"] for r in state_rows(h))
    assert copies == Counter({sub.subscription_id: 30, f"{sub.subscription_id}_0000": 30})

    monkeypatch.setattr(TableStore, "delete_state_copies", real_delete)
    h.clear_events()
    h.run_timer()
    assert not new_failures(h) and not h.new_failure_events(), "the newer copy (FAIL) is the last-known state"
    assert h.rows_by_id()[flipped.key]["PreviousStatus"] == "FAIL"
    rows = assert_layout(h, {sub.subscription_id: 30})
    assert len(rows) == 30, "the old copies are gone"


def test_growing_past_the_threshold_and_shrinking_back_raises_no_false_alarm(make_arm, harness_factory) -> None:
    tenant = Tenant()
    grows = tenant.add_subscription(sub_id("7", 1))
    steady = tenant.add_subscription(sub_id("7", 2))  # shares grows' bucket the whole time
    original = add_sites(grows, 8, failing_every=2)  # 4 failing from the start
    add_sites(steady, 5, failing_every=2)
    h: AuditHarness = harness_factory(make_arm(tenant))
    gid, sid = grows.subscription_id, steady.subscription_id

    def run(sizes: dict[str, int]) -> list[dict[str, Any]]:
        h.clear_events()
        h.run_timer()
        assert h.runs()[-1]["Outcome"] == "complete"
        return assert_layout(h, sizes)

    baseline = {r["RowKey"]: r for r in run({gid: 8, sid: 5})}
    streaks = {k: r["FirstFailedAt"] for k, r in baseline.items() if r["Status"] == "FAIL"}
    assert len(streaks) == 4 + 3

    def assert_streaks_kept(rows: list[dict[str, Any]]) -> None:
        by_key = {r["RowKey"]: r for r in rows}
        for key, first_failed in streaks.items():
            assert by_key[key]["FirstFailedAt"] == first_failed, key

    # grow past the threshold: 8 + 40 = 48 resources, 2 shards; 3 of the new sites fail (truly new)
    added = add_sites(grows, 40, start=100, failing_every=13)
    new_failing = {s.key for s in added if s.expected_status == "FAIL"}
    assert len(new_failing) == 3
    rows = run({gid: 48, sid: 5})
    assert new_failures(h) == new_failing
    assert sorted(e["ResourceId"].lower() for e in h.new_failure_events()) == sorted(new_failing)
    assert_streaks_kept(rows)
    streaks.update({r["RowKey"]: r["FirstFailedAt"] for r in rows if r["ResourceId"].lower() in new_failing})

    # grow again: 70 resources, 3 shards (the jump hash moves about a third of the rows)
    before = {r["RowKey"]: r["PartitionKey"] for r in rows}
    more = add_sites(grows, 22, start=200)
    rows = run({gid: 70, sid: 5})
    assert not new_failures(h) and not h.new_failure_events()
    assert_streaks_kept(rows)
    after = {r["RowKey"]: r["PartitionKey"] for r in rows}
    moved = [k for k in before if before[k] != after[k] and before[k].startswith(gid)]
    assert 0 < len(moved) < 48 * 2 / 3, "re-sharding moves some rows, not all"

    # shrink back below the threshold: the added sites go, the rest returns to the bucket
    for site in added + more:
        grows.remove_site(site)
        streaks.pop(site.key.replace("/", "|"), None)  # retired: a gone resource has no streak
    rows = run({gid: 8, sid: 5})
    assert not new_failures(h) and not h.new_failure_events()
    assert_streaks_kept(rows)
    gone = [r for r in rows if r["Gone"]]
    assert {r["ResourceId"].lower() for r in gone} == {s.key for s in added + more}
    assert all(r["PartitionKey"].startswith(f"{gid}_") for r in gone), "retired rows stay where they were"
    assert {k: r["Status"] for k, r in baseline.items()} == {r["RowKey"]: r["Status"] for r in rows if not r["Gone"]}

    # and the originals flip to failing once back in the bucket: exactly those are new
    flipped = [s for s in original if s.expected_status == "PASS"][:2]
    for site in flipped:
        site.update(client_cert_enabled=False)
    run({gid: 8, sid: 5})
    assert new_failures(h) == {s.key for s in flipped}


# -- d. crash between state batches ----------------------------------------------------------------
def crash_tenant() -> tuple[Tenant, list[Site]]:
    tenant = Tenant()
    large = tenant.add_subscription(sub_id("8", 1))
    small_a = tenant.add_subscription(sub_id("9", 2))
    small_b = tenant.add_subscription(sub_id("a", 3))
    sites = add_sites(large, 12 * ROWS + 10)  # 250 resources: 12 shards, each written on its own
    sites += add_sites(small_a, 5) + add_sites(small_b, 5)
    return tenant, sites


def crash_then_resume(
    make_arm,
    harness_factory,
    monkeypatch: pytest.MonkeyPatch,
    crash_at: int,
    *,
    expect_alerts_before_crash: bool,
    count_marks_only: bool = False,
) -> None:
    tenant, sites = crash_tenant()
    h: AuditHarness = harness_factory(make_arm(tenant))
    h.run_timer()  # baseline
    flipped = {s.key for s in sites[::10]} | {s.key for s in sites[-7:]}  # spread over every partition
    for site in sites:
        if site.key in flipped:
            site.update(client_cert_mode="Optional")
    h.clear_events()

    real = TableStore.write_state
    state_writes: list[list[str]] = []
    refused: list[int] = []  # the index of the write that crashed (others may follow it on other threads)
    mark_writes: list[int] = []  # indexes of the writes that mark new failures as alerted

    large_writes: list[int] = []  # the large subscription's writes: the small ones' buckets flush whenever

    def crash_on_nth_state_write(self, entities):  # type: ignore[no-untyped-def]
        state_writes.append([str(e["ResourceId"]).lower() for e in entities])
        is_mark = any(e.get("AlertSentAt") for e in entities)
        if is_mark:
            mark_writes.append(len(state_writes))
        if not str(entities[0]["PartitionKey"]).startswith("bucket-"):
            large_writes.append(len(state_writes))
        counted = len(mark_writes) if count_marks_only else len(large_writes)
        counts_now = is_mark if count_marks_only else large_writes[-1:] == [len(state_writes)]
        if counted == crash_at and counts_now:
            refused.append(len(state_writes) - 1)
            raise RuntimeError(f"injected crash at state write {crash_at}")
        return real(self, entities)

    monkeypatch.setattr(TableStore, "write_state", crash_on_nth_state_write)
    with pytest.raises(RuntimeError, match="injected crash"):
        h.run_timer()
    crashed = h.runs()[-1]
    assert crashed["Outcome"] == "failed"
    stored_before_crash = {k for i, batch in enumerate(state_writes) if i not in refused for k in batch}
    alerted_before_crash = [e["ResourceId"].lower() for e in h.new_failure_events()]
    assert stored_before_crash, "some state got through before the crash"
    if expect_alerts_before_crash:
        assert alerted_before_crash, "some subscription's state and events got through before the crash"
    else:  # what makes the crash bite: new failures whose state is stored but whose events are not out
        assert (flipped & stored_before_crash) - set(alerted_before_crash)
    # An event goes out only after its resource's mark (AlertPending cleared, AlertSentAt set) is
    # stored, so the resumed run knows exactly which ones were sent (and sends the rest).
    state_now = h.table("AUDIT_LATEST_TABLE")
    marked = {str(r["ResourceId"]).lower() for r in state_now if r.get("AlertSentAt")}
    owed = {str(r["ResourceId"]).lower() for r in state_now if r.get("AlertPending")}
    assert owed == (flipped & stored_before_crash) - marked, "every stored, unsent new failure is owed"
    assert set(alerted_before_crash) == marked
    monkeypatch.setattr(TableStore, "write_state", real)

    # The tenant moves on before the retry: the interrupted attempt's rows must not survive it.
    removed, small_b = sites[251], tenant.subscriptions[2]
    assert removed.key not in flipped and removed.subscription is tenant.subscriptions[1]
    assert removed.key in {r["ResourceId"].lower() for r in h.rows(crashed["RunId"])}
    removed.subscription.remove_site(removed)
    added = small_b.add_site("rg-app", "added-between-attempts", **REQUIRED)

    h.run_timer()  # resumes the same run
    runs = h.runs()
    assert len(runs) == 2 and runs[-1]["RunId"] == crashed["RunId"]
    assert runs[-1]["Outcome"] == "complete" and runs[-1]["Attempts"] == 2
    rows = h.rows_by_id(crashed["RunId"])  # asserts no duplicates
    assert set(rows) == set(tenant.expected())
    assert removed.key not in rows and added.key in rows
    assert new_failures(h) == flipped
    events = Counter(e["ResourceId"].lower() for e in h.new_failure_events())
    assert set(alerted_before_crash) <= stored_before_crash, "an event only after its state was stored"
    assert set(events) == flipped, f"never alerted: {sorted(flipped - set(events))[:5]}"
    assert set(events.values()) == {1}, "each new failure alerted exactly once across both attempts"
    state = state_rows(h)
    assert_no_duplicate_state(state)
    assert {r["ResourceId"].lower() for r in state if not r["Gone"]} == set(tenant.expected())
    assert [r["ResourceId"].lower() for r in state if r["Gone"]] == [removed.key]
    assert {r["LastRunId"] for r in state} == {crashed["RunId"]}


# The 12 shards of the large subscription are written first (each flushed as soon as its result rows
# are durable), then its alert marks (one write per shard holding new failures, each
# followed by its events), then the two small subscriptions' buckets at the final flush.
def test_crash_between_two_alert_batches_then_resume(make_arm, harness_factory, monkeypatch) -> None:
    # The second mark write fails: the first batch's events are out (and marked), the rest are not.
    crash_then_resume(
        make_arm, harness_factory, monkeypatch, crash_at=2, expect_alerts_before_crash=True, count_marks_only=True
    )


def test_crash_after_whole_subscriptions_state_then_resume(make_arm, harness_factory, monkeypatch) -> None:
    crash_then_resume(make_arm, harness_factory, monkeypatch, crash_at=14, expect_alerts_before_crash=True)


def test_crash_inside_one_subscriptions_state_then_resume(make_arm, harness_factory, monkeypatch) -> None:
    # The 11th state write is one of the large subscription's 12 shards: 10 are stored, its events are not.
    crash_then_resume(make_arm, harness_factory, monkeypatch, crash_at=11, expect_alerts_before_crash=False)
