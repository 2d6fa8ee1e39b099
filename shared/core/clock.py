"""The clocks the engine reads, in one injectable object, and the table service's clock.

Every decision that needs time says which clock it uses (docs/design.md, "Exactly once"):

* the **host's wall clock** (:attr:`Clock.now`) stamps what a run saw: RunIds, ``AuditedAt``,
  ``FirstFailedAt``, exemption validity, the resume window, retention;
* the **host's monotonic clock** (:attr:`Clock.monotonic`) bounds durations on one host: the run's
  deadline, how long ago this run last proved its lease, how long a nightly run waits for a poll;
* the **table service's clock** (:class:`ServiceTime`, read from the ``Date`` of its answers)
  judges the lease: when it expires, and whether it has. Hosts' wall clocks may disagree by
  minutes; every host reads the same service clock;
* **Resource Graph's clock** (its change times) is the change poll's watermark (``changes.py``).

Tests (the model-based test above all) inject a :class:`Clock` per simulated host, skewed as
they like, and move the service's clock through the fault proxy in front of Azurite.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime

log = logging.getLogger(__name__)


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Clock:
    """A host's clocks: wall time, a monotonic counter (seconds) and a way to wait."""

    now: Callable[[], datetime] = field(default=_utc_now)
    monotonic: Callable[[], float] = field(default=time.monotonic)
    sleep: Callable[[float], None] = field(default=time.sleep)


SYSTEM_CLOCK = Clock()


def host_clock(now: Callable[[], datetime] | None = None, clock: Clock | None = None) -> Clock:
    """The clock an entry point runs on: ``clock``, or the system's with ``now`` as its wall clock."""
    if clock is not None:
        return clock
    return Clock(now=now) if now is not None else SYSTEM_CLOCK


#: One RFC 1123 date (``Tue, 03 Nov 2026 10:00:00 GMT``); a proxy may have joined two with a comma.
_HTTP_DATE = re.compile(r"[A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} GMT")


def http_date(value: str | None) -> datetime | None:
    """The first HTTP date in a ``Date`` header, as an aware UTC datetime (``None`` if there is none)."""
    match = _HTTP_DATE.search(value or "")
    if match is None:
        return None
    try:
        return parsedate_to_datetime(match.group(0)).astimezone(UTC)
    except (TypeError, ValueError):
        return None


class ServiceTime:
    """The table service's clock as one host knows it: the ``Date`` of its latest answer, advanced
    by this host's monotonic clock since. ``Date`` has whole seconds and is stamped when the service
    took the request, so the estimate runs at most a second behind the service; host clock skew
    plays no part."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._anchor: tuple[datetime, float] | None = None
        self.fell_back = False  # no answer carried a Date: the host's clock stood in

    def observe(self, date_header: str | None, sent_at: float) -> None:
        """Record an answer's ``Date`` for a request sent at ``sent_at`` (monotonic)."""
        when = http_date(date_header)
        if when is None:
            return
        with self._lock:
            self._anchor = (when, sent_at)

    def now(self) -> datetime:
        """The service's time now; the host's wall clock only if no answer ever carried a ``Date``
        (Table Storage and Azurite always send one; :attr:`fell_back` records that it happened)."""
        with self._lock:
            anchor = self._anchor
        if anchor is None:
            if not self.fell_back:
                self.fell_back = True
                log.warning("The table service sent no Date header: the lease is judged by this host's clock")
            return self.clock.now()
        when, sent_at = anchor
        return when + timedelta(seconds=max(0.0, self.clock.monotonic() - sent_at))
