"""Transport settings shared by every SDK client: bounded retries and timeouts.

azure-core already retries 408/429/5xx and connection errors and honours ``Retry-After``;
we only bound it, so one throttled call cannot outlast the Functions timeout.

Every request waits ``AUDIT_HTTP_TIMEOUT`` for the service at each step: the TLS handshake of a new
connection, sending the request, its answer. Only the TCP connect has a short bound of its own
(:data:`CONNECTION_TIMEOUT_SECONDS`: a host that does not answer at all fails fast). urllib3 on its
own times the handshake and the sending by the *connection* timeout, and words a handshake that
outlasts it as ``Read timed out. (read timeout=10)``: a loaded table service (Azurite at a load of 14
on 2 cores, the bench's next night) accepts a connection at once and answers its handshake late,
which failed runs on 10 s while AUDIT_HTTP_TIMEOUT said 60 (:class:`TimedConnection`).
"""

from __future__ import annotations

import socket
from typing import Any

import requests
import requests.adapters
from azure.core.pipeline import PipelineResponse
from azure.core.pipeline.policies import RetryPolicy
from azure.core.pipeline.transport import RequestsTransport
from urllib3.connection import HTTPSConnection
from urllib3.connectionpool import HTTPSConnectionPool

# A Retry-After longer than this is treated as this: the run's worst case stays predictable.
MAX_RETRY_AFTER_SECONDS = 30.0
#: The TCP connect's own bound (seconds); every later step of a request has AUDIT_HTTP_TIMEOUT.
CONNECTION_TIMEOUT_SECONDS = 10


class BoundedRetryPolicy(RetryPolicy):  # type: ignore[type-arg]
    """azure-core's retry policy with ``Retry-After`` capped at :data:`MAX_RETRY_AFTER_SECONDS`."""

    def __init__(self, *, max_retry_after: float = MAX_RETRY_AFTER_SECONDS, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._max_retry_after = max_retry_after

    def get_retry_after(self, response: PipelineResponse[Any, Any]) -> float | None:
        value = super().get_retry_after(response)
        if value is None:
            return None
        return max(0.0, min(float(value), self._max_retry_after))


def operation_budget_seconds(read_timeout: int) -> int:
    """Total time one logical call may take, all attempts and waits included."""
    return 2 * read_timeout


def client_kwargs(retry_total: int, timeout: int, session: requests.Session, *, session_owner: bool) -> dict[str, Any]:
    """Keyword arguments for any azure-core based client (ARM, Resource Graph, Tables): the bounded
    retries, and a transport over ``session`` (a :func:`pooled_session`) whose every request has
    ``timeout`` (AUDIT_HTTP_TIMEOUT) at each step after the TCP connect. ``session_owner``: whether
    closing the client closes the session (``False`` for a session shared by many clients)."""
    return {
        "retry_policy": BoundedRetryPolicy(
            retry_total=retry_total,
            retry_backoff_factor=0.8,
            retry_backoff_max=20,
            timeout=operation_budget_seconds(timeout),
        ),
        # urllib3's "connection" timeout is the handshake's and the sending's too: the setting's;
        # the TCP connect alone is bounded shorter by the session's connections (TimedConnection).
        "transport": RequestsTransport(
            session=session, session_owner=session_owner, connection_timeout=timeout, read_timeout=timeout
        ),
    }


def attempt_seconds(timeout: int) -> float:
    """Upper bound of one attempt: the TCP connect, then the TLS handshake and the sending of the
    request, then the answer, each step to its own timeout."""
    return CONNECTION_TIMEOUT_SECONDS + 2 * timeout


def worst_case_call_seconds(retry_total: int, read_timeout: int) -> float:
    """Upper bound of one logical call: azure-core stops retrying once the operation budget is
    spent, and the last attempt can still run to its own timeouts."""
    attempts_bound = (retry_total + 1) * attempt_seconds(read_timeout) + retry_total * MAX_RETRY_AFTER_SECONDS
    return min(attempts_bound, operation_budget_seconds(read_timeout) + attempt_seconds(read_timeout))


class TimedConnection(HTTPSConnection):
    """An HTTPS connection whose TCP connect is bounded by :data:`CONNECTION_TIMEOUT_SECONDS` (or
    the request's connection timeout, if shorter), and whose TLS handshake and request sending get
    the request's connection timeout: the transports pass AUDIT_HTTP_TIMEOUT (:func:`client_kwargs`)."""

    def _new_conn(self) -> socket.socket:
        configured = self.timeout  # the request's connection timeout (urllib3 sets it per request)
        if isinstance(configured, int | float):
            self.timeout = min(configured, CONNECTION_TIMEOUT_SECONDS)
        try:
            sock = super()._new_conn()
        finally:
            self.timeout = configured
        if isinstance(configured, int | float):
            sock.settimeout(configured)  # the handshake that follows, on this socket
        return sock


class TimedConnectionPool(HTTPSConnectionPool):
    ConnectionCls = TimedConnection


class TimedAdapter(requests.adapters.HTTPAdapter):
    """``requests``' adapter whose every HTTPS connection is a :class:`TimedConnection`."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {
            **self.poolmanager.pool_classes_by_scheme,
            "https": TimedConnectionPool,
        }


def pooled_session(connections: int) -> requests.Session:
    """A ``requests`` session whose connection pool per host keeps ``connections`` connections,
    each a :class:`TimedConnection`.

    urllib3 keeps at most ``pool_maxsize`` idle connections per host (10 by default) and discards
    the others as their requests end, with a WARNING ("Connection pool is full, discarding
    connection") each time: sized below the number of threads that use it at once, the pool opens
    and closes a TLS connection per request past that number, and logs it."""
    session = requests.Session()
    adapter = TimedAdapter(pool_connections=4, pool_maxsize=connections)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


def table_connections(concurrency: int) -> int:
    """Threads that may use the Tables client at once: the audit threads (listing, state reads,
    result writes), the step threads (state writes, alert marks, deletes: ``max(2, concurrency)``),
    the lease heartbeat and the run's own thread."""
    return concurrency + max(2, concurrency) + 2
