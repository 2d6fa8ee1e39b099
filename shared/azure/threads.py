"""Threads that the audit starts carry the invocation's logging context.

The Functions Python worker tags each log record with the invocation id it reads from a
thread-local (``func.Context.thread_local_storage``) that it sets only on the thread running the
function, and the host drops user records without a running invocation's id. So every thread the
audit starts (subscription fan-out, group lists, the Resource Graph loader) runs a
:data:`ThreadInit` first that copies the id into its own thread-local; without it, NewFailure
events and warnings logged on those threads never reach Application Insights.
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Generic, Protocol, TypeVar

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


class HandOff(Generic[T]):
    """Items produced in a pool thread (:meth:`run`), handed to one consumer (:meth:`items`) a page
    of ``page_items`` at a time through a queue of ``pages_ahead`` pages: a producer that gets that
    far ahead waits for room (back-pressure), so what is in flight is bounded by those two numbers.
    A producer's error is raised where the items are taken; ``closed`` (set when the consumer ends
    early) releases a producer waiting for room."""

    _END = object()

    def __init__(self, closed: threading.Event, pages_ahead: int, page_items: int) -> None:
        self._pages: queue.Queue[Any] = queue.Queue(pages_ahead)
        self._closed = closed
        self._page_items = page_items

    def run(self, produce: Callable[[], Iterable[T]]) -> None:
        try:
            page: list[T] = []
            for item in produce():
                page.append(item)
                if len(page) == self._page_items:
                    self._put(page)
                    page = []
            self._put(page)
            self._put(self._END)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which raises it
            self._put(exc)

    def _put(self, item: Any) -> None:
        while not self._closed.is_set():
            try:
                self._pages.put(item, timeout=0.5)
                return
            except queue.Full:
                continue

    def items(self) -> Iterator[T]:
        while True:
            page = self._pages.get()
            if page is self._END:
                return
            if isinstance(page, BaseException):
                raise page
            yield from page
