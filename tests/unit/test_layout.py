"""``shared.core.layout``: where result and state rows live (pure functions, no storage)."""

from __future__ import annotations

import random

import pytest

from shared.core import layout
from shared.core.keys import resource_key

SUB = "0a1b2c3d-1111-4111-8111-111111111111"
# Shares every character but the last with SUB: a prefix test must not confuse the two.
NEIGHBOUR = "0a1b2c3d-1111-4111-8111-111111111112"


def site(subscription: str, name: str, slot: str = "") -> str:
    rid = f"/subscriptions/{subscription}/resourceGroups/RG-Web/providers/Microsoft.Web/sites/{name}"
    return resource_key(rid + (f"/slots/{slot}" if slot else ""))


def in_range(key: str, bounds: tuple[str, str]) -> bool:
    low, high = bounds
    return low <= key < high


# -- jump consistent hash ------------------------------------------------------------------------
def test_jump_hash_stays_in_range_and_is_deterministic() -> None:
    rng = random.Random(6)
    keys = [rng.getrandbits(64) for _ in range(2_000)]
    for buckets in (1, 2, 3, 7, 16, 37, 1000):
        placed = [layout.jump_hash(k, buckets) for k in keys]
        assert all(0 <= b < buckets for b in placed)
        assert placed == [layout.jump_hash(k, buckets) for k in keys]
    assert {layout.jump_hash(k, 1) for k in keys} == {0}
    assert layout.jump_hash(0, 5) == layout.jump_hash(0, 5)


def test_jump_hash_spreads_keys_evenly() -> None:
    rng = random.Random(7)
    buckets = 10
    counts = [0] * buckets
    for _ in range(20_000):
        counts[layout.jump_hash(rng.getrandbits(64), buckets)] += 1
    assert min(counts) > 0.8 * 2_000 and max(counts) < 1.2 * 2_000


@pytest.mark.parametrize("n", [1, 2, 5, 9, 37])
def test_growing_by_one_bucket_moves_about_one_in_n_plus_one_keys(n: int) -> None:
    rng = random.Random(n)
    keys = [rng.getrandbits(64) for _ in range(10_000)]
    before = [layout.jump_hash(k, n) for k in keys]
    after = [layout.jump_hash(k, n + 1) for k in keys]
    moved = [(b, a) for b, a in zip(before, after, strict=True) if b != a]
    assert all(a == n for _, a in moved)  # a key only ever moves into the new bucket
    expected = len(keys) / (n + 1)
    assert 0.7 * expected < len(moved) < 1.3 * expected


def test_jump_hash_needs_a_bucket() -> None:
    with pytest.raises(ValueError):
        layout.jump_hash(1, 0)


# -- results partitions --------------------------------------------------------------------------
def test_results_partitions_sort_in_order_inside_the_run_range() -> None:
    run = "20261128T020000123456Z-1a2b3c"
    low, high = layout.run_range(run)
    assert (low, high) == (f"{run}_", f"{run}`")
    names = [layout.results_partition(run, i) for i in (0, 1, 9, 10, 99, 12_345)]
    assert names[0] == f"{run}_00000" and names[-1] == f"{run}_12345"
    assert names == sorted(names)
    assert all(low <= name < high for name in names)


def test_run_range_excludes_other_runs() -> None:
    run = "20261128T020000123456Z-1a2b3c"
    bounds = layout.run_range(run)
    others = [
        "20261128T020000123456Z-1a2b3d",  # the next run id
        "20261128T020000123456Z-1a2b3",  # a shorter id that is a prefix of this one
        f"{run}0",  # a longer id that extends this one
    ]
    for other in others:
        assert not in_range(layout.results_partition(other, 0), bounds), other
    # the backtick bound: run ids never hold "_" or "`", so the range is exactly this run's partitions
    assert not in_range(run, bounds) and not in_range(f"{run}`", bounds)


# -- a subscription's RowKey range ------------------------------------------------------------------
def test_subscription_row_range_covers_its_scope_and_resources() -> None:
    bounds = layout.subscription_row_range(SUB.upper())  # ids compare case-insensitively
    scope = resource_key(f"/subscriptions/{SUB}")
    assert scope == layout.subscription_key_prefix(SUB) == bounds[0]
    mine = [
        scope,
        resource_key(f"/subscriptions/{SUB}/resourceGroups/RG-Web"),
        site(SUB, "shop"),
        site(SUB, "shop", "staging"),
        site(SUB.upper(), "Ünicode (app)"),
        resource_key(f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Web/sites/{'x' * 600}"),
    ]
    for key in mine:
        assert in_range(key, bounds), key
        assert layout.in_subscription(key, SUB) and layout.in_subscription(key, f" {SUB.upper()} ")


def test_subscription_row_range_excludes_other_subscriptions() -> None:
    bounds = layout.subscription_row_range(SUB)
    theirs = [
        resource_key(f"/subscriptions/{NEIGHBOUR}"),
        site(NEIGHBOUR, "shop"),
        site("ffffffff-1111-4111-8111-111111111111", "shop"),
        site("00000000-1111-4111-8111-111111111111", "shop"),
    ]
    for key in theirs:
        assert not in_range(key, bounds), key
        assert not layout.in_subscription(key, SUB), key


def test_in_subscription_is_exact_where_the_range_is_not() -> None:
    """An id that merely starts with another is inside the range; in_subscription tells them apart."""
    short = "0a1b2c3d"
    bounds = layout.subscription_row_range(short)
    longer = site(SUB, "shop")  # "|subscriptions|0a1b2c3d-..." starts with "|subscriptions|0a1b2c3d"
    assert in_range(longer, bounds)
    assert not layout.in_subscription(longer, short)
    assert layout.in_subscription(site(short, "shop"), short)
    assert layout.in_subscription(resource_key(f"/subscriptions/{short}"), short)
    assert not layout.in_subscription(resource_key(f"/subscriptions/{short}0"), short)
    assert not layout.in_subscription("", short)


# -- state partitions ---------------------------------------------------------------------------
def test_small_subscriptions_share_a_bucket_by_first_character() -> None:
    key = site(SUB, "shop")
    for size in (0, 1, 999):
        assert layout.state_shards(size) == 0
        assert layout.state_partition(SUB, size, key) == "bucket-0"
    assert layout.state_partition(SUB.upper(), 10, key) == "bucket-0"
    assert layout.state_bucket("Ab12cd34-0000-0000-0000-000000000000") == "bucket-a"
    buckets = {layout.state_bucket(f"{c}0000000-0000-0000-0000-000000000000") for c in "0123456789abcdef"}
    assert len(buckets) == layout.STATE_BUCKETS


def test_large_subscriptions_get_size_over_1000_own_shards() -> None:
    for size, shards in ((1_000, 1), (1_999, 1), (2_000, 2), (37_217, 37)):
        assert layout.state_shards(size) == shards
        keys = [site(SUB, f"app{i}") for i in range(3_000)]
        partitions = {layout.state_partition(SUB, size, k) for k in keys}
        assert partitions == {f"{SUB}_{i:04d}" for i in range(shards)}, size
    assert layout.state_partition(SUB.upper(), 1_000, site(SUB, "shop")) == f"{SUB}_0000"


def test_state_partition_is_stable_for_the_same_key() -> None:
    keys = [site(SUB, f"app{i}") for i in range(500)]
    for size in (5, 5_000):
        first = [layout.state_partition(SUB, size, k) for k in keys]
        assert first == [layout.state_partition(SUB, size, k) for k in keys]
    # growing from 5 to 6 shards keeps most rows where they were
    five = [layout.state_partition(SUB, 5_000, k) for k in keys]
    six = [layout.state_partition(SUB, 6_999, k) for k in keys]
    assert sum(a != b for a, b in zip(five, six, strict=True)) < len(keys) / 6 * 1.5


def test_state_filters_name_the_bucket_range_and_the_own_shards() -> None:
    bucket, own = layout.state_filters(SUB.upper())
    assert bucket == (
        f"PartitionKey eq 'bucket-0' and RowKey ge '|subscriptions|{SUB}' and RowKey lt '|subscriptions|{SUB}}}'"
    )
    assert own == f"PartitionKey ge '{SUB}' and PartitionKey lt '{SUB}~'"
    # the own range holds every shard (and the one partition of the layout before this one)
    low, high = f"{SUB}", f"{SUB}~"
    for partition in (SUB, layout.state_partition(SUB, 50_000, site(SUB, "shop")), f"{SUB}_9999"):
        assert low <= partition < high
    assert not low <= f"{NEIGHBOUR}_0000" < high
    assert not low <= layout.state_bucket(SUB) < high


def test_partition_batches_are_single_partition_full_first_and_streamed() -> None:
    items = [(p, i) for i in range(250) for p in ("a", "b")] + [("c", 0)]
    seen_before_end: list[int] = []

    def stream():  # type: ignore[no-untyped-def]
        for n, item in enumerate(items):
            yield item
            seen_before_end.append(n)

    batches = []
    for batch in layout.partition_batches(stream(), lambda item: item[0]):
        batches.append((len(seen_before_end), batch))
    assert sorted(item for _, b in batches for item in b) == sorted(items), "every item exactly once"
    assert all(len({p for p, _ in b}) == 1 and len(b) <= layout.BATCH_SIZE for _, b in batches)
    assert [len(b) for _, b in batches] == [100, 100, 100, 100, 50, 50, 1]
    assert batches[0][0] < 250, "a full batch goes out before the stream ends"


def test_narrowed_state_filters_select_only_the_given_keys_and_ranges() -> None:
    from shared.core.layout import KEYS_PER_FILTER, narrowed_state_filters, state_filters

    sub = "00000000-0000-0000-0000-00000000000a"
    keys = [f"|subscriptions|{sub}|k{i:03d}" for i in range(KEYS_PER_FILTER + 1)]
    filters = narrowed_state_filters(sub, keys, [f"{keys[0]}|slots|"])
    assert len(filters) == 2 * 2, "two chunks for each of the bucket and the own-partition filters"
    bucket, own = state_filters(sub)
    assert all(f.startswith((bucket + " and (", own + " and (")) for f in filters)
    text = " ".join(filters)
    assert all(f"RowKey eq '{k}'" in text for k in keys)
    assert f"RowKey ge '{keys[0]}|slots|' and RowKey lt '{keys[0]}|slots|~'" in text
    assert narrowed_state_filters(sub, []) == []
