"""The SDK shortcuts (``shared/azure/fastpaths.py``) store and read exactly what the public API does.

Every test runs the same work twice, once on the fast paths and once forced onto their public
fallbacks (``shortcuts.use_public_api``), against Azurite and the ARM emulator, and compares the
results value by value and type by type. Each also checks that the path it claims to take is the
one taken, so a comparison can never be of one path with itself. Passing this module whole is what
``tested-pins.txt`` records (see ``pins.py``).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from azure.data.tables import EntityProperty, TableClient, TableServiceClient
from azure.identity import ManagedIdentityCredential

from shared.azure import fastpaths, shortcuts
from shared.azure.inventory import ArmInventory, found_key
from shared.azure.paging import _raw, guarded_pages
from shared.azure.sites import site_record
from shared.azure.store import TableStore
from shared.core.config import load_settings
from tests.emulators.azurite import Azurite
from tests.emulators.tenant import generate_tenant

pytestmark = pytest.mark.integration

PATHS = ("fast", "public")
#: Key characters that need escaping somewhere (OData quotes, URL percent-encoding, JSON, UTF-16).
KEY_PARTS = [
    "plain",
    "it's",
    "two''quotes",
    "%27 already-encoded",
    "a+b&c=d",
    "(parens) [brackets] {braces}",
    'double"quote <lt> >gt',
    "semi;colon,comma:colon",
    "at@dollar$star*bang!",
    "tilde~caret^backtick`",
    "café é ü ß",
    "リソース",
    "emoji 😀 clef 𝄞",
    "|subscriptions|s|resourcegroups|rg-(x)|providers|microsoft.web|sites|app",
]
PARTITIONS = ["run_00001'q", "p é 😀 %2F"]


@pytest.fixture
def service(azurite: Azurite, monkeypatch: pytest.MonkeyPatch) -> Iterator[TableServiceClient]:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(azurite.tls.ca_file))
    with TableServiceClient.from_connection_string(azurite.connection_string) as svc:
        yield svc


def make_store(azurite: Azurite) -> TableStore:
    suffix = uuid.uuid4().hex[:8]
    settings = load_settings(
        {
            "AUDIT_TABLE_CONNECTION_STRING": azurite.connection_string,
            "AUDIT_RESULTS_TABLE": f"Contract{suffix}",
            "AUDIT_LATEST_TABLE": f"ContractLatest{suffix}",
            "AUDIT_RUNS_TABLE": f"ContractRuns{suffix}",
            "AUDIT_EXEMPTIONS_TABLE": f"ContractEx{suffix}",
        }
    )
    store = TableStore(settings, None)
    store.ensure_tables()
    return store


@pytest.fixture
def stores(azurite: Azurite, service: TableServiceClient) -> Iterator[dict[str, TableStore]]:
    """A store (its own four tables) per path."""
    made = {path: make_store(azurite) for path in PATHS}
    yield made
    for store in made.values():
        store.close()


class Spy:
    """Counts calls of the fast writer and of the public one, to prove which path ran."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        shortcuts.self_check()  # once per process, before counting: it drives the fast code itself
        self.calls = {
            "send_upsert_batch": 0,
            "submit_upserts": 0,
            "query_json_fast": 0,
            "query_entities": 0,
            "send_conditional_batch": 0,
            "submit_conditional": 0,
        }
        for name in ("send_upsert_batch", "submit_upserts", "query_json_fast", "send_conditional_batch", "submit_conditional"):
            monkeypatch.setattr(fastpaths, name, self._counting(name, getattr(fastpaths, name)))
        monkeypatch.setattr(TableClient, "query_entities", self._counting("query_entities", TableClient.query_entities))

    def _counting(self, name: str, real: Callable[..., Any]) -> Callable[..., Any]:
        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            return real(*args, **kwargs)

        return counted

    def reset(self) -> None:
        self.calls = dict.fromkeys(self.calls, 0)


def on(path: str) -> Any:
    """The context a path runs in: the self-checked fast paths, or the forced public API."""
    if path == "fast":
        assert all(problem is None for problem in shortcuts.self_check().values()), shortcuts.self_check()
        return _nothing()
    return shortcuts.use_public_api()


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def typed(value: Any) -> tuple[str, str]:
    """A stored value as the SDK reads it back, with its type and the service's own spelling."""
    if isinstance(value, EntityProperty):
        return (f"EntityProperty[{value.edm_type.value}]", repr(value.value))
    if isinstance(value, datetime):
        return (type(value).__name__, str(getattr(value, "tables_service_value", "") or value.isoformat()))
    return (type(value).__name__, repr(value))


def stored(service: TableServiceClient, table: str) -> dict[tuple[str, str], dict[str, tuple[str, str]]]:
    """Every row of a table read by an independent client: {(PK, RK): {property: typed value}}."""
    rows = service.get_table_client(table).list_entities()
    return {(e["PartitionKey"], e["RowKey"]): {k: typed(v) for k, v in e.items()} for e in rows}


def typed_rows(count: int) -> list[dict[str, Any]]:
    """Rows of every type the stores write, in two partitions of more than 100 rows each."""
    india = timezone(timedelta(hours=5, minutes=30))
    rows = []
    for i in range(count):
        part = KEY_PARTS[i % len(KEY_PARTS)]
        rows.append(
            {
                "PartitionKey": PARTITIONS[i % 2],
                "RowKey": f"{part} n{i:04d}",
                "Text": f"{part} · it's é ü リソース 😀 𝄞 {i}",
                "Empty": "",
                "Flag": i % 3 == 0,
                "Off": False,
                "Int": i - 50,
                "IntMin": -(2**31),
                "IntMax": 2**31 - 1,
                "Big": 2**40 + i,
                "BigNeg": -(2**53),
                "Ratio": i / 3,
                "Whole": 2.0,
                "NegZero": -0.0,
                "Tiny": 5e-324,
                "Huge": 1.7976931348623157e308,
                "At": datetime(2025, 3, 4, 5, 6, 7, 123456, tzinfo=UTC) + timedelta(seconds=i),
                "AtIndia": datetime(2025, 3, 4, 5, 6, 7, tzinfo=india),
                "AtNaive": datetime(2025, 3, 4, 5, 6, 7, 890),
                "Nothing": None,
            }
        )
    return rows


def odd_rows() -> list[dict[str, Any]]:
    """Types the fast writer leaves to the SDK (both paths then take ``submit_transaction``)."""
    return [
        {"PartitionKey": "odd", "RowKey": f"r{i}", "Id": uuid.UUID(int=i), "NaN": float("nan"), "Inf": float("inf")}
        for i in range(3)
    ] + [{"PartitionKey": "odd", "RowKey": "bytes", "Blob": b"\x00\xffbin", "MinusInf": float("-inf")}]


def test_batch_upserts_store_the_same_entities_and_types(
    stores: dict[str, TableStore], service: TableServiceClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = Spy(monkeypatch)
    first, second, calls = typed_rows(260), [], {}
    for row in first[::2]:  # the second round replaces (never merges): a dropped property is gone
        changed = {k: v for k, v in row.items() if k not in ("Int", "Big")}
        second.append({**changed, "Text": row["Text"] + " v2", "Flag": not row["Flag"]})
    snapshots = {}
    for path, store in stores.items():
        spy.reset()
        with on(path):
            assert store.upsert_many(store.results, first) == 4  # 130 rows a partition: 100 + 30, twice
            store.upsert_many(store.results, odd_rows())
            snapshots[path, 1] = stored(service, store.results.table_name)
            store.upsert_many(store.results, second)
            snapshots[path, 2] = stored(service, store.results.table_name)
        calls[path] = dict(spy.calls)
    assert calls["fast"]["send_upsert_batch"] == 6 and calls["fast"]["submit_upserts"] == 1
    assert calls["public"]["send_upsert_batch"] == 0 and calls["public"]["submit_upserts"] == 7
    for round_ in (1, 2):
        fast, public = snapshots["fast", round_], snapshots["public", round_]
        assert len(fast) == 264
        assert fast == public, round_
    row = snapshots["fast", 2][PARTITIONS[0], f"{KEY_PARTS[0]} n0000"]
    assert "Int" not in row and "Big" not in row and row["Text"] == ("str", repr(first[0]["Text"] + " v2"))
    big = snapshots["fast", 1][PARTITIONS[1], f"{KEY_PARTS[1]} n0001"]
    assert big["Big"] == ("EntityProperty[Edm.Int64]", repr(2**40 + 1)) and big["Int"] == ("int", "-49")
    assert big["AtNaive"][1].startswith("2025-03-04T05:06:07.000890") and big["Whole"] == ("float", "2.0")


def plain(rows: list[dict[str, Any]]) -> list[str]:
    """Read rows as JSON text: a type change (2.0 vs 2, "1" vs 1, true vs 1) shows as a difference."""
    return [json.dumps(row, sort_keys=True, ensure_ascii=False) for row in rows]


def test_query_json_reads_the_same_plain_json(
    stores: dict[str, TableStore], service: TableServiceClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = stores["fast"]
    rows = typed_rows(30) + odd_rows()
    store.upsert_many(store.latest, rows)
    spy = Spy(monkeypatch)
    read = {}
    for path in PATHS:
        with on(path):
            read[path] = list(fastpaths.query_json(store.latest, "PartitionKey ne 'zzz'"))
    assert spy.calls["query_json_fast"] == 1 and spy.calls["query_entities"] == 1
    assert len(read["fast"]) == len(rows)
    assert plain(read["fast"]) == plain(read["public"])
    one = next(r for r in read["fast"] if r["RowKey"] == f"{KEY_PARTS[1]} n0001")
    assert one["Big"] == str(2**40 + 1) and one["Int"] == -49 and one["Whole"] == 2.0 and one["Flag"] is False
    assert one["At"] == "2025-03-04T05:06:08.123456Z" and one["Text"].startswith("it's · it's é ü リソース 😀 𝄞")
    assert one["Timestamp"].endswith("Z")
    blob = next(r for r in read["fast"] if r["RowKey"] == "bytes")
    assert blob["MinusInf"] == "-Infinity" and blob["Blob"] == "AP9iaW4="


def test_reads_come_in_pages_of_read_page_entities_on_both_paths(
    stores: dict[str, TableStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read holds one parsed page per thread: no page on the wire is larger than ``READ_PAGE``
    (the service's own is 1,000), on either path, and every row still arrives once, in order."""
    import requests.adapters

    store = stores["fast"]
    rows = [
        {"PartitionKey": PARTITIONS[i % 2], "RowKey": f"{KEY_PARTS[i % len(KEY_PARTS)]} n{i:04d}", "N": i}
        for i in range(2 * fastpaths.READ_PAGE + 57)
    ]
    store.upsert_many(store.latest, rows)
    pages: list[int] = []
    send = requests.adapters.HTTPAdapter.send

    def counting(adapter: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
        response = send(adapter, request, *args, **kwargs)
        if request.method == "GET" and f"/{store.latest.table_name}()" in request.url:
            pages.append(len(response.json()["value"]))
        return response

    monkeypatch.setattr(requests.adapters.HTTPAdapter, "send", counting)
    expected = sorted((r["PartitionKey"], r["RowKey"]) for r in rows)
    for path in PATHS:
        pages.clear()
        with on(path):
            read = list(fastpaths.query_json(store.latest, "PartitionKey ne 'zzz'", etags=path == "fast"))
        assert [(r["PartitionKey"], r["RowKey"]) for r in read] == expected, path
        assert sum(pages) == len(rows) and max(pages) == fastpaths.READ_PAGE, (path, pages)
        assert len(pages) == -(-len(rows) // fastpaths.READ_PAGE), (path, pages)


def state_rows(sub: str, other: str) -> list[dict[str, Any]]:
    """A large subscription over two shards and a neighbour in the shared bucket, as state rows."""
    big = [
        {
            "PartitionKey": f"{sub}_{i % 2:04d}",
            "RowKey": f"|subscriptions|{sub}|resourcegroups|rg-'é😀|providers|microsoft.web|sites|app-{i:05d}",
            "Status": "FAIL" if i % 5 == 0 else "PASS",
            "FirstFailedAt": "2025-03-04T05:06:07+00:00" if i % 5 == 0 else "",
            "LastRunId": f"r{i % 3}",
            "Gone": i % 7 == 0,
            "AlertPending": i % 11 == 0,
            "ResourceId": f"/subscriptions/{sub}/resourceGroups/rg-'é😀/providers/Microsoft.Web/sites/app-{i:05d}",
        }
        for i in range(1050)
    ]
    copy = {**big[3], "PartitionKey": "bucket-5", "LastRunId": "r9"}  # a moved row whose old copy remains
    small = [
        {"PartitionKey": "bucket-5", "RowKey": f"|subscriptions|{other}|resourcegroups|rg|x{i}", "Status": "WARN"}
        for i in range(3)
    ]
    return [*big, copy, *small]


def test_state_reads_are_the_same_on_both_paths(stores: dict[str, TableStore], monkeypatch: pytest.MonkeyPatch) -> None:
    sub, other = "5ab00000-0000-4000-8000-000000000001", "5ab00000-0000-4000-8000-000000000002"
    store = stores["fast"]
    rows = state_rows(sub, other)
    store.upsert_many(store.latest, rows)
    present = {row["RowKey"] for row in rows[:300]}
    spy = Spy(monkeypatch)
    read = {}
    for path in PATHS:
        with on(path):
            read[path] = (store.subscription_state(sub, present), store.subscription_state(other))
    assert spy.calls["query_json_fast"] > 0 and spy.calls["query_entities"] == spy.calls["query_json_fast"]
    (fast_state, fast_extra), fast_other = read["fast"]
    (public_state, public_extra), public_other = read["public"]
    copy_at = (rows[3]["PartitionKey"], rows[3]["RowKey"], rows[3]["RowKey"])  # (partition, row key, resource key)
    assert len(fast_state) == 1050 and [c[:3] for c in fast_extra] == [c[:3] for c in public_extra] == [copy_at]
    assert fast_extra == public_extra and fast_extra[0][3].startswith('W/"'), "with the ETag the copy was read at"
    assert fast_state[rows[3]["RowKey"]]["LastRunId"] == "r9", "the later run's copy wins"
    assert set(fast_state) == set(public_state)
    for key, row in fast_state.items():
        assert plain([row]) == plain([public_state[key]]), key
    assert plain(list(fast_other[0].values())) == plain(list(public_other[0].values()))
    assert len(fast_other[0]) == 3


def test_conditional_batches_and_etag_reads_are_the_same_on_both_paths(
    stores: dict[str, TableStore], service: TableServiceClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The state's writes are fenced by each row's ETag: created only while absent, replaced only
    while unchanged, the transaction rolled back whole when one condition fails. Both paths agree on
    what is stored, on the ETags they return (those a read then shows) and on the conflicts."""
    from shared.core.errors import WriteConflict

    spy = Spy(monkeypatch)
    outcome: dict[str, Any] = {}
    for path, store in stores.items():
        table = store.latest
        rows = [dict(row) for row in typed_rows(6) if row["PartitionKey"] == PARTITIONS[0]]
        with on(path):
            created = fastpaths.conditional_batch(table, rows, [None] * len(rows))
            read = {r["RowKey"]: r for r in fastpaths.query_json(table, "PartitionKey ne 'zzz'", etags=True)}
            assert [read[r["RowKey"]][fastpaths.ETAG] for r in rows] == created
            with pytest.raises(WriteConflict):  # created again: it exists
                fastpaths.conditional_batch(table, rows[:1], [None])
            replaced = fastpaths.conditional_batch(
                table, [{**r, "Text": "v2"} for r in rows], list(created)
            )
            assert replaced != created
            with pytest.raises(WriteConflict):  # a stale ETag fails, and the whole transaction with it
                fastpaths.conditional_batch(
                    table, [{**rows[0], "Text": "v3"}, {**rows[1], "Text": "v3"}], [replaced[0], created[1]]
                )
            outcome[path] = stored(service, table.table_name)
    assert spy.calls["send_conditional_batch"] == 4 and spy.calls["submit_conditional"] == 4
    assert outcome["fast"] == outcome["public"]
    assert {row["Text"] for row in outcome["fast"].values()} == {("str", "'v2'")}


def test_arm_pages_map_to_the_same_site_records(make_arm: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    tenant = generate_tenant(seed=41, subscriptions=2, sites=60, slot_share=0.4, omit_properties_share=0.1)
    arm = make_arm(tenant, page_size=7, empty_page_every=3)
    monkeypatch.delenv("AUDIT_SUBSCRIPTIONS", raising=False)
    for key, value in arm.env().items():
        monkeypatch.setenv(key, value)
    inventory = ArmInventory(ManagedIdentityCredential(), load_settings(require_table=False))
    try:
        for sub in inventory.subscriptions():
            compare_subscription(inventory, sub.subscription_id)
    finally:
        inventory.close()


def compare_subscription(inventory: ArmInventory, sub: str) -> None:
    """The site list, every group list and every slot list item by item, then the whole scan."""
    read: dict[str, dict[str, list[Any]]] = {}
    for path in PATHS:
        with on(path), inventory.web_client(sub) as web:
            lists = {"sites": list(guarded_pages(web.web_apps.list(), "sites"))}
            groups = sorted({str(i["id"]).split("/")[4] for i in map(_raw, lists["sites"]) if "id" in i})
            for rg in groups:
                lists[rg] = list(guarded_pages(web.web_apps.list_by_resource_group(rg, include_slots=True), rg))
                for app in sorted({str(_raw(i)["name"]).split("/")[0] for i in lists[rg]}):
                    lists[f"{rg}/{app}"] = list(guarded_pages(web.web_apps.list_slots(rg, app), app))
            read[path] = lists
            read[path]["scan"] = sorted(inventory.scan(sub), key=found_key)
    fast, public = read["fast"], read["public"]
    assert set(fast) == set(public) and len(fast["sites"]) > 7
    items = [item for name, got in fast.items() if name != "scan" for item in got]
    assert items and all(type(item) is dict for item in items), "the fast path pages ARM's JSON"
    models = [item for name, got in public.items() if name != "scan" for item in got]
    assert not any(type(item) is dict for item in models), "the public path pages the SDK's models"
    for name, got in fast.items():
        if name == "scan":
            assert got == public[name] and got
        else:
            mapped = [site_record(_raw(item), sub) for item in got]
            assert mapped == [site_record(_raw(item), sub) for item in public[name]], name
