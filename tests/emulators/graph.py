"""Resource Graph answers that cannot be trusted to be complete, for the ARM emulator's hooks.

Resource Graph does not fail when it cannot give everything: it trims. A page may say
``resultTruncated: "true"`` (rows are missing and no ``$skipToken`` leads to them), a broken
service may hand out a ``$skipToken`` it handed out before, and rows the identity may not read (a
deny assignment on one group) are simply absent. These build the emulator's
``resource_graph_answer`` and ``resource_graph_hides`` hooks for each::

    arm.resource_graph_answer = truncated_after(5)
    arm.resource_graph_answer = repeated_skip_token()
    arm.resource_graph_hides = hide_group(subscription_id, "rg-secret")
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from shared.azure.changefeed import CHANGES_QUERY

Answer = Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]]

__all__ = ["Answer", "hide_group", "is_change_query", "repeated_skip_token", "truncated_after"]


def is_change_query(request: dict[str, Any]) -> bool:
    """Whether a request is the change poll's ``resourcechanges`` query (else the sites query)."""
    return str(request.get("query") or "").startswith(CHANGES_QUERY.partition("{since}")[0])


def _applies(request: dict[str, Any], query: str) -> bool:
    return query == "any" or (query == "changes") == is_change_query(request)


def truncated_after(rows: int, query: str = "any") -> Answer:
    """Every answer of ``query`` (``"sites"``, ``"changes"`` or ``"any"``) keeps at most its first
    ``rows`` rows, says ``resultTruncated: "true"`` and has no ``$skipToken``: what Resource Graph
    sends when it cuts a result it cannot page."""

    def answer(doc: dict[str, Any], request: dict[str, Any]) -> dict[str, Any]:
        if not _applies(request, query):
            return doc
        data = list(doc.get("data") or [])[:rows]
        out = {**doc, "data": data, "count": len(data), "resultTruncated": "true"}
        out.pop("$skipToken", None)
        return out

    return answer


def repeated_skip_token(query: str = "any", times: int = 5) -> Answer:
    """The ``$skipToken`` of every later page of ``query`` is the first one handed out (a paging loop),
    ``times`` times at most, then the answer ends: a client without a guard reads the same pages again
    and again and still finishes, so a test can tell it from one that stopped."""
    first: list[str] = []
    repeated = [0]

    def answer(doc: dict[str, Any], request: dict[str, Any]) -> dict[str, Any]:
        token = doc.get("$skipToken")
        if not _applies(request, query):
            return doc
        if not first:
            if token:
                first.append(str(token))
            return doc
        out = dict(doc)
        if repeated[0] < times:
            repeated[0] += 1
            out["$skipToken"] = first[0]
        else:
            out.pop("$skipToken", None)
        return out

    return answer


def hide_group(subscription_id: str, group: str) -> Callable[[dict[str, Any]], bool]:
    """Hide the sites query's rows of one resource group (compared case-insensitively, as Resource
    Graph lower-cases ``resourceGroup``), as a deny assignment on that group does."""
    sub, rg = subscription_id.lower(), group.lower()

    def hides(row: dict[str, Any]) -> bool:
        return str(row.get("subscriptionId") or "").lower() == sub and str(row.get("resourceGroup") or "").lower() == rg

    return hides
