"""Resource Graph's paging guards and ARM's "gone" rule, as pure functions."""

from __future__ import annotations

import json

import pytest
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.core.pipeline.transport import HttpResponse

from shared.azure.arm_errors import PagingLoopError, TruncatedAnswerError
from shared.azure.resourcegraph import next_skip_token
from shared.azure.sites import confirms_gone


def test_next_skip_token_follows_each_token_once() -> None:
    followed: set[str] = set()
    assert next_skip_token({"data": [], "$skipToken": "a", "resultTruncated": "false"}, followed, "q") == "a"
    assert next_skip_token({"data": [], "$skipToken": "b"}, followed, "q") == "b"
    assert next_skip_token({"data": []}, followed, "q") is None
    with pytest.raises(PagingLoopError, match=r"q: .*same \$skipToken twice"):
        next_skip_token({"$skipToken": "a"}, followed, "q")


@pytest.mark.parametrize("flag", ["true", "True", True])
def test_a_truncated_answer_is_never_a_short_list(flag: object) -> None:
    with pytest.raises(TruncatedAnswerError, match="resultTruncated"):
        next_skip_token({"data": [{"id": "x"}], "resultTruncated": flag}, set(), "q")
    with pytest.raises(TruncatedAnswerError):  # even with a token: the rows before it are cut already
        next_skip_token({"data": [], "$skipToken": "t", "resultTruncated": flag}, set(), "q")


class _Response(HttpResponse):
    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(None, None)  # type: ignore[arg-type]
        self.status_code = status
        self.headers = {"Content-Type": "application/json"}
        self._body = body
        self.reason = "Not Found"

    def body(self) -> bytes:
        return self._body


def _error(status: int, code: str | None) -> HttpResponseError:
    body = json.dumps({"error": {"code": code, "message": "m"}}).encode() if code else b""
    kind = ResourceNotFoundError if status == 404 else HttpResponseError
    return kind(response=_Response(status, body))


@pytest.mark.parametrize(
    ("status", "code", "gone"),
    [
        (404, "ResourceNotFound", True),
        (404, "resourcenotfound", True),
        (404, "ResourceGroupNotFound", False),
        (404, "SubscriptionNotFound", False),
        (404, "ParentResourceNotFound", False),
        (404, None, False),
        (403, "ResourceNotFound", False),
    ],
)
def test_only_the_resources_own_not_found_confirms_it_is_gone(status: int, code: str | None, gone: bool) -> None:
    assert confirms_gone(_error(status, code)) is gone
