"""The switch behind the SDK shortcuts: each checked once per process, each with a public fallback.

A few hot paths reach past an SDK's public surface because the public one costs most of the audit's
own CPU at 100k sites: the Table Storage ones are in ``fastpaths.py``, the ARM one in
``armpager.py``. Each registers here with its self-check (local, no network) and the public API
that replaces it. :func:`self_check` runs each check once, on first use; a shortcut that fails is
replaced by its fallback for the rest of the process, with one WARNING naming the internal that is
not what it should be. What is stored and read is the same either way: ``tests/contract`` runs both
paths against Azurite and the ARM emulator (:func:`use_public_api` forces the fallbacks) and
compares them. This module imports no SDK: the checks do.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from ..core.errors import one_line

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Shortcut:
    """One shortcut: what replaces it when it cannot be used, and how to tell."""

    fallback: str
    check: Callable[[], str | None]


class _Switch:
    """The self-checks' verdicts (each computed once) and the tests' switch to the public API."""

    def __init__(self) -> None:
        self.lock = threading.RLock()  # the checks may ask for a verdict while it is computed
        self.problems: dict[str, str | None] = {}
        self.forced_public = False
        self.warned: set[str] = set()


_SHORTCUTS: dict[str, Shortcut] = {}
_SWITCH = _Switch()


def register(name: str, fallback: str, check: Callable[[], str | None]) -> str:
    """Declare a shortcut, named by the internal it relies on (the name the WARNING uses)."""
    _SHORTCUTS[name] = Shortcut(fallback, check)
    return name


def self_check() -> dict[str, str | None]:
    """Each shortcut's problem (``None``: usable), checked on first use and then remembered; an
    unusable one is logged once at WARNING with the internal it misses and what is used instead."""
    with _SWITCH.lock:
        for name, shortcut in _SHORTCUTS.items():
            if name not in _SWITCH.problems:
                problem = _SWITCH.problems[name] = _run(shortcut.check)
                if problem:
                    warn_once(name, problem)
        return dict(_SWITCH.problems)


def _run(check: Callable[[], str | None]) -> str | None:
    try:
        return check()
    except Exception as exc:  # noqa: BLE001 - any surprise means the internal is not what we expect
        return f"self-check raised {one_line(exc, 300)}"


def warn_once(name: str, problem: str) -> None:
    """Say once per process that a shortcut is not used, why, and what is used instead."""
    with _SWITCH.lock:
        if name in _SWITCH.warned:
            return
        _SWITCH.warned.add(name)
    log.warning("SDK shortcut disabled: %s: %s; using %s instead", name, problem, _SHORTCUTS[name].fallback)


def usable(*names: str) -> bool:
    """Whether the fast path may use these shortcuts (all passed the self-check, none forced off)."""
    if _SWITCH.forced_public:
        return False
    problems = self_check()
    return all(problems.get(name) is None for name in names)


@contextlib.contextmanager
def use_public_api() -> Iterator[None]:
    """Within the block, every shortcut takes its public fallback (the contract test's switch)."""
    with _SWITCH.lock:
        before, _SWITCH.forced_public = _SWITCH.forced_public, True
    try:
        yield
    finally:
        with _SWITCH.lock:
            _SWITCH.forced_public = before
