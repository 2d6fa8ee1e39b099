"""The store's own ``$batch`` writer: same rows as the SDK's transactions, one transaction per 100."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from azure.data.tables import TableServiceClient

from shared.azure.store import TableStore, odata_entity
from shared.core.config import load_settings
from shared.core.errors import StoreError
from tests.emulators.azurite import Azurite


@pytest.fixture
def store(azurite: Azurite, monkeypatch: pytest.MonkeyPatch) -> TableStore:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(azurite.tls.ca_file))
    suffix = uuid.uuid4().hex[:8]
    settings = load_settings(
        {
            "AUDIT_TABLE_CONNECTION_STRING": azurite.connection_string,
            "AUDIT_RESULTS_TABLE": f"Batch{suffix}",
            "AUDIT_LATEST_TABLE": f"BatchLatest{suffix}",
            "AUDIT_RUNS_TABLE": f"BatchRuns{suffix}",
            "AUDIT_EXEMPTIONS_TABLE": f"BatchEx{suffix}",
        }
    )
    table_store = TableStore(settings, None)
    table_store.ensure_tables()
    return table_store


def read_all(azurite: Azurite, table: str) -> dict[tuple[str, str], dict]:
    with TableServiceClient.from_connection_string(azurite.connection_string) as svc:
        return {(e["PartitionKey"], e["RowKey"]): dict(e) for e in svc.get_table_client(table).list_entities()}


def test_rows_round_trip_with_their_types(store: TableStore, azurite: Azurite) -> None:
    when = datetime(2025, 3, 4, 5, 6, 7, 123456, tzinfo=UTC)
    rows = [
        {
            "PartitionKey": f"run_{'ab'[i % 2]}'q",
            "RowKey": f"|subscriptions|s|resourcegroups|rg-café-(x)|providers|microsoft.web|sites|app-{i}",
            "Text": "it's é ü リソース",
            "Flag": i % 3 == 0,
            "Small": i,
            "Big": 2**40 + i,
            "Ratio": i / 4,
            "At": when,
            "Nothing": None,
        }
        for i in range(230)
    ]
    sent = store.upsert_many(store.results, rows)
    assert sent == 4  # 115 rows per partition: 100 + 15, twice
    got = read_all(azurite, store.results.table_name)
    assert len(got) == 230
    for row in rows:
        back = got[(row["PartitionKey"], row["RowKey"])]
        assert back["Text"] == row["Text"] and back["Flag"] is row["Flag"] and back["Small"] == row["Small"]
        assert back["Big"].value == row["Big"] and back["Ratio"] == pytest.approx(row["Ratio"])
        assert back["At"] == when and "Nothing" not in back


def test_types_the_fast_path_does_not_handle_go_through_the_sdk(store: TableStore, azurite: Azurite) -> None:
    rows = [{"PartitionKey": "p", "RowKey": f"r{i}", "Id": uuid.UUID(int=i)} for i in range(3)]
    assert odata_entity(rows[0]) is None
    assert store.upsert_many(store.results, rows) == 1
    assert str(read_all(azurite, store.results.table_name)[("p", "r2")]["Id"]) == str(uuid.UUID(int=2))


def test_a_rejected_transaction_is_retried_row_by_row(store: TableStore, azurite: Azurite) -> None:
    good = [{"PartitionKey": "p", "RowKey": f"r{i}", "V": "x"} for i in range(5)]
    bad = {"PartitionKey": "p", "RowKey": "bad", "V": "x" * 40_000}  # truncated by clean_entity: accepted
    assert store.upsert_many(store.results, [*good, bad]) == 1
    assert read_all(azurite, store.results.table_name)[("p", "bad")]["V"].endswith("chars]")
    worse = [*good, {"PartitionKey": "p", "RowKey": "r/slash", "V": "x"}]  # '/' is not allowed in a key
    with pytest.raises(StoreError, match="r/slash"):
        store.upsert_many(store.results, worse)


def test_state_reads_page_through_every_row_as_plain_json(store: TableStore, azurite: Azurite) -> None:
    # 1,050 state rows of one large subscription in its own shards, 3 of a neighbour in the shared
    # bucket, and a row with quotes and unicode: the plain-JSON reader follows Azurite's 1,000-row
    # pages, sends filters with braces and quotes intact, and returns exactly this subscription's rows.
    sub, other = "5ab00000-0000-4000-8000-000000000001", "5ab00000-0000-4000-8000-000000000002"
    big = [
        {
            "PartitionKey": f"{sub}_{i % 2:04d}",
            "RowKey": f"|subscriptions|{sub}|resourcegroups|rg|providers|microsoft.web|sites|app-{i:05d}",
            "Status": "PASS",
            "LastRunId": "r1",
            "Gone": False,
            "ResourceId": f"/subscriptions/{sub}/resourceGroups/rg/providers/Microsoft.Web/sites/app-{i:05d}",
        }
        for i in range(1050)
    ]
    odd_key = f"|subscriptions|{other}|resourcegroups|rg-%27é|providers|microsoft.web|sites|x"
    small = [
        {"PartitionKey": "bucket-5", "RowKey": f"|subscriptions|{other}|resourcegroups|rg|x{i}", "Status": "FAIL"}
        for i in range(2)
    ] + [{"PartitionKey": "bucket-5", "RowKey": odd_key, "Status": "WARN", "Note": "it's ü"}]
    store.upsert_many(store.latest, big + small)

    present = {row["RowKey"] for row in big[:10]}
    pages: list[int] = []
    send = store.latest._client.send_request

    def counting(request, **kwargs):  # type: ignore[no-untyped-def]
        pages.append(1)
        return send(request, **kwargs)

    store.latest._client.send_request = counting  # type: ignore[method-assign]
    state, extra = store.subscription_state(sub, present)
    assert len(pages) >= 3, "the bucket query, then the shards over at least two pages"
    assert len(state) == 1050 and not extra
    assert set(state) == {row["RowKey"] for row in big}
    lean = {"PartitionKey", "RowKey", "Status", "LastRunId", "Gone", "odata.etag"}  # the ETag: writes are fenced by it
    assert set(state[big[0]["RowKey"]]) == lean, "lean"
    assert state[big[0]["RowKey"]]["Status"] is state[big[2]["RowKey"]]["Status"], "repeated values are one object"
    assert state[big[20]["RowKey"]]["ResourceId"] == big[20]["ResourceId"], "full row where it may be gone"
    assert "Timestamp" not in state[big[20]["RowKey"]]
    assert state[big[0]["RowKey"]]["Gone"] is False

    neighbour, _ = store.subscription_state(other)
    assert set(neighbour) == {row["RowKey"] for row in small}
    assert neighbour[odd_key]["Note"] == "it's ü"


def test_a_transaction_that_fails_for_any_reason_costs_only_the_rows_it_cannot_hold(
    store: TableStore, azurite: Azurite
) -> None:
    """A lone surrogate (no UTF-8 encoder takes it) fails the hand-built ``$batch`` body on this side;
    a value the SDK cannot send, or one the service refuses, fails it too. Each time the
    transaction is split: the neighbours are stored, a row that cannot be stored becomes its ERROR row."""
    from shared.core.schema import refused_result_row

    store.fallbacks[store.results.table_name] = refused_result_row

    def row(i: int, **extra: object) -> dict:
        return {
            "PartitionKey": "run_00000",
            "RowKey": f"|subscriptions|s|resourcegroups|rg|providers|microsoft.web|sites|app-{i}",
            "RunId": "run",
            "ResourceId": f"/subscriptions/s/resourceGroups/rg/providers/Microsoft.Web/sites/app-{i}",
            "AppName": f"app-{i}",
            "Status": "FAIL",
            **extra,
        }

    rows = [row(i) for i in range(6)]
    rows[1]["Tags"] = "owner=pay\ud800ments"  # the $batch body cannot be encoded
    rows[2]["Odd"] = {"a set"}  # the SDK cannot send it either
    rows[3]["Blob"] = b"x" * 70_000  # the service refuses the value (64 KB per property)
    store.upsert_many(store.results, rows)
    got = {k[1].rsplit("|", 1)[1]: v for k, v in read_all(azurite, store.results.table_name).items()}
    assert set(got) == {f"app-{i}" for i in range(6)}, "every resource keeps a row"
    assert all(got[f"app-{i}"]["Status"] == "FAIL" for i in (0, 4, 5)), "the neighbours are stored as they were"
    assert got["app-1"]["Status"] == "FAIL" and got["app-1"]["Tags"] == "owner=pay\ud800ments"  # the store took it
    for refused in ("app-2", "app-3"):
        assert got[refused]["Status"] == "ERROR", refused
        assert "results store refused this resource's row" in got[refused]["Reason"]
        assert "its verdict was FAIL" in got[refused]["Reason"]


def test_truncate_never_fails_on_a_lone_surrogate() -> None:
    from shared.azure.store import MAX_STRING_UNITS, truncate, utf16_units

    for value in ("\ud800" * 40_000, "a" + "\udfff" * 40_000, "\ud83d" + "y" * 40_000):
        cut = truncate(value)
        assert cut.endswith("chars]") and utf16_units(cut) <= MAX_STRING_UNITS
        assert cut.startswith(value[:100]), "kept as it was, up to the cut"
    for pad in range(31_940, 31_960):  # a cut inside a pair never leaves its high half dangling
        cut = truncate("x" * pad + "😀" * 100)
        assert cut[cut.index("…") - 1] in "x😀"
