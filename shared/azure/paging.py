"""Reading ARM list pages: as ARM's JSON, paced under ARM's read budget, never in a loop and never
off the ARM endpoint.

An azure-core ``ItemPaged`` follows ``nextLink`` by itself; these helpers read it page by page so
that a link already followed stops the listing (:class:`PagingLoopError`), a link to another origin
is refused before any request (``links.py``), and every page after the first waits for a read token
from the subscription's :class:`ReadPacer`.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, TypeVar

from azure.core.exceptions import AzureError, DecodeError
from azure.core.pipeline.policies import ContentDecodePolicy

from . import armpager
from .arm_errors import ForeignLinkError, PagingLoopError
from .links import check_next_link

T = TypeVar("T")


def _raw(item: Any) -> Mapping[str, Any]:
    """The JSON ARM sent for an SDK model (azure-mgmt-web 11 models are mappings over it)."""
    if isinstance(item, Mapping):
        return item
    as_dict = getattr(item, "as_dict", None)
    if callable(as_dict):
        result = as_dict()
        if isinstance(result, Mapping):
            return result
    return {}


class ReadPacer:
    """Keeps one subscription's concurrent reads under ARM's throttling instead of collecting 429s.

    ARM meters reads per subscription and principal as a bucket (250 reads, refilled at 25 a
    second) and reports what is left in ``x-ms-ratelimit-remaining-subscription-reads``. The pacer
    mirrors that bucket: each answer resets it to what ARM reported, each call takes one token
    (calls in flight are not in ARM's figure yet: ``reserve`` covers them), and it refills a little
    slower than ARM does. While tokens are left calls go out at once; then they wait their turn.
    A 429 that still happens is retried by azure-core after its ``Retry-After``.
    """

    def __init__(
        self,
        refill_per_second: float = 24.0,
        reserve: int = 8,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._refill = refill_per_second
        self._reserve = reserve
        self._clock = clock
        self._sleep = sleep
        self._tokens: float | None = None
        self._at = 0.0
        self._lock = threading.Lock()

    def observe(self, pipeline_response: Any) -> None:
        value = pipeline_response.http_response.headers.get("x-ms-ratelimit-remaining-subscription-reads")
        if value is None:
            return
        with contextlib.suppress(ValueError), self._lock:
            reported = float(int(value))
            now = self._clock()
            # Keep a reservation already handed out (tokens below zero) rather than forgetting it.
            if self._tokens is None or self._at <= now:
                self._tokens, self._at = reported, now

    def wait(self) -> None:
        with self._lock:
            if self._tokens is None:
                return
            now = self._clock()
            start = max(now, self._at)
            tokens = self._tokens + (start - self._at) * self._refill
            need = self._reserve + 1.0
            delay = max(0.0, (need - tokens) / self._refill)
            self._tokens = tokens + delay * self._refill - 1.0
            self._at = start + delay
            pause = self._at - now
        if pause > 0:
            self._sleep(pause)


def _then_refuse(items: Iterable[Any], error: AzureError) -> Iterator[Any]:
    """A page's items, then ``error``: what was read is kept, and the listed scope still gets its ERROR."""
    yield from items
    raise error


def _raw_page(pipeline_response: Any, pacer: ReadPacer | None = None) -> tuple[str | None, Iterator[Any]]:
    """``extract_data`` that keeps ARM's JSON: the next link and the page's ``value`` items as dicts.

    A ``nextLink`` to another origin than the request that fetched the page (so than the endpoint)
    is not returned: the page's items end with a :class:`~shared.azure.links.ForeignLinkError` instead.
    """
    if pacer is not None:
        pacer.observe(pipeline_response)
    # The management clients' ContentDecodePolicy has parsed the page already (and keeps it with the
    # response): parsing it again would cost the CPU and the memory of a second copy of every page.
    # Taken from the context, not read: the response stays with the pager until its next page, and
    # the parsed page (about 1 MB of objects for 100 full sites) is freed once its items are read.
    context = getattr(pipeline_response, "context", None)
    body = context.pop(ContentDecodePolicy.CONTEXT_NAME, None) if context is not None else None
    if body is None:
        try:
            body = pipeline_response.http_response.json()
        except ValueError as exc:  # as the SDK's own deserializer would: an AzureError, so a visible ERROR row
            raise DecodeError(f"ARM returned a page that is not valid JSON: {exc}") from exc
    if not isinstance(body, Mapping):
        return None, iter(())
    link, items = body.get("nextLink") or None, iter(body.get("value") or ())
    if link is not None:
        try:
            check_next_link(str(link), str(pipeline_response.http_request.url))
        except ForeignLinkError as refused:
            return None, _then_refuse(items, refused)
    return link, items


def raw_json_pages(pager: Any, pacer: ReadPacer | None = None) -> Any:
    """The SDK operation's pager, yielding ARM's JSON items (:func:`_raw_page`) instead of
    deserialized models: the operation's own ``get_next`` with our ``extract_data``
    (:func:`shared.azure.armpager.json_pager` says why and how). When that shortcut is unavailable,
    the SDK's pager is used unchanged (models, read through :func:`_raw`)."""
    rebuilt = armpager.json_pager(pager, functools.partial(_raw_page, pacer=pacer))
    return pager if rebuilt is None else rebuilt


def guarded_records(pager: Any, what: str, convert: Callable[[Any], T], pacer: ReadPacer | None = None) -> Iterator[T]:
    """ARM's list items through ``convert``, guarded as :func:`guarded_pages` says; each page is
    converted whole before its first item is handed over, so ARM's parsed page is freed before the
    consumer can wait.

    The audit's consumer waits with a page in hand: at the memory cap (``run/budget.py``), or a
    group list at its full hand-off. A page of 100 full sites parsed is about 1 MB of objects; its
    compact records about 60 KB. Handed over item by item from the parsed page, a waiting consumer
    kept the whole of it (up to five per audit thread with ARM's group lists). The items a page
    held before an error are still handed over, then the error is raised."""
    pages = raw_json_pages(pager, pacer).by_page()
    seen: set[str] = set()
    for page in pages:
        converted, failure = _converted(page, convert)
        del page  # exhausted: its list is let go (and the body with it, see _raw_page)
        yield from converted
        if failure is not None:
            raise failure  # after what the page held before it: what was read is kept
        del converted
        _next_page(pages, seen, what, pacer)


def _converted(page: Iterable[Any], convert: Callable[[Any], T]) -> tuple[list[T], AzureError | None]:
    """A page's items converted, and the error that ended it early, if one did (a refused link).
    In a frame of its own: nothing of the page outlives it (a loop variable would keep an item)."""
    out: list[T] = []
    try:
        for item in page:
            out.append(convert(item))
    except AzureError as exc:  # a refused link (_then_refuse)
        return out, exc
    return out, None


def _next_page(pages: Any, seen: set[str], what: str, pacer: ReadPacer | None) -> None:
    """Before the next page: refuse a ``nextLink`` already followed, and wait for a read token."""
    token = getattr(pages, "continuation_token", None)
    if token:
        if token in seen:
            raise PagingLoopError(f"{what}: ARM returned nextLink {token!r} twice (paging loop)")
        seen.add(token)
        if pacer is not None:  # the next page is a read too (the first one's caller waited)
            pacer.wait()


def guarded_pages(pager: Any, what: str, pacer: ReadPacer | None = None) -> Iterator[Any]:
    """Iterate an azure-core ``ItemPaged`` page by page (as ARM's JSON items), refusing to revisit
    a ``nextLink``; with a ``pacer``, every page after the first waits for its read token.

    A ``nextLink`` to another origin ends the iteration with a ``ForeignLinkError``: the raw pager
    refuses it in :func:`_raw_page`, and the SDK's model pager (if used) is stopped by the client's
    :class:`~shared.azure.links.PinnedEndpointPolicy` before the request leaves. Each page is taken
    whole before its first item is handed over (:func:`guarded_records`)."""
    return guarded_records(pager, what, _same, pacer)


def _same(item: Any) -> Any:
    return item
