"""Memory bounded by construction, end to end: the timer function against the emulators with the
run's memory cap (``shared.run.pipeline.MAX_HELD_RESOURCES``) shrunk to a few resources, so that every
listing waits at it, again and again.

What must hold whatever waits: every resource gets its row; each subscription's result rows are
stored before its state, and its state before its alert marks and events; each new failure is
alerted exactly once; what the run held never exceeded the cap plus its largest subscription (its
records and, the next night, its state rows); and
a run whose writes fail while every listing waits fails loudly instead of hanging. The partition
size is shrunk too (as in ``test_layout_integration.py``), so that small subscriptions share
partitions and wait for them to fill.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared.azure import resourcegraph as rg
from shared.azure.store import TableStore
from shared.core import layout
from shared.core.errors import AuditFailed
from shared.run import pipeline, steps
from tests.emulators.faults import FaultRule, Latency
from tests.emulators.proxy import FaultProxy
from tests.emulators.tenant import Site, Tenant
from tests.harness import AuditHarness

REQUIRED = {"client_cert_enabled": True, "client_cert_mode": "Required"}
NIGHT1 = datetime(2026, 3, 1, 2, 0, tzinfo=UTC)
NIGHT2 = NIGHT1 + timedelta(days=1)
SIZES = (1, 2, 3, 5, 7, 9, 12, 4, 6, 8, 11, 2, 3, 30)  # the last one alone is larger than the cap
CAP = 6


@pytest.fixture(autouse=True)
def small_partitions(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(layout, "PARTITION_ROWS", 20)
    monkeypatch.setattr(pipeline, "MAX_HELD_RESOURCES", CAP)


def build() -> tuple[Tenant, list[Site]]:
    """Subscriptions of the sizes above (sites and slots); ids start with a or b, so that the small
    ones share two state buckets."""
    tenant = Tenant()
    resources: list[Site] = []
    for n, size in enumerate(SIZES):
        sub = tenant.add_subscription(f"{'ab'[n % 2]}{n:07x}-0000-4000-8000-000000000000")
        for i in range(size):
            if i % 3 == 2:
                resources.append(resources[-1].add_slot(f"slot{i}", **REQUIRED))
            else:
                resources.append(sub.add_site(f"rg-{i % 2}", f"app-{n}-{i}", **REQUIRED))
    return tenant, resources


class WriteLog:
    """Every table write of the run, in order: (table, subscriptions, what), to check the order."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, h: AuditHarness) -> None:
        self.h = h
        self.writes: list[tuple[str, set[str], str]] = []
        self.lock = threading.Lock()
        real = TableStore.write_batch
        real_state = TableStore.write_state

        def logged(store: TableStore, table: Any, entities: list[dict[str, Any]]) -> int:
            used = real(store, table, entities)
            if table.table_name == h.tables["AUDIT_RESULTS_TABLE"]:
                self.log(table.table_name, entities, "rows")
            elif table.table_name == h.tables["AUDIT_LATEST_TABLE"]:
                self.log(table.table_name, entities, None)
            # else the run record and the subscription registry: not ordered
            return used

        def logged_state(store: TableStore, entities: list[dict[str, Any]]) -> tuple[int, dict[tuple[str, str], str]]:
            used = real_state(store, entities)  # state rows and alert marks: conditional on their ETags
            self.log(h.tables["AUDIT_LATEST_TABLE"], entities, None)
            return used

        monkeypatch.setattr(TableStore, "write_batch", logged)
        monkeypatch.setattr(TableStore, "write_state", logged_state)

    def log(self, name: str, entities: list[dict[str, Any]], what: str | None) -> None:
        subs = {str(e.get("SubscriptionId") or "").lower() for e in entities}
        if what is None:
            what = "mark" if any(e.get("AlertSentAt") and not e.get("AlertPending") for e in entities) else "state"
        with self.lock:
            self.writes.append((name, subs, what))

    def order_per_subscription(self) -> dict[str, list[tuple[int, str]]]:
        out: dict[str, list[tuple[int, str]]] = defaultdict(list)
        for index, (_, subs, what) in enumerate(self.writes):
            for sub in subs:
                out[sub].append((index, what))
        return out


def held_figures(caplog: pytest.LogCaptureFixture) -> tuple[int, int, int]:
    """(most held at once, waits, flushes) from the pipeline's end-of-run line."""
    pattern = re.compile(
        r"at most (\d+) records and state rows held in memory at once \(cap (\d+)\); listings waited (\d+) times"
    )
    for record in reversed(caplog.records):
        match = pattern.search(record.getMessage())
        if match:
            flushes = int(re.search(r"(\d+) partial flushes", record.getMessage()).group(1))  # type: ignore[union-attr]
            assert int(match.group(2)) == CAP
            return int(match.group(1)), int(match.group(3)), flushes
    raise AssertionError("the run did not report what it held")


def test_every_listing_waits_at_the_cap_and_rows_state_alerts_keep_their_order(
    make_arm, harness_factory, monkeypatch, caplog
) -> None:
    tenant, resources = build()
    h: AuditHarness = harness_factory(make_arm(tenant, latency=0.002))
    h.apply_env(AUDIT_CONCURRENCY="4")
    h.run_at(NIGHT1)
    assert h.runs()[-1]["Outcome"] == "complete"
    assert set(h.rows_by_id()) == set(tenant.expected())

    failing = resources[::4]
    for resource in failing:
        resource.update(client_cert_mode="Optional")
    h.clear_events()
    log = WriteLog(monkeypatch, h)
    h.run_at(NIGHT2)
    run = h.runs()[-1]
    assert run["Outcome"] == "complete"
    rows = h.rows_by_id()
    assert set(rows) == set(tenant.expected()), "every resource has its row"
    assert {k for k, r in rows.items() if r["NewFailure"]} == {r.key for r in failing}
    assert Counter(e["ResourceId"].lower() for e in h.new_failure_events()) == Counter(r.key for r in failing)
    state = h.state()
    assert {r["LastRunId"] for r in state.values()} == {run["RunId"]}
    assert not any(r["AlertPending"] for r in state.values())

    for sub, writes in log.order_per_subscription().items():
        last_rows = max(i for i, what in writes if what == "rows")
        state_writes = [i for i, what in writes if what == "state"]
        marks = [i for i, what in writes if what == "mark"]
        assert state_writes and min(state_writes) > last_rows, f"{sub}: state stored before all its rows"
        assert not marks or min(marks) > max(state_writes), f"{sub}: an alert marked before its state"

    most, waits, flushes = held_figures(caplog)
    assert waits > 0 and flushes > 0, "the listings did wait at the cap"
    # The senior alone passes the cap: the largest subscription whole, its records and its state rows.
    assert most <= CAP + 2 * max(SIZES), f"held {most} at once"
    stalls = [r.getMessage() for r in caplog.records if "Sending partial batches early" in r.getMessage()]
    assert stalls, "a stall is logged"
    assert len(stalls) <= 1 + int(float(run["DurationSeconds"]) // steps.STALL_LOG_SECONDS) < flushes, (
        "at most one line per 30 s, not one per flush",
        len(stalls),
        flushes,
    )
    assert re.search(
        r"\(\d+ flushes since the last such line\); holding most: \S+: \d+ \((waiting at the cap|rows queued|listing)\)",
        stalls[0],
    ), stalls[0]


def test_resource_graph_feeds_waiting_listings_without_holding_a_subscription(
    make_arm, harness_factory, monkeypatch, caplog
) -> None:
    monkeypatch.setattr(rg, "MAX_BUFFERED", 4)
    monkeypatch.setattr(rg, "TAKE", 2)
    tenant, _ = build()
    h: AuditHarness = harness_factory(make_arm(tenant))
    h.apply_env(AUDIT_CONCURRENCY="3", AUDIT_INVENTORY_SOURCE="resourcegraph")
    for night in (NIGHT1, NIGHT2):
        h.run_at(night)
        assert h.runs()[-1]["Outcome"] == "complete"
        rows = h.rows_by_id()
        assert {k: r["Status"] for k, r in rows.items()} == {k: e.status for k, e in tenant.expected().items()}
    most, waits, _ = held_figures(caplog)
    assert waits > 0 and most <= CAP + 2 * max(SIZES)  # the largest whole, its records and its state rows


def test_a_store_failing_while_every_listing_waits_fails_the_run_instead_of_hanging(
    make_arm, harness_factory, monkeypatch
) -> None:
    tenant, _ = build()
    h: AuditHarness = harness_factory(make_arm(tenant))
    h.apply_env(AUDIT_CONCURRENCY="4")

    def refuse_state(store: TableStore, entities: list[dict[str, Any]]) -> tuple[int, dict[tuple[str, str], str]]:
        raise RuntimeError("state write refused")  # every subscription's state step fails

    monkeypatch.setattr(TableStore, "write_state", refuse_state)
    started = time.monotonic()
    with pytest.raises(AuditFailed, match="state write refused"):
        h.run_at(NIGHT1)
    assert time.monotonic() - started < 60
    assert h.runs()[-1]["Outcome"] == "failed"


def test_no_connection_pool_warning_when_every_thread_writes(make_arm, harness_factory, azurite, tls, caplog) -> None:
    """urllib3 discards connections past its pool size with a WARNING per request ("Connection pool
    is full"): the Tables pool is sized for every thread that writes at once (audit threads and
    steps, here 8 + 8, past urllib3's default of 10), slowed down so that they all do."""
    tenant = Tenant()
    for n in range(32):
        sub = tenant.add_subscription(f"{n:08x}-0000-4000-8000-000000000000")
        for i in range(60):
            sub.add_site("rg", f"app-{n}-{i}", **REQUIRED)
    h: AuditHarness = harness_factory(make_arm(tenant))
    caplog.set_level(logging.WARNING, logger="urllib3")
    with FaultProxy(azurite.port, tls) as proxy:
        proxy.faults.add(FaultRule(Latency(0.05), method="*"))
        h.apply_env(AUDIT_TABLE_SERVICE_URI=proxy.url(), AUDIT_CONCURRENCY="8")
        h.run_at(NIGHT1)
        h.run_at(NIGHT2)
    assert h.runs()[-1]["Outcome"] == "complete"
    full = [r.getMessage() for r in caplog.records if "Connection pool is full" in r.getMessage()]
    assert not full, full[:3]
