"""Points in time as people type them on the command line (``--expires``, ``--since``)."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta

_AMOUNT = re.compile(r"^\+?(\d{1,5})\s*([mhdw])$", re.IGNORECASE)
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_when(text: str, now: datetime, *, direction: int) -> datetime:
    """``YYYY-MM-DD`` (00:00 UTC that day), an ISO date-time (UTC when no offset), or an amount
    like ``30d``/``12h``/``2w``/``90m`` counted from ``now`` forward (``direction=1``) or back
    (``direction=-1``). Raises :class:`ValueError` for anything else."""
    raw = text.strip()
    amount = _AMOUNT.match(raw)
    if amount:
        return now + direction * timedelta(**{_UNITS[amount.group(2).lower()]: int(amount.group(1))})
    if len(raw) == 10:
        day = date.fromisoformat(raw)
        return datetime(day.year, day.month, day.day, tzinfo=UTC)
    parsed = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    return parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def as_utc(value: object) -> datetime | None:
    """A stored point in time as an aware UTC datetime: a ``datetime`` (naive taken as UTC) or an
    ISO 8601 string; ``None`` for anything else. The one normaliser for what tables hand back."""
    if isinstance(value, str) and value:
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    if isinstance(value, datetime):
        return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    return None
