"""Where rows live: the partition layout of the results and last-known-state tables. Pure.

Why these layouts (measured in ``bench/``): a Table Storage transaction holds ≤ 100 entities of
*one* partition, so a partition per subscription leaves a partial batch per subscription (most
subscriptions are small: 1.6 transactions per 100 rows at 130k resources), and one partition per
large subscription grows without bound (37,000 rows in the benchmark's largest; Azurite's cost per
write grows with the partition, real Table Storage caps a partition at ~2,000 entities/s).

* **Results** (``ClientCertAudit``): ``<RunId>_<NNNNN>``, partitions of at most
  :data:`PARTITION_ROWS` rows filled in the order subscriptions finish. A run stays one
  ``PartitionKey`` range; one subscription in a run is a ``RowKey`` range inside it, because every
  ``RowKey`` (the encoded resource id) starts with ``|subscriptions|<id>``.
* **Last-known state** (``ClientCertAuditLatest``): read per subscription at every run, so its
  layout is a pure function of the subscription and its size. A subscription with fewer than
  :data:`PARTITION_ROWS` resources shares one of :data:`STATE_BUCKETS` buckets (``bucket-<c>``, by
  the first character of its id) with others; a larger one gets its own shards
  ``<subscription>_<NNNN>`` (``size // PARTITION_ROWS`` of them, assigned by a jump consistent hash
  of the row key so few rows move when the count changes). Reading a subscription's state is one
  ``RowKey`` range in its bucket plus one ``PartitionKey`` range over its shards, whatever layout
  an earlier run (or the single-partition layout before it) used; rows found outside tonight's
  layout are moved (written in place, the old copy deleted after).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

from .keys import encode_key, odata_quote
from .names import fold

T = TypeVar("T")

BATCH_SIZE = 100  # Table Storage's limit for one entity-group transaction (one partition)
PARTITION_ROWS = 1_000  # rows per partition: 10 full transactions, far below a partition's limits
STATE_BUCKETS = 16  # one per hex digit of a subscription id
BUCKET_PREFIX = "bucket-"
_AFTER_PIPE = "}"  # the character after "|" (RowKeys use "|" for "/")
_AFTER_ALL = "~"  # sorts after every character a key of ours uses


def results_partition(run_id: str, index: int) -> str:
    """The ``index``-th results partition of a run (zero-padded, so partitions sort in order)."""
    return f"{run_id}_{index:05d}"


def run_range(run_id: str) -> tuple[str, str]:
    """``PartitionKey`` bounds ``[low, high)`` of one run's result rows (``` ` ``` follows ``_``)."""
    return f"{run_id}_", f"{run_id}`"


#: The start of every RowKey of a resource in a subscription (``|subscriptions|``).
SUBSCRIPTION_KEY_PREFIX = encode_key("/subscriptions/")


def subscription_key_prefix(subscription_id: str) -> str:
    """The start of every RowKey of a subscription's resources (and its own ERROR row's key)."""
    return encode_key(f"/subscriptions/{fold(subscription_id.strip())}")


def subscription_row_range(subscription_id: str) -> tuple[str, str]:
    """``RowKey`` bounds ``[low, high)`` holding the subscription's scope row and every resource."""
    prefix = subscription_key_prefix(subscription_id)
    return prefix, prefix + _AFTER_PIPE


def in_subscription(row_key: str, subscription_id: str) -> bool:
    """Exactly this subscription's keys (the range alone would also admit a longer id)."""
    prefix = subscription_key_prefix(subscription_id)
    return row_key == prefix or row_key.startswith(prefix + "|")


def state_bucket(subscription_id: str) -> str:
    """The shared state partition of a small subscription."""
    first = fold(subscription_id.strip())[:1] or "0"
    return BUCKET_PREFIX + encode_key(first)


def state_shards(size: int) -> int:
    """How many own partitions a subscription of ``size`` resources gets (0: it shares a bucket)."""
    return size // PARTITION_ROWS


def state_partition(subscription_id: str, size: int, row_key: str) -> str:
    """The state partition of one resource of a subscription that holds ``size`` resources."""
    shards = state_shards(size)
    if shards == 0:
        return state_bucket(subscription_id)
    return f"{fold(subscription_id.strip())}_{state_shard(row_key, shards):04d}"


def state_shard(row_key: str, shards: int) -> int:
    """Which of a subscription's ``shards`` own partitions a resource's state row lives in."""
    return jump_hash(_key_hash(row_key), shards)


def state_filters(subscription_id: str) -> tuple[str, str]:
    """OData filters that together return every state row a subscription may have."""
    low, high = subscription_row_range(subscription_id)
    bucket = (
        f"PartitionKey eq {odata_quote(state_bucket(subscription_id))} "
        f"and RowKey ge {odata_quote(low)} and RowKey lt {odata_quote(high)}"
    )
    sub = fold(subscription_id.strip())
    own = f"PartitionKey ge {odata_quote(sub)} and PartitionKey lt {odata_quote(sub + _AFTER_ALL)}"
    return bucket, own


#: Keys OR-ed into one narrowed state query (keeps each filter far below the service's length limit).
KEYS_PER_FILTER = 20


def narrowed_state_filters(subscription_id: str, keys: Iterable[str], prefixes: Iterable[str] = ()) -> list[str]:
    """The :func:`state_filters` of a subscription narrowed to some RowKeys (``keys``) and RowKey
    ranges (``prefixes``, each ``prefix`` to ``prefix + "~"``): a change poll reads the state of the
    few resources it re-read, not the whole subscription's."""
    terms = [f"RowKey eq {odata_quote(k)}" for k in sorted(set(keys))]
    terms += [
        f"(RowKey ge {odata_quote(p)} and RowKey lt {odata_quote(p + _AFTER_ALL)})" for p in sorted(set(prefixes))
    ]
    return [
        f"{base} and ({' or '.join(terms[i : i + KEYS_PER_FILTER])})"
        for base in state_filters(subscription_id)
        for i in range(0, len(terms), KEYS_PER_FILTER)
    ]


def partition_batches(items: Iterable[T], partition_of: Callable[[T], str]) -> Iterator[list[T]]:
    """Group items into transactions: ≤ :data:`BATCH_SIZE` of one partition each. A batch is
    yielded as soon as it is full (so a stream is never held whole), the partial ones at the end."""
    open_batches: dict[str, list[T]] = {}
    for item in items:
        batch = open_batches.setdefault(partition_of(item), [])
        batch.append(item)
        if len(batch) == BATCH_SIZE:
            yield open_batches.pop(partition_of(item))
    yield from (batch for batch in open_batches.values() if batch)


def _key_hash(row_key: str) -> int:
    return int.from_bytes(hashlib.blake2b(row_key.encode("utf-8"), digest_size=8).digest(), "big")


def jump_hash(key: int, buckets: int) -> int:
    """Lamping & Veach's jump consistent hash: growing ``buckets`` by one moves only ~1/n keys."""
    if buckets < 1:
        raise ValueError("buckets must be at least 1")
    b, j = -1, 0
    while j < buckets:
        b = j
        key = (key * 2862933555777941757 + 1) & 0xFFFFFFFFFFFFFFFF
        j = int((b + 1) * (float(1 << 31) / float((key >> 33) + 1)))
    return b
