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


def client_kwargs(retry_total: int, read_timeout: int) -> dict[str, Any]:
    """Keyword arguments for any azure-core based client (ARM, Tables, identity)."""
    return {
        "retry_policy": BoundedRetryPolicy(
            retry_total=retry_total,
            retry_backoff_factor=0.8,
            retry_backoff_max=20,
            timeout=max(120, read_timeout * (retry_total + 1)),
        ),
        "connection_timeout": CONNECTION_TIMEOUT_SECONDS,
        "read_timeout": read_timeout,
    }


def worst_case_call_seconds(retry_total: int, read_timeout: int) -> float:
    """Upper bound of one logical call: every attempt times out, every wait is maximal."""
    attempts = retry_total + 1
    return attempts * (CONNECTION_TIMEOUT_SECONDS + read_timeout) + retry_total * MAX_RETRY_AFTER_SECONDS
