"""``pipeline.audit_all``: subscriptions started as threads free up, results summed as
they come.

Submitting every subscription at once held a task per queued subscription, and a future and
result per finished one, until the run ended: memory in the tenant's subscriptions (issue 23).
Only the fan-out is exercised here (the audit itself is replaced); the audit's end-to-end
totals are checked against the emulators by the integration tests.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pytest

from shared.azure.threads import NO_CONTEXT
from shared.core.config import Settings
from shared.core.plan import SubscriptionResult
from shared.run import pipeline as pipeline_module
from shared.run.pipeline import SubscriptionPipeline, audit_all


class _CountingPool(ThreadPoolExecutor):
    """Counts futures submitted and not finished: what the fan-out keeps in flight."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lock = threading.Lock()
        self.outstanding = 0
        self.most = 0
        self.submitted = 0

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Future[Any]:
        with self.lock:
            self.outstanding += 1
            self.submitted += 1
            self.most = max(self.most, self.outstanding)
        future = super().submit(fn, *args, **kwargs)
        future.add_done_callback(self._done)
        return future

    def _done(self, _: Future[Any]) -> None:
        with self.lock:
            self.outstanding -= 1


def _pipeline(
    concurrency: int, audit: Any, monkeypatch: pytest.MonkeyPatch
) -> tuple[SubscriptionPipeline, list[_CountingPool]]:
    pools: list[_CountingPool] = []

    def counting_executor(workers: int, name: str, init: Any = NO_CONTEXT) -> _CountingPool:
        pool = _CountingPool(max_workers=workers, thread_name_prefix=name, initializer=init)
        pools.append(pool)
        return pool

    monkeypatch.setattr(pipeline_module, "executor", counting_executor)
    pipeline = SubscriptionPipeline.__new__(SubscriptionPipeline)
    pipeline.settings = Settings(concurrency=concurrency)
    pipeline.thread_init = NO_CONTEXT
    pipeline.audit = audit  # type: ignore[method-assign]
    pipeline.check = lambda: None  # type: ignore[method-assign]
    return pipeline, pools


def test_no_more_subscriptions_in_flight_than_threads_and_every_one_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    def audit(subscription_id: str) -> SubscriptionResult:
        time.sleep(0.002 * (int(subscription_id) % 3))
        result = SubscriptionResult(subscription_id, read=int(subscription_id) % 10 != 0, rows=2)
        result.counts["FAIL"] += 1
        result.new_failures = int(subscription_id) % 2
        return result

    pipeline, pools = _pipeline(3, audit, monkeypatch)
    ids = [str(n) for n in range(200)]
    totals = audit_all(pipeline, ids)

    assert pools[0].submitted == 200
    assert pools[0].most <= 3, f"{pools[0].most} subscriptions submitted at once with 3 threads"
    assert totals.audited == 200
    assert sorted(totals.read, key=int) == [i for i in ids if int(i) % 10 != 0]
    assert totals.partial  # 20 unreadable subscriptions
    assert totals.rows == 400 and totals.counts["FAIL"] == 200 and totals.new_failures == 100


def test_a_failed_subscription_stops_the_run_before_the_rest_start(monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[str] = []

    def audit(subscription_id: str) -> SubscriptionResult:
        started.append(subscription_id)
        if subscription_id == "5":
            raise RuntimeError("step failed")
        return SubscriptionResult(subscription_id)

    pipeline, _ = _pipeline(2, audit, monkeypatch)
    with pytest.raises(RuntimeError, match="step failed"):
        audit_all(pipeline, [str(n) for n in range(1000)])
    assert len(started) < 20, f"{len(started)} subscriptions started after one failed"
