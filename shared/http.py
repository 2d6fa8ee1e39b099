"""Transport settings shared by every SDK client: bounded retries and timeouts.

azure-core already retries 408/429/5xx and connection errors and honours ``Retry-After``;
we only bound it, so one throttled call cannot outlast the Functions timeout.
"""

from __future__ import annotations

from typing import Any

from azure.core.pipeline import PipelineResponse
from azure.core.pipeline.policies import RetryPolicy

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
