"""The lease's heartbeat outlives nothing: a renewal still in flight when the run ends (its
retries outlast ``stop()``'s join) meets a closed store, and ends quietly instead of dying with
an unhandled exception in a thread the host would report."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from shared.core.clock import SYSTEM_CLOCK
from shared.run.lease import LeaseKeeper


class ClosingStore:
    """Answers the first renewal only after the run has stopped the heartbeat, as a closed
    transport does (azure-core raises ``ValueError`` from a closed client)."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def update_lease(self, entity: Any, service: Any, **changes: Any) -> Any:
        self.entered.set()
        self.release.wait(5)
        raise ValueError("HTTP transport has already been closed.")


def _keeper(store: ClosingStore) -> LeaseKeeper:
    return LeaseKeeper(store, "owner", 3, SYSTEM_CLOCK)  # type: ignore[arg-type]


def test_a_renewal_that_meets_a_closed_store_after_stop_ends_quietly(monkeypatch: pytest.MonkeyPatch) -> None:
    raised: list[BaseException | None] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: raised.append(args.exc_value))
    store = ClosingStore()
    keeper = _keeper(store)
    keeper.start()
    assert store.entered.wait(5), "the heartbeat never renewed"
    keeper._stop.set()  # the run ends while the renewal is in flight
    store.release.set()
    assert keeper._heartbeat is not None
    keeper._heartbeat.join(5)
    assert not keeper._heartbeat.is_alive()
    assert raised == []


def test_the_same_error_while_the_run_goes_on_is_not_hidden() -> None:
    store = ClosingStore()
    store.release.set()
    with pytest.raises(ValueError, match="closed"):
        _keeper(store).renew()
