"""``shared.run.budget.HeldBudget``: the hard cap on records and state rows held in memory, with back-pressure.

Pure: threads stand in for subscriptions being listed (producers) and for the writers that let a
subscription go only once its partial batches are sent (a flush).
"""

from __future__ import annotations

import threading
import time

import pytest

from shared.core.errors import AuditFailed
from shared.run.budget import HeldBudget


def run_threads(*targets, timeout: float = 10.0) -> list[BaseException]:  # type: ignore[no-untyped-def]
    errors: list[BaseException] = []

    def guarded(target):  # type: ignore[no-untyped-def]
        def run() -> None:
            try:
                target()
            except BaseException as exc:  # collected for the assertion
                errors.append(exc)

        return run

    threads = [threading.Thread(target=guarded(t), daemon=True) for t in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
        assert not thread.is_alive(), "a producer is still waiting: deadlock"
    return errors


def test_below_the_cap_nothing_waits() -> None:
    budget = HeldBudget(10)
    a, b = budget.admit("a"), budget.admit("b")
    a.take(4)
    b.take(6)
    assert budget.held == 10 and budget.waits == 0
    a.release()
    a.release()  # idempotent
    assert budget.held == 6


def test_a_producer_waits_at_the_cap_until_another_lets_go() -> None:
    budget = HeldBudget(5, flush_every=0.05)
    first, second = budget.admit("first"), budget.admit("second")
    first.take(5)
    taken = threading.Event()

    def producer() -> None:
        second.take(1)
        taken.set()

    thread = threading.Thread(target=producer, daemon=True)
    thread.start()
    assert not taken.wait(0.3), "took past the cap"
    assert budget.held == 5
    first.release()
    assert taken.wait(2)
    thread.join(2)
    assert budget.held == 1 and budget.waits == 1 and budget.peak == 5


def test_the_senior_never_waits_so_one_subscription_larger_than_the_cap_completes() -> None:
    budget = HeldBudget(3)
    big, small = budget.admit("big"), budget.admit("small")
    for _ in range(10):
        big.take()  # first to hold: senior, past the cap alone
    assert budget.held == 10 and budget.waits == 0
    done = threading.Event()
    thread = threading.Thread(target=lambda: (small.take(), done.set()), daemon=True)
    thread.start()
    assert not done.wait(0.3)
    big.release()
    assert done.wait(2)


def test_one_that_holds_nothing_yet_is_never_what_another_waits_for() -> None:
    # Resource Graph: a subscription admitted early waits for the loader (holding nothing) while the
    # loader feeds another one, which must not wait for it.
    budget = HeldBudget(2)
    budget.admit("waits for its listing")  # admitted first, never takes
    fed = budget.admit("being fed")
    for _ in range(5):
        fed.take()
    assert budget.held == 5 and budget.waits == 0


def test_every_producer_waiting_gets_the_held_ones_flushed_out_and_all_complete() -> None:
    """The deadlock the cap could cause: every producer waits, and what they wait for (subscriptions
    whose rows sit in partial batches) completes only when someone flushes. The waiting producers
    ask for the flush; all of them complete, and the run never held more than the cap plus its
    largest subscription."""
    parked: list = []  # holds of subscriptions listed whole: their rows wait in partial batches
    lock = threading.Lock()

    def flush() -> bool:
        with lock:
            ready, parked[:] = list(parked), []
        for hold in ready:
            hold.release()
        return True

    budget = HeldBudget(50, stalled=flush, flush_every=0.01)
    sizes = [7, 3, 60, 12, 1, 25, 9, 40, 2, 18] * 4

    def producer(offset: int) -> None:
        for index in range(offset, len(sizes), 4):
            hold = budget.admit(f"sub{index}")
            for _ in range(sizes[index]):
                hold.take()
            hold.listed()  # its rows are queued: it waits for the writers now
            with lock:
                parked.append(hold)

    errors = run_threads(*(lambda k=k: producer(k) for k in range(4)))
    assert not errors
    flush()
    assert budget.held == 0
    assert budget.waits > 0 and budget.stall_flushes > 0, "the producers did wait, and asked for flushes"
    assert budget.peak <= budget.cap + max(sizes)


def test_no_flush_while_a_listing_that_holds_something_still_runs() -> None:
    """Its rows fill the batches: a flush then would only send them half-empty. A subscription that
    holds nothing yet (Resource Graph's, waiting for the loader) does not count."""
    flushes: list[int] = []
    budget = HeldBudget(2, stalled=lambda: flushes.append(1) or True, flush_every=0.01)
    budget.admit("waits for the loader")
    running = budget.admit("running")
    running.take(2)  # senior, listing, not waiting
    waiting = budget.admit("waiting")
    thread = threading.Thread(target=waiting.take, daemon=True)
    thread.start()
    time.sleep(0.3)
    assert not flushes, "flushed while a listing could still fill the batches"
    running.listed()  # now only writers can make room
    deadline = time.monotonic() + 5
    while not flushes and time.monotonic() < deadline:
        time.sleep(0.01)
    assert flushes, "every listing that holds something waits: the waiting one asks for a flush"
    running.release()
    thread.join(2)
    assert not thread.is_alive()


def test_a_stall_that_sends_nothing_is_not_a_flush_and_is_asked_again() -> None:
    """While a write or a step is in flight the pipeline sends nothing (``stalled`` returns False):
    not counted as a flush, and asked again a ``flush_every`` later, until it does flush."""
    calls: list[bool] = []
    busy = threading.Event()
    busy.set()
    budget = HeldBudget(2, flush_every=0.01)
    running = budget.admit("rows queued")
    running.take(2)
    running.listed()  # only the writers can make room now

    def stalled() -> bool:
        flushed = not busy.is_set()
        calls.append(flushed)
        if flushed:
            running.release()
        return flushed

    budget._stalled = stalled
    waiting = budget.admit("waiting")
    thread = threading.Thread(target=waiting.take, daemon=True)
    thread.start()
    deadline = time.monotonic() + 5
    while len(calls) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(calls) >= 3 and not any(calls), "asked again while something was in flight"
    assert budget.stall_flushes == 0, "nothing sent: no flush counted"
    busy.clear()  # what was in flight is done: now a flush is what lets the waiting one go
    thread.join(5)
    assert not thread.is_alive()
    assert calls[-1] and budget.stall_flushes == 1


def test_a_failure_elsewhere_stops_the_waiting_producers() -> None:
    failure: list[BaseException] = []
    budget = HeldBudget(1, failed=lambda: failure[0] if failure else None, flush_every=0.02)
    budget.admit("stuck").take()  # never released: its write failed
    waiting = budget.admit("waiting")

    def fail_soon() -> None:
        time.sleep(0.1)
        failure.append(RuntimeError("the state write failed"))

    errors = run_threads(lambda: waiting.take(), fail_soon)
    assert len(errors) == 1 and isinstance(errors[0], AuditFailed)
    assert "the state write failed" in str(errors[0])


def test_a_wait_without_any_release_gives_up_loudly() -> None:
    clock = [0.0]

    def tick() -> float:
        clock[0] += 1.0
        return clock[0]

    budget = HeldBudget(1, flush_every=0.001, stall_seconds=5, clock=tick)
    stuck = budget.admit("stuck")
    stuck.take()
    stuck.listed()  # waits for writers that never complete
    with pytest.raises(AuditFailed, match="nothing held in memory was released for 5 s while every listing"):
        budget.admit("waiting").take()


def test_a_long_listing_is_progress_not_a_stall() -> None:
    """The senior may list for longer than the stall limit (a huge subscription under ARM's
    throttling) while the others wait: that is not a stall."""
    clock = [0.0]

    def tick() -> float:
        clock[0] += 1.0
        return clock[0]

    budget = HeldBudget(1, flush_every=0.001, stall_seconds=5, clock=tick)
    senior = budget.admit("huge")
    senior.take()  # still listing, not waiting
    waiting = budget.admit("waiting")
    thread = threading.Thread(target=waiting.take, daemon=True)
    thread.start()
    time.sleep(0.3)  # hundreds of checks: far past 5 "seconds"
    assert thread.is_alive(), "gave up while the senior was still listing"
    senior.release()
    thread.join(2)
    assert not thread.is_alive() and budget.held == 1


def test_the_cap_must_be_positive() -> None:
    with pytest.raises(ValueError):
        HeldBudget(0)


def test_the_largest_holds_say_who_holds_and_what_each_does() -> None:
    """What a stall's log line names: the holds holding most, largest first, each with what it does."""
    budget = HeldBudget(10, flush_every=0.01, stall_seconds=5)
    queued = budget.admit("sub-queued")
    queued.take(6)
    queued.listed()
    listing = budget.admit("sub-listing")
    listing.take(2)
    budget.admit("sub-nothing")  # holds nothing: not named
    waiting = budget.admit("sub-waiting")
    waiting.take(1)
    thread = threading.Thread(target=waiting.take, args=(4,), daemon=True)
    thread.start()
    until = time.monotonic() + 5
    while not waiting.waiting and time.monotonic() < until:  # a fixed sleep is a race on a loaded machine
        time.sleep(0.01)
    assert budget.largest() == [
        "sub-queued: 6 (rows queued)",
        "sub-listing: 2 (listing)",
        "sub-waiting: 1 (waiting at the cap)",
    ]
    queued.give_back(6)
    thread.join(2)
    assert budget.largest(1) == ["sub-waiting: 5 (listing)"]
