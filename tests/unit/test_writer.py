"""``shared.run.writer.PackedWriter``: packing rows of many owners into shared transactions, and the
exactly-once durability signal the audit's ordering (results → state → events) is built on.

Pure: ``send`` is a fake that records every batch (and can be told to fail).
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from shared.run.writer import PackedWriter

Row = dict[str, Any]


class FakeSend:
    """Records batches (copies of the rows as sent); raises when ``fail(batch_number, rows)`` says so."""

    def __init__(self, fail: Callable[[int, list[Row]], bool] | None = None) -> None:
        self.fail = fail or (lambda number, rows: False)
        self.lock = threading.Lock()
        self.batches: list[list[Row]] = []
        self.attempts = 0
        self.sent_ids: set[str] = set()

    def __call__(self, rows: list[Row]) -> int:
        with self.lock:
            number = self.attempts
            self.attempts += 1
            if self.fail(number, rows):
                raise RuntimeError(f"injected failure of batch {number}")
            self.batches.append([dict(r) for r in rows])
            for row in rows:
                self.sent_ids.add(row["id"])
        return 1

    def sent(self) -> set[str]:
        with self.lock:
            return set(self.sent_ids)

    def partitions_sent(self) -> list[str]:
        with self.lock:
            return [b[0]["PartitionKey"] for b in self.batches]


def rows_of(owner: str, n: int, partition: str | Callable[[int], str] = "p") -> list[Row]:
    pick = partition if callable(partition) else (lambda i: partition)
    return [{"PartitionKey": pick(i), "RowKey": f"{owner}-{i:05d}", "id": f"{owner}-{i:05d}"} for i in range(n)]


class Signals:
    """on_durable callbacks that count their calls and check, at call time, that every row of the
    owner was already sent."""

    def __init__(self, send: FakeSend) -> None:
        self.send = send
        self.lock = threading.Lock()
        self.fired: Counter[str] = Counter()
        self.premature: list[str] = []

    def callback(self, owner: str, rows: list[Row]) -> Callable[[], None]:
        ids = {r["id"] for r in rows}

        def on_durable() -> None:
            missing = ids - self.send.sent()
            with self.lock:
                self.fired[owner] += 1
                if missing:
                    self.premature.append(owner)

        return on_durable


def check_batches(send: FakeSend) -> None:
    for batch in send.batches:
        assert 1 <= len(batch) <= 100
        assert len({r["PartitionKey"] for r in batch}) == 1, "a transaction holds one partition"


# -- packing ------------------------------------------------------------------------------------
def test_rows_of_many_owners_share_batches() -> None:
    send = FakeSend()
    writer = PackedWriter(send)
    signals = Signals(send)
    for k in range(30):
        rows = rows_of(f"o{k:02d}", 7)
        writer.add(f"o{k:02d}", rows, signals.callback(f"o{k:02d}", rows))
    assert [len(b) for b in send.batches] == [100, 100], "two full batches went out while adding"
    assert writer.buffered == 10
    writer.flush()
    assert [len(b) for b in send.batches] == [100, 100, 10]  # 3 transactions for 30 owners, not 30
    assert writer.transactions == 3 and writer.rows == 210
    assert writer.partitions == {"p"}
    check_batches(send)
    assert sorted(signals.fired) == [f"o{k:02d}" for k in range(30)]
    assert set(signals.fired.values()) == {1}
    assert not signals.premature
    assert writer.waiting_owners == 0 and writer.buffered == 0


def test_batches_are_single_partition_and_at_most_100_rows() -> None:
    send = FakeSend()
    writer = PackedWriter(send)
    rng = random.Random(3)
    expected: list[str] = []
    for k in range(40):
        rows = rows_of(f"o{k}", rng.randint(0, 180), lambda i: rng.choice("abcde"))
        expected += [r["id"] for r in rows]
        writer.add(f"o{k}", rows, lambda: None)
    writer.flush()
    check_batches(send)
    sent = [r["id"] for b in send.batches for r in b]
    assert sorted(sent) == sorted(expected), "every row sent exactly once"
    # per partition: all batches but at most one are full
    per_partition: dict[str, list[int]] = {}
    for batch in send.batches:
        per_partition.setdefault(batch[0]["PartitionKey"], []).append(len(batch))
    for sizes in per_partition.values():
        assert sum(1 for s in sizes if s < 100) <= 1, sizes
    assert writer.transactions == len(send.batches)


# -- the durability signal ------------------------------------------------------------------------
def test_on_durable_fires_once_only_after_all_rows_are_sent() -> None:
    send = FakeSend()
    writer = PackedWriter(send)
    signals = Signals(send)

    big = rows_of("big", 250)  # spans three batches of one partition
    writer.add("big", big, signals.callback("big", big))
    assert len(send.batches) == 2 and not signals.fired, "50 of its rows are still buffered"

    small = rows_of("small", 30)  # shares the partial batch with big's last 50 rows
    writer.add("small", small, signals.callback("small", small))
    assert not signals.fired

    writer.add("empty", [], signals.callback("empty", []))
    assert signals.fired == Counter({"empty": 1}), "an owner without rows is durable at once"

    spread = rows_of("spread", 110, lambda i: "p" if i < 10 else "q")  # 100 in q go out at once, 10 wait in p
    writer.add("spread", spread, signals.callback("spread", spread))
    assert len(send.batches) == 3 and send.batches[-1][0]["PartitionKey"] == "q"
    assert not signals.fired.keys() - {"empty"}, "big, small and spread all have rows waiting in p"

    filler = rows_of("filler", 100 - 50 - 30 - 10)  # fills p up to 100: the batch goes out
    writer.add("filler", filler, signals.callback("filler", filler))
    assert len(send.batches) == 4 and len(send.batches[-1]) == 100
    assert signals.fired == Counter({"empty": 1, "big": 1, "small": 1, "spread": 1, "filler": 1})
    assert not signals.premature

    writer.flush()  # nothing left: nothing fires twice
    writer.flush()
    assert set(signals.fired.values()) == {1} and len(send.batches) == 4
    assert writer.waiting_owners == 0


def test_callback_runs_after_the_send_in_the_sending_thread_not_before() -> None:
    order: list[str] = []

    def send(rows: list[Row]) -> int:
        order.append(f"send {len(rows)}")
        return 1

    writer = PackedWriter(send)
    writer.add("a", rows_of("a", 40), lambda: order.append("a durable"))
    writer.add("b", rows_of("b", 60), lambda: order.append("b durable"))
    assert order == ["send 100", "a durable", "b durable"]


# -- failures -------------------------------------------------------------------------------------
def test_failed_batch_marks_its_owners_failed_and_propagates() -> None:
    send = FakeSend(fail=lambda number, rows: number == 0)
    writer = PackedWriter(send)
    signals = Signals(send)

    a, b = rows_of("a", 60), rows_of("b", 60)
    writer.add("a", a, signals.callback("a", a))
    with pytest.raises(RuntimeError, match="injected failure of batch 0"):
        writer.add("b", b, signals.callback("b", b))  # its 40th row fills the batch, whose send fails
    assert isinstance(writer.error, RuntimeError)

    c = rows_of("c", 10)
    writer.add("c", c, signals.callback("c", c))
    writer.flush()  # b's remaining rows were never queued; c's batch goes out fine
    assert signals.fired == Counter({"c": 1}), "owners of the failed batch are never signalled durable"
    assert writer.waiting_owners == 2
    assert send.partitions_sent() == ["p"] and len(send.batches[0]) == 10


def test_owner_with_one_failed_batch_never_fires_even_if_its_other_batches_succeed() -> None:
    send = FakeSend(fail=lambda number, rows: rows[0]["PartitionKey"] == "bad")
    writer = PackedWriter(send)
    signals = Signals(send)
    rows = rows_of("x", 150, lambda i: "bad" if i < 50 else "good")  # "good" fills a batch: sent first
    writer.add("x", rows, signals.callback("x", rows))
    assert len(send.batches) == 1
    with pytest.raises(RuntimeError):
        writer.flush()
    assert not signals.fired
    assert writer.waiting_owners == 1
    assert writer.error is not None


def test_an_exception_in_send_keeps_the_first_error() -> None:
    send = FakeSend(fail=lambda number, rows: True)
    writer = PackedWriter(send)
    writer.add("a", rows_of("a", 5, "p1"), lambda: None)
    writer.add("b", rows_of("b", 5, "p2"), lambda: None)
    with pytest.raises(RuntimeError, match="batch 0"):
        writer.flush(["p1"])
    first = writer.error
    with pytest.raises(RuntimeError, match="batch 1"):
        writer.flush(["p2"])
    assert writer.error is first
    assert writer.waiting_owners == 2


# -- flush_own ------------------------------------------------------------------------------------
def test_flush_own_sends_only_the_partitions_the_owner_touched() -> None:
    send = FakeSend()
    writer = PackedWriter(send)
    signals = Signals(send)
    y = rows_of("y", 10, lambda i: "shared" if i < 5 else "other")
    writer.add("y", y, signals.callback("y", y))
    x = rows_of("x", 130, lambda i: "shared" if i < 3 else f"x_{i % 2:04d}")  # 64 + 63 in two own shards
    writer.add("x", x, signals.callback("x", x), flush_own=True)

    assert sorted(send.partitions_sent()) == ["shared", "x_0000", "x_0001"]
    assert signals.fired == Counter({"x": 1}), "x is durable as soon as add returns"
    assert not signals.premature
    assert writer.buffered == 5, "y's rows in 'other' wait for a full batch or the final flush"
    shared = next(b for b in send.batches if b[0]["PartitionKey"] == "shared")
    assert len(shared) == 8  # y's 5 rows went along with x's 3

    writer.flush()
    assert signals.fired == Counter({"x": 1, "y": 1})


def test_without_flush_own_partial_batches_wait() -> None:
    send = FakeSend()
    writer = PackedWriter(send)
    fired: list[str] = []
    writer.add("x", rows_of("x", 30, "x_0000"), lambda: fired.append("x"))
    assert send.batches == [] and fired == []
    writer.flush(["nothing-here"])
    assert send.batches == [] and fired == []
    writer.flush(["x_0000"])
    assert fired == ["x"]


# -- sequential partition keys ----------------------------------------------------------------------
def test_sequential_keys_switch_every_partition_rows() -> None:
    send = FakeSend()
    writer = PackedWriter(send, sequential=lambda i: f"run_{i:05d}", partition_rows=20)
    added: list[Row] = []
    for k in range(7):
        rows = [{"PartitionKey": "", "RowKey": f"o{k}-{i}", "id": f"o{k}-{i}"} for i in range(9)]
        writer.add(f"o{k}", rows, lambda: None)
        added += rows
    writer.flush()
    assert [r["PartitionKey"] for r in added] == [f"run_{i // 20:05d}" for i in range(63)]
    check_batches(send)
    sizes = Counter(r["PartitionKey"] for b in send.batches for r in b)
    assert sizes == Counter({"run_00000": 20, "run_00001": 20, "run_00002": 20, "run_00003": 3})
    assert writer.partitions == set(sizes)


def test_sequential_partitions_larger_than_a_batch() -> None:
    send = FakeSend()
    writer = PackedWriter(send, sequential=lambda i: f"run_{i:05d}", partition_rows=250)
    rows = [{"PartitionKey": "", "RowKey": str(i), "id": str(i)} for i in range(600)]
    fired: list[int] = []
    writer.add("one", rows, lambda: fired.append(len(send.batches)))
    assert [len(b) for b in send.batches] == [100, 100, 100, 100, 100]  # 50 + 50 wait
    assert not fired
    writer.flush()
    assert fired == [7]
    per_partition = Counter(b[0]["PartitionKey"] for b in send.batches)
    assert per_partition == Counter({"run_00000": 3, "run_00001": 3, "run_00002": 1})
    assert Counter(r["PartitionKey"] for b in send.batches for r in b) == Counter(
        {"run_00000": 250, "run_00001": 250, "run_00002": 100}
    )


# -- contract -------------------------------------------------------------------------------------
def test_adding_the_same_owner_twice_raises() -> None:
    send = FakeSend()
    writer = PackedWriter(send)
    fired: list[str] = []
    writer.add("a", rows_of("a", 5), lambda: fired.append("first"))
    with pytest.raises(ValueError, match="already added"):
        writer.add("a", rows_of("a2", 5), lambda: fired.append("second"))
    writer.flush()
    assert fired == ["first"]
    assert [r["id"] for b in send.batches for r in b] == [f"a-{i:05d}" for i in range(5)], (
        "the refused rows were not queued"
    )


def test_adding_an_owner_again_after_it_was_signalled_raises() -> None:
    """Exactly once per owner: an owner already signalled durable cannot be signalled again."""
    writer = PackedWriter(FakeSend())
    fired: list[str] = []
    writer.add("a", [], lambda: fired.append("first"))
    writer.add("b", rows_of("b", 3), lambda: fired.append("b"))
    writer.flush()
    with pytest.raises(ValueError, match="already added"):
        writer.add("a", [], lambda: fired.append("again"))
    with pytest.raises(ValueError, match="already added"):
        writer.add("b", rows_of("b", 3), lambda: fired.append("b again"))
    writer.flush()
    assert fired == ["first", "b"]


# -- concurrency ----------------------------------------------------------------------------------
@pytest.mark.parametrize("sequential", [False, True], ids=["own-keys", "sequential"])
def test_concurrent_adds_send_every_row_once_and_signal_every_owner_once(sequential: bool) -> None:
    send = FakeSend()
    writer = PackedWriter(
        send,
        sequential=(lambda i: f"run_{i:05d}") if sequential else None,
        partition_rows=130 if sequential else None,
    )
    signals = Signals(send)
    expected: list[str] = []
    expected_lock = threading.Lock()
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def worker(t: int) -> None:
        rng = random.Random(t)
        try:
            barrier.wait()
            for k in range(50):
                owner = f"t{t}-o{k}"
                n = rng.choice((0, 1, 3, 7, 40, 99, 100, 101, 250))
                kind = "shard" if n > 100 else "bucket"
                rows = rows_of(owner, n, lambda i, kind=kind: f"{kind}-{rng.randrange(3)}")
                with expected_lock:
                    expected.extend(r["id"] for r in rows)
                writer.add(owner, rows, signals.callback(owner, rows), flush_own=n > 100 and not sequential)
        except BaseException as exc:  # pragma: no cover - surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors
    writer.flush()

    sent = [r["id"] for b in send.batches for r in b]
    assert len(sent) == len(set(sent)), "no row sent twice"
    assert sorted(sent) == sorted(expected), "no row lost"
    check_batches(send)
    assert sorted(signals.fired) == sorted(f"t{t}-o{k}" for t in range(8) for k in range(50))
    assert set(signals.fired.values()) == {1}, "each owner signalled exactly once"
    assert not signals.premature, "no owner signalled before all its rows were sent"
    assert writer.transactions == len(send.batches)
    assert writer.rows == len(expected)
    assert writer.waiting_owners == 0 and writer.buffered == 0
    if sequential:
        sizes = sorted(Counter(r["PartitionKey"] for b in send.batches for r in b).items())
        assert [k for k, _ in sizes] == [f"run_{i:05d}" for i in range(len(sizes))], "partitions numbered without gaps"
        assert all(n == 130 for _, n in sizes[:-1]) and 0 < sizes[-1][1] <= 130


# -- deferred rows: rendered when their batch is sent --------------------------------------------


def test_deferred_rows_wait_as_keys_and_are_rendered_when_their_batch_is_sent() -> None:
    """A state row waits in its partition's partial batch until later slices fill it: it waits as
    its key (``DeferredRow``), and is rendered once, as its batch goes out."""
    from shared.core.schema import DeferredRow

    rendered: list[str] = []

    def render(key: str) -> Row:
        rendered.append(key)
        return {"PartitionKey": f"shard-{int(key) % 3}", "RowKey": key, "id": key}

    send = FakeSend()
    signals = Signals(send)
    w = PackedWriter(send, name="state")
    ids_a, ids_b = [{"id": str(n)} for n in range(250)], [{"id": str(n)} for n in range(250, 320)]
    w.add("a", [DeferredRow(f"shard-{n % 3}", str(n), render) for n in range(250)], signals.callback("a", ids_a))
    # 250 keys over three partitions: 84, 83, 83 queued, none full, nothing rendered or sent.
    assert rendered == [] and send.batches == [] and w.buffered == 250
    w.add("b", [DeferredRow(f"shard-{n % 3}", str(n), render) for n in range(250, 320)], signals.callback("b", ids_b))
    # b's rows fill each partition past 100: three batches rendered and sent, 20 rows still wait.
    assert len(send.batches) == 3 and len(rendered) == 300 and w.buffered == 20
    assert all(len(b) == 100 and {r["PartitionKey"] for r in b} == {b[0]["PartitionKey"]} for b in send.batches)
    w.flush()
    assert sorted(rendered, key=int) == [str(n) for n in range(320)]  # each once
    assert send.sent() == {str(n) for n in range(320)}
    assert signals.fired == {"a": 1, "b": 1} and signals.premature == []


def test_a_deferred_row_in_a_sequential_writer_is_refused() -> None:
    from shared.core.schema import DeferredRow

    w = PackedWriter(FakeSend(), sequential=lambda i: f"run_{i:05d}", name="results")
    with pytest.raises(TypeError, match="deferred row"):
        w.add("a", [DeferredRow("p", "k", lambda key: {"PartitionKey": "p", "RowKey": key})], lambda: None)


def test_a_batch_is_sending_until_its_owners_next_steps_are_submitted() -> None:
    """``sending`` (what a stall asks before it sends partial batches early) holds from the send
    until the owners' callbacks have run, and after a failed send it is clear again."""
    seen: list[tuple[str, bool]] = []
    writer: PackedWriter

    def send(rows: list[Row]) -> int:
        seen.append(("send", writer.sending))
        if rows[0]["id"].startswith("bad"):
            raise RuntimeError("injected")
        return 1

    writer = PackedWriter(send)
    assert not writer.sending
    writer.add("a", rows_of("a", 3), lambda: seen.append(("durable", writer.sending)))
    assert not writer.sending, "nothing is sent until the batch fills or is flushed"
    writer.flush()
    assert seen == [("send", True), ("durable", True)]
    assert not writer.sending
    writer.add("bad", rows_of("bad", 2), lambda: None)
    with pytest.raises(RuntimeError):
        writer.flush()
    assert not writer.sending, "a failed send is no longer in flight"
