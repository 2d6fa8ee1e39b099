"""The answers from ARM or Resource Graph that are not taken: each an ``AzureError``, so the
adapters treat it as any failed read of that scope (a visible ERROR row, never a short list).
"""

from __future__ import annotations

from azure.core.exceptions import AzureError


class PagingLoopError(AzureError):
    """ARM returned a ``nextLink`` (or Resource Graph a ``$skipToken``) already followed: stop
    instead of looping forever, and treat what was listed as incomplete."""


class TruncatedAnswerError(AzureError):
    """Resource Graph says its answer is truncated (``resultTruncated``): rows are missing and no
    ``$skipToken`` leads to them, so the answer is incomplete, never a short list to trust."""


class ForeignLinkError(AzureError):
    """A request (a ``nextLink`` to follow) names another origin than the endpoint: not sent."""


class RedirectRefusedError(AzureError):
    """ARM or Resource Graph answered with a redirect (3xx): not followed, so no answer is taken
    from anywhere but the endpoint; the scope being read is unreadable."""
