"""Fault injection for the ARM / managed-identity emulator.

A test adds :class:`FaultRule` objects to ``emu.faults``; each request is checked against the rules in
the order they were added. :class:`Latency` and :class:`Stall` are *delays*: every matching one is
applied and processing goes on. The other actions are *terminal*: the first matching one answers the
request instead of the emulator. ``skip`` lets the first N matches through (e.g. "fail the third
page"), ``times`` bounds how often the action fires (``None`` = forever).
"""

from __future__ import annotations

import json
import re
import socket
import struct
import threading
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import format_datetime
from typing import TypeAlias

from .wire import _ERROR_CODES, _Handler, _Response, arm_error

__all__ = [
    "Delay",
    "FaultAction",
    "FaultRule",
    "FaultSet",
    "Latency",
    "MalformedJson",
    "Reset",
    "Stall",
    "Status",
    "Terminal",
    "Truncated",
]


@dataclass(frozen=True)
class Status:
    """Answer with ``status`` and an ARM error body (``code``/``message`` default per status).

    ``retry_after`` becomes a ``Retry-After`` header: seconds (int/float/str) or a ``datetime`` sent as
    an HTTP-date. ``body`` replaces the generated error body verbatim.
    """

    status: int
    code: str | None = None
    message: str | None = None
    retry_after: int | float | str | datetime | None = None
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes | None = None


@dataclass(frozen=True)
class Latency:
    """Sleep ``seconds`` and then go on (other rules and the normal answer still apply)."""

    seconds: float


@dataclass(frozen=True)
class Stall:
    """Sleep ``seconds`` before answering at all: meant to exceed a client's read timeout.

    Like :class:`Latency` it is a delay, but it is interrupted when the emulator stops so a test that
    stalls for minutes still tears down promptly.
    """

    seconds: float


@dataclass(frozen=True)
class Reset:
    """Close the connection with a TCP RST and no response (``SO_LINGER`` 0)."""


@dataclass(frozen=True)
class MalformedJson:
    """Answer ``status`` with a JSON content type and a body that is not valid JSON."""

    status: int = 200


@dataclass(frozen=True)
class Truncated:
    """Send the real answer's headers (full ``Content-Length``) but only ``fraction`` of its body,
    then close the connection."""

    fraction: float = 0.5


Delay: TypeAlias = Latency | Stall
Terminal: TypeAlias = Status | Reset | MalformedJson | Truncated
FaultAction: TypeAlias = Delay | Terminal


@dataclass
class FaultRule:
    """Match ``method`` (``"*"`` = any) and case-insensitive regexes searched in the URL-decoded
    path and, when given, in the raw query string; then apply ``action``.

    ``matched`` counts requests that matched, ``applied`` how often the action fired.
    """

    action: FaultAction
    path: str = ".*"
    method: str = "GET"
    query: str | None = None
    times: int | None = None
    skip: int = 0
    matched: int = field(default=0, init=False)
    applied: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        self._path_re = re.compile(self.path, re.IGNORECASE)
        self._query_re = re.compile(self.query, re.IGNORECASE) if self.query is not None else None

    def _matches(self, method: str, path: str, query: str) -> bool:
        if self.method != "*" and self.method.upper() != method.upper():
            return False
        if not self._path_re.search(path):
            return False
        return self._query_re is None or bool(self._query_re.search(query))

    @property
    def exhausted(self) -> bool:
        return self.times is not None and self.applied >= self.times


class FaultSet:
    """The emulator's rule list (thread-safe)."""

    def __init__(self) -> None:
        self._rules: list[FaultRule] = []
        self._lock = threading.Lock()

    def add(self, rule: FaultRule) -> FaultRule:
        with self._lock:
            self._rules.append(rule)
        return rule

    def remove(self, rule: FaultRule) -> None:
        with self._lock:
            self._rules.remove(rule)

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    @property
    def rules(self) -> list[FaultRule]:
        with self._lock:
            return list(self._rules)

    # -- conveniences -----------------------------------------------------------------------
    def status(
        self,
        path: str,
        status: int,
        *,
        code: str | None = None,
        message: str | None = None,
        retry_after: int | float | str | datetime | None = None,
        method: str = "GET",
        query: str | None = None,
        times: int | None = None,
        skip: int = 0,
    ) -> FaultRule:
        """Answer matching requests with ``status`` (and an ARM error body)."""
        action = Status(status, code=code, message=message, retry_after=retry_after)
        return self.add(FaultRule(action, path, method, query, times, skip))

    def throttle(self, path: str = ".*", *, retry_after: int | float | str = 1, times: int | None = 1) -> FaultRule:
        """429 ``TooManyRequests`` with ``Retry-After`` (once by default)."""
        return self.status(path, 429, retry_after=retry_after, times=times)

    def forbid_subscription(self, subscription_id: str, *, times: int | None = None) -> FaultRule:
        """Make one subscription answer 403 ``AuthorizationFailed`` on every route under it."""
        message = (
            "The client does not have authorization to perform action 'Microsoft.Web/sites/read' over "
            f"scope '/subscriptions/{subscription_id}' or the scope is invalid. If access was recently "
            "granted, please refresh your credentials."
        )
        return self.status(
            rf"^/subscriptions/{re.escape(subscription_id)}(/|$)",
            403,
            code="AuthorizationFailed",
            message=message,
            method="*",
            times=times,
        )

    def not_found(self, path: str, code: str | None, *, method: str = "GET", times: int | None = None) -> FaultRule:
        """404 with ARM's error ``code`` (``ResourceNotFound``, ``ResourceGroupNotFound``,
        ``SubscriptionNotFound``, ``ParentResourceNotFound``), or ``None``: a 404 with no body at all,
        as a gateway or an unknown route answers."""
        if code is None:
            return self.add(FaultRule(Status(404, body=b""), path, method, None, times))
        messages = {
            "ResourceNotFound": "The Resource was not found.",
            "ResourceGroupNotFound": "Resource group could not be found.",
            "SubscriptionNotFound": "The subscription could not be found.",
            "ParentResourceNotFound": "Can not perform requested operation on nested resource. Parent resource "
            "was not found.",
        }
        return self.status(path, 404, code=code, message=messages.get(code), method=method, times=times)

    def redirect(
        self, path: str, location: str, *, status: int = 302, method: str = "GET", times: int | None = None
    ) -> FaultRule:
        """Answer with a redirect (``status``, ``Location: location``) and no body, as a proxy or a
        hostile endpoint might: a client that followed it would read its answer from ``location``."""
        action = Status(status, headers=(("Location", location),), body=b"")
        return self.add(FaultRule(action, path, method, None, times))

    # -- evaluation -------------------------------------------------------------------------
    def evaluate(self, method: str, path: str, query: str) -> tuple[list[Delay], Terminal | None]:
        """Return the delays to apply and the terminal action (if any) for one request."""
        delays: list[Delay] = []
        with self._lock:
            for rule in self._rules:
                if rule.exhausted or not rule._matches(method, path, query):
                    continue
                rule.matched += 1
                if rule.matched <= rule.skip:
                    continue
                rule.applied += 1
                if isinstance(rule.action, Latency | Stall):
                    delays.append(rule.action)
                    continue
                return delays, rule.action
        return delays, None


class FaultAnswers:
    """How :class:`~tests.emulators.arm.ArmEmulator` answers an injected fault: a reset, or a status."""

    def _abort(self, h: _Handler, method: str, path: str, kind: str, api_version: str | None) -> None:
        """Reset the connection: SO_LINGER 0 turns close() into an RST, no response is sent."""
        # Record before the client can observe the outcome, so stats are exact when a call returns.
        self._record(method, path, kind, 0, api_version)
        h.close_connection = True
        try:
            h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            h.connection.close()
        except OSError:
            pass

    def _fault_response(self, action: Terminal, kind: str) -> _Response:
        if isinstance(action, MalformedJson):
            return _Response(action.status, b'{"value": [{"id": "/subscriptions/\x00, "name": tru')
        assert isinstance(action, Status)
        headers = dict(action.headers)
        if action.retry_after is not None:
            ra = action.retry_after
            if isinstance(ra, datetime):
                headers["Retry-After"] = format_datetime(ra, usegmt=True)
            elif isinstance(ra, float) and ra.is_integer():
                headers["Retry-After"] = str(int(ra))
            else:
                headers["Retry-After"] = str(ra)
        if action.body is not None:
            return _Response(action.status, action.body, headers)
        code = action.code or _ERROR_CODES.get(action.status, f"Http{action.status}")
        message = action.message or f"Injected fault: {action.status} {code}."
        if kind == "token":
            body = json.dumps({"statusCode": action.status, "message": message}).encode()
        else:
            body = arm_error(code, message)
        return _Response(action.status, body, headers)
