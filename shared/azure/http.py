"""Transport settings shared by every SDK client: bounded retries and timeouts.

azure-core already retries 408/429/5xx and connection errors and honours ``Retry-After``;
we only bound it, so one throttled call cannot outlast the Functions timeout.
"""

from __future__ import annotations

from typing import Any

import requests
import requests.adapters
from azure.core.pipeline import PipelineResponse
from azure.core.pipeline.policies import RetryPolicy
from azure.core.pipeline.transport import RequestsTransport

# A Retry-After longer than this is treated as this: the run's worst case stays predictable.
MAX_RETRY_AFTER_SECONDS = 30.0
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


def client_kwargs(retry_total: int, read_timeout: int) -> dict[str, Any]:
    """Keyword arguments for any azure-core based client (ARM, Tables, identity)."""
    return {
        "retry_policy": BoundedRetryPolicy(
            retry_total=retry_total,
            retry_backoff_factor=0.8,
            retry_backoff_max=20,
            timeout=operation_budget_seconds(read_timeout),
        ),
        "connection_timeout": CONNECTION_TIMEOUT_SECONDS,
        "read_timeout": read_timeout,
    }


def worst_case_call_seconds(retry_total: int, read_timeout: int) -> float:
    """Upper bound of one logical call: azure-core stops retrying once the operation budget is
    spent, and the last attempt's connect + read can still run to its own timeouts."""
    attempts_bound = (retry_total + 1) * (
        CONNECTION_TIMEOUT_SECONDS + read_timeout
    ) + retry_total * MAX_RETRY_AFTER_SECONDS
    return min(attempts_bound, operation_budget_seconds(read_timeout) + CONNECTION_TIMEOUT_SECONDS + read_timeout)


def pooled_session(connections: int) -> requests.Session:
    """A ``requests`` session whose connection pool per host keeps ``connections`` connections.

    urllib3 keeps at most ``pool_maxsize`` idle connections per host (10 by default) and discards
    the others as their requests end, with a WARNING ("Connection pool is full, discarding
    connection") each time: sized below the number of threads that use it at once, the pool opens
    and closes a TLS connection per request past that number, and logs it."""
    session = requests.Session()
    adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=connections)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


def table_connections(concurrency: int) -> int:
    """Threads that may use the Tables client at once: the audit threads (listing, state reads,
    result writes), the step threads (state writes, alert marks, deletes: ``max(2, concurrency)``),
    the lease heartbeat and the run's own thread."""
    return concurrency + max(2, concurrency) + 2


def table_transport(concurrency: int, read_timeout: int) -> RequestsTransport:
    """The Tables clients' transport, its pool sized by :func:`table_connections` (it owns the session)."""
    return RequestsTransport(
        session=pooled_session(table_connections(concurrency)),
        session_owner=True,
        connection_timeout=CONNECTION_TIMEOUT_SECONDS,
        read_timeout=read_timeout,
    )
