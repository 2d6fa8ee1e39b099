"""ARM's list pages as JSON: the one ARM shortcut, behind its self-check and the SDK's own pager.

:data:`PAGER_ARGS`: ``ItemPaged._args`` as ``(get_next, extract_data)``, to page ARM's lists as JSON
instead of deserialized models (:func:`json_pager`); checked once per process by
:func:`check_pager_args` (a tiny ``ItemPaged`` is rebuilt and paged), switched by ``shortcuts.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from azure.core.paging import ItemPaged

from .shortcuts import register, usable, warn_once


def check_pager_args() -> str | None:
    """``ItemPaged(get_next, extract_data)`` keeps them as ``_args``, and an ``ItemPaged`` rebuilt
    from that ``get_next`` with another ``extract_data`` pages through it, continuation included."""
    pages: Mapping[str | None, tuple[str | None, list[str]]] = {None: ("next", ["a", "b"]), "next": (None, ["c"])}

    def get_next(token: str | None = None) -> str | None:
        return token

    def extract_data(response: str | None) -> tuple[str | None, Iterator[str]]:
        link, items = pages[response]
        return link, iter(items)

    args = getattr(ItemPaged(get_next, extract_data), "_args", None)
    if not (isinstance(args, tuple) and len(args) == 2 and args[0] is get_next and args[1] is extract_data):
        return "ItemPaged does not keep (get_next, extract_data) as _args"

    def upper(response: str | None) -> tuple[str | None, Iterator[str]]:
        link, items = extract_data(response)
        return link, (item.upper() for item in items)

    by_page: Iterator[Iterator[str]] = ItemPaged(args[0], upper).by_page()
    first = list(next(by_page))
    token = getattr(by_page, "continuation_token", None)
    rest = [item for page in by_page for item in page]
    if (first, token, rest) != (["A", "B"], "next", ["C"]):
        return f"an ItemPaged rebuilt from _args paged {first!r}, {token!r}, {rest!r}"
    return None


PAGER_ARGS = register("ItemPaged._args (get_next, extract_data)", "the SDK's own pager (models)", check_pager_args)


def json_pager(pager: Any, extract_data: Callable[[Any], tuple[str | None, Iterator[Any]]]) -> Any | None:
    """The SDK operation's pager rebuilt with another ``extract_data``, or ``None`` (use ``pager``).

    An ``ItemPaged`` is built from ``(get_next, extract_data)``; keeping the operation's own
    ``get_next`` keeps its request builder, api-version, the client's pipeline (auth, retry,
    ``Retry-After``) and its error mapping, and replacing ``extract_data`` skips the model
    deserialization (about 1 ms of CPU per site, most of the audit's own CPU at 100k sites; no
    hook skips it: ``cls`` runs after deserialization). ``None`` when the self-check failed or
    when this pager is shaped otherwise (logged once).
    """
    if not usable(PAGER_ARGS):
        return None
    args = getattr(pager, "_args", None)
    if isinstance(pager, ItemPaged) and isinstance(args, tuple) and len(args) == 2 and callable(args[0]):
        return ItemPaged(args[0], extract_data)
    warn_once(PAGER_ARGS, f"a {type(pager).__name__} pager has no _args of (get_next, extract_data)")
    return None
