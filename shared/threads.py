"""Threads that the audit starts carry the invocation's logging context.

The Functions Python worker tags each log record with the invocation id it reads from a
thread-local (``func.Context.thread_local_storage``) that it sets only on the thread running the
function, and the host drops user records without a running invocation's id. So every thread the
audit starts (subscription fan-out, group lists, the Resource Graph loader) runs a
:data:`ThreadInit` first that copies the id into its own thread-local; without it, NewFailure
events and warnings logged on those threads never reach Application Insights.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Protocol, TypeVar

T = TypeVar("T")
R = TypeVar("R")

#: Runs first on every thread the audit starts.
ThreadInit = Callable[[], None]


def _nothing() -> None:
    """No context to carry (the CLI, tests that call the engine directly)."""


NO_CONTEXT: ThreadInit = _nothing


class InvocationContext(Protocol):
    """What the engine reads of ``azure.functions.Context`` (kept structural: no import here)."""

    @property
    def invocation_id(self) -> str: ...

    @property
    def thread_local_storage(self) -> Any: ...


def invocation_initializer(context: InvocationContext) -> ThreadInit:
    """The thread initializer Microsoft's Python developer reference prescribes for threads a
    function creates: ``context.thread_local_storage.invocation_id = context.invocation_id``."""
    invocation_id = context.invocation_id
    storage = context.thread_local_storage

    def init() -> None:
        storage.invocation_id = invocation_id

    return init


def executor(max_workers: int, name: str, init: ThreadInit = NO_CONTEXT) -> ThreadPoolExecutor:
    """A pool whose every worker thread carries the invocation context."""
    return ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix=name, initializer=init)


def thread(target: Callable[[], None], name: str, init: ThreadInit = NO_CONTEXT) -> threading.Thread:
    """A daemon thread that carries the invocation context (not started)."""

    def run() -> None:
        init()
        target()

    return threading.Thread(target=run, name=name, daemon=True)


def ordered_map(pool: ThreadPoolExecutor, fn: Callable[[T], R], items: Iterable[T], ahead: int) -> Iterator[R]:
    """``pool.map(fn, items)`` with at most ``ahead`` calls submitted and not yet taken: results come
    in order, and a consumer that waits (back-pressure) holds at most ``ahead`` results, not one per
    item (``Executor.map`` submits every item at once)."""
    pending: deque[Future[R]] = deque()
    source = iter(items)
    try:
        for item in source:
            pending.append(pool.submit(fn, item))
            if len(pending) >= ahead:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        for future in pending:
            future.cancel()
