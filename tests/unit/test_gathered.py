"""``shared.run.slices.Gathered``: how a subscription that went to disk is cut, counted as the memory
budget counts it (records and state rows). Pure: its streams spill to a private temporary directory."""

from __future__ import annotations

import pytest

from shared.core import layout
from shared.core.layout import state_shard, state_shards
from shared.core.models import SiteRecord
from shared.run.budget import HeldBudget
from shared.run.slices import Gathered
from shared.run.spill import SpillDir

LIMIT = 100
RESOURCES = 1_000


def record(i: int) -> tuple[str, SiteRecord]:
    rid = f"/subscriptions/s/resourceGroups/rg/providers/Microsoft.Web/sites/app-{i}"
    key = rid.lower()
    return key, SiteRecord(resource_id=rid, subscription_id="s", resource_group="rg", app_name=f"app-{i}")


def test_arms_repeats_do_not_keep_a_subscription_from_being_cut_by_shard(monkeypatch: pytest.MonkeyPatch) -> None:
    """ARM lists a site twice (its group's list names it again, far apart in the stream), so the
    first cut counts about two records per resource; with its state rows, more slices than the
    subscription has shards. Cut by shard, the slices are counted as they will hold (each resource
    once, and its state row): fewer of them, each taking whole shards, none over a slice."""
    monkeypatch.setattr(layout, "PARTITION_ROWS", 20)  # 50 shards for 1,000 resources
    where = SpillDir()
    budget = HeldBudget(10 * RESOURCES)
    hold = budget.admit("s")
    gathered = Gathered(where, LIMIT)
    records = [record(i) for i in range(RESOURCES)]
    for _ in range(2):  # the site list, then the group lists naming each site again
        for key, value in records:
            hold.take()
            gathered.rest.setdefault(key, value)
            if len(gathered.rest) >= LIMIT:
                hold.give_back(gathered.spill_listed())
    gathered.read_state(((key, {"PartitionKey": "p", "RowKey": key, "Status": "PASS"}) for key, _ in records), (), hold)
    first = gathered.slices()
    gathered.cut(first)
    shards = state_shards(RESOURCES)
    assert first > shards == 50, "the first cut has more slices than shards"
    extras = gathered.align(RESOURCES, [[] for _ in range(first)], lambda listed: None, hold)
    try:
        assert gathered.aligned, "cut by shard"
        count = len(extras)
        assert count == 2 * (RESOURCES + RESOURCES) // LIMIT < first
        slice_of_shard: dict[int, int] = {}
        seen: set[str] = set()
        for index in range(count):
            part = gathered.load(index, last=True)
            assert part.weight() <= LIMIT, f"slice {index} holds {part.weight()}"
            assert set(part.prior) == set(part.listed), "each record with its state row"
            for key in part.listed:
                assert slice_of_shard.setdefault(state_shard(key, shards), index) == index, "one shard, two slices"
            seen |= set(part.listed)
        assert seen == {key for key, _ in records}, "every resource in one slice"
    finally:
        hold.release()
        where.close()


def test_state_rows_read_beside_records_in_memory_are_counted_and_given_back_past_a_slice() -> None:
    """While a subscription's records are in memory, each state row it reads is a unit of the cap
    (it weighs about as much as a record); once records and rows together pass a slice, the rows
    go to disk and are given back (the subscription is then cut), the records still counted."""
    where = SpillDir()
    budget = HeldBudget(10 * RESOURCES)
    try:
        for resources, rows in ((40, 40), (40, 80)):
            hold = budget.admit(f"{resources}+{rows}")
            gathered = Gathered(where, LIMIT)
            for key, value in (record(i) for i in range(resources)):
                hold.take()
                gathered.rest[key] = value
            pairs = (
                (key, {"PartitionKey": "p", "RowKey": key, "Status": "PASS"}) for key, _ in map(record, range(rows))
            )
            gathered.read_state(pairs, (), hold)
            if resources + rows < LIMIT:
                assert hold.count == resources + rows, "each state row counted"
                assert gathered.slices() == 1
            else:
                assert hold.count == resources, "the rows went to disk and were given back"
                assert gathered.slices() > 1
            hold.release()
    finally:
        where.close()
