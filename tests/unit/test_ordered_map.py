"""``shared.azure.threads.ordered_map``: results in order, with at most ``ahead`` calls not yet taken."""

from __future__ import annotations

import threading
import time

from shared.azure.threads import executor, ordered_map


def test_results_come_in_order_and_a_slow_consumer_holds_at_most_ahead_of_them() -> None:
    started: list[int] = []
    lock = threading.Lock()

    def work(n: int) -> int:
        with lock:
            started.append(n)
        time.sleep(0.001 * (n % 3))
        return n * n

    with executor(4, "test") as pool:
        results = ordered_map(pool, work, range(50), 6)
        got = []
        for value in results:
            time.sleep(0.005)  # a consumer slower than the workers
            with lock:
                assert len(started) <= len(got) + 6, "more calls submitted than the window allows"
            got.append(value)
    assert got == [n * n for n in range(50)]


def test_a_consumer_that_stops_cancels_what_was_not_started() -> None:
    calls: list[int] = []
    with executor(1, "test") as pool:
        results = ordered_map(pool, lambda n: calls.append(n) or n, range(1000), 3)
        assert next(results) == 0
        results.close()
    assert len(calls) <= 4
