"""The SDK shortcuts' self-checks and fallbacks (``shared/azure/shortcuts.py``, ``fastpaths.py``, ``armpager.py``), as pure unit tests.

The checks run on the installed SDK as they do in production; an SDK whose internals changed is
simulated by replacing the class a check builds (a pure unit test's stand-in). What each path
stores and reads on the wire is compared in ``tests/contract``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from azure.core.paging import ItemPaged
from azure.data.tables import EdmType, EntityProperty, TableClient, UpdateMode

from shared.azure import armpager, fastpaths, fastpaths_check, shortcuts

SHORTCUTS = (fastpaths.TABLE_REQUEST, fastpaths.BATCH_BODY, armpager.PAGER_ARGS)


@pytest.fixture(autouse=True)
def fresh(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts before the once-per-process self-check (and restores the real verdicts)."""
    monkeypatch.setattr(shortcuts, "_SWITCH", shortcuts._Switch())


def test_the_installed_sdks_pass_every_self_check(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="shared.azure.shortcuts"):
        assert shortcuts.self_check() == dict.fromkeys(SHORTCUTS)
    assert not caplog.records
    assert shortcuts.usable(*SHORTCUTS)
    with shortcuts.use_public_api():
        assert not shortcuts.usable(armpager.PAGER_ARGS)
    assert shortcuts.usable(armpager.PAGER_ARGS)


class _Reshaped(ItemPaged):  # type: ignore[type-arg]
    """An azure-core that keeps its arguments under another name."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._positional = self._args
        del self._args

    def by_page(self, continuation_token: str | None = None) -> Any:
        return self._page_iterator_class(*self._positional, continuation_token=continuation_token, **self._kwargs)


def test_a_pager_without_args_falls_back_to_the_sdk_pager_with_one_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(armpager, "ItemPaged", _Reshaped)
    with caplog.at_level(logging.WARNING, logger="shared.azure.shortcuts"):
        problems = shortcuts.self_check()
        shortcuts.self_check()
        pager = _Reshaped(lambda token=None: token, lambda response: (None, iter([1])))
        assert armpager.json_pager(pager, lambda response: (None, iter([2]))) is None
    assert problems[armpager.PAGER_ARGS] == "ItemPaged does not keep (get_next, extract_data) as _args"
    assert problems[fastpaths.TABLE_REQUEST] is None and problems[fastpaths.BATCH_BODY] is None
    assert [r.getMessage() for r in caplog.records] == [
        "SDK shortcut disabled: ItemPaged._args (get_next, extract_data): ItemPaged does not keep "
        "(get_next, extract_data) as _args; using the SDK's own pager (models) instead"
    ]
    assert list(pager) == [1], "the SDK's pager is used unchanged"


def test_a_pager_shaped_otherwise_is_used_unchanged_and_named_once(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="shared.azure.shortcuts"):
        assert armpager.json_pager(iter([1]), lambda response: (None, iter(()))) is None
        assert armpager.json_pager(iter([2]), lambda response: (None, iter(()))) is None
    assert len(caplog.records) == 1 and "a list_iterator pager has no _args" in caplog.records[0].getMessage()
    rebuilt = armpager.json_pager(
        ItemPaged(lambda token=None: "page", lambda response: (None, iter(["model"]))),
        lambda response: (None, iter([f"raw {response}"])),
    )
    assert list(rebuilt) == ["raw page"]


class _NoSend:
    """A generated client whose ``send_request`` is gone (an SDK that renamed it)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        if name == "send_request":
            raise AttributeError(name)
        return getattr(self._inner, name)

    def __enter__(self) -> _NoSend:
        return self

    def __exit__(self, *exc: object) -> None:
        self._inner.__exit__(*exc)


class _OldTableClient(TableClient):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._client = _NoSend(self._client)


class _FakeTable:
    """What the public fallbacks call on a table client (a pure unit test's stand-in)."""

    def __init__(self) -> None:
        self.transactions: list[tuple[list[Any], dict[str, Any]]] = []
        self.queries: list[tuple[str, int | None]] = []

    def submit_transaction(self, operations: list[Any], **kwargs: Any) -> list[Any]:
        self.transactions.append((list(operations), kwargs))
        return []

    def query_entities(self, flt: str, *, results_per_page: int | None = None) -> Iterator[dict[str, Any]]:
        self.queries.append((flt, results_per_page))
        yield {"PartitionKey": "p", "RowKey": "r", "N": EntityProperty(2**40, EdmType.INT64)}


def test_a_table_client_without_send_request_takes_the_public_api(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(fastpaths_check, "TableClient", _OldTableClient)
    with caplog.at_level(logging.WARNING, logger="shared.azure.shortcuts"):
        assert shortcuts.self_check()[fastpaths.TABLE_REQUEST] == "TableClient has no _client.send_request"
    assert "TableClient._client.send_request" in caplog.text and "query_entities and submit_transaction" in caplog.text
    table: Any = _FakeTable()
    naive = datetime(2025, 1, 2, 3, 4, 5)
    rows = [{"PartitionKey": "p", "RowKey": f"r{i}", "Big": 2**40, "Small": 1, "At": naive} for i in range(2)]
    fastpaths.upsert_batch(table, rows)
    [(operations, kwargs)] = table.transactions
    assert kwargs == {"retry_on_methods": fastpaths._IDEMPOTENT_BATCH}, "an upsert transaction is safe to resend"
    op, entity, options = operations[0]
    assert (op, options) == ("upsert", {"mode": UpdateMode.REPLACE})
    assert entity["Big"] == EntityProperty(2**40, EdmType.INT64) and entity["Small"] == 1
    assert entity["At"] == naive.replace(tzinfo=UTC), "a naive datetime is UTC on both paths"
    assert list(fastpaths.query_json(table, "PartitionKey eq 'p'")) == [
        {"PartitionKey": "p", "RowKey": "r", "N": str(2**40)}
    ]
    assert table.queries == [("PartitionKey eq 'p'", fastpaths.READ_PAGE)], "pages as small as the fast path's"


def test_a_serializer_that_disagrees_disables_the_fast_batch_writer(monkeypatch: pytest.MonkeyPatch) -> None:
    def sloppy(entity: Any) -> str | None:
        return '{"PartitionKey": "x"}'

    monkeypatch.setattr(fastpaths, "odata_entity", sloppy)
    problem = shortcuts.self_check()[fastpaths.BATCH_BODY]
    assert problem is not None and problem.startswith("odata_entity and the SDK's serializer differ on ")
    assert not shortcuts.usable(fastpaths.TABLE_REQUEST, fastpaths.BATCH_BODY)


def test_a_check_that_raises_counts_as_failed() -> None:
    def broken() -> str | None:
        raise KeyError("x")

    assert shortcuts._run(broken) == "self-check raised KeyError: 'x'"
