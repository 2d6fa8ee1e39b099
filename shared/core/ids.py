"""Subscription ids: the one rule for what the audit accepts as one.

A subscription id is a GUID in its canonical 8-4-4-4-12 hexadecimal form, compared
case-insensitively and kept in lower case. The same rule reads ``AUDIT_SUBSCRIPTIONS``, the
``--subscription`` options of the command line and the subscription segment of an exemption scope
(which embeds :data:`SUBSCRIPTION_ID_PATTERN` in its path pattern).
"""

from __future__ import annotations

import re

#: A subscription id's shape, to be matched case-insensitively (also inside a longer pattern).
SUBSCRIPTION_ID_PATTERN = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
_SUBSCRIPTION_ID = re.compile(SUBSCRIPTION_ID_PATTERN, re.IGNORECASE)


def subscription_id(value: str) -> str:
    """``value`` trimmed and in lower case if it is a subscription id; else :class:`ValueError`."""
    candidate = value.strip()
    if not _SUBSCRIPTION_ID.fullmatch(candidate):
        raise ValueError(f"{value!r} is not a subscription id")
    return candidate.lower()
