"""A subscription compared with its state slice by slice decides exactly what it decides whole.

``shared/run/slices.py`` cuts a subscription larger than ``SLICE_RESOURCES`` into slices by a hash of
the key and plans each on its own. These tests run the same nights twice against the emulators, once
with every subscription whole (the default slice, far above these tenants) and once with a slice of
a few resources (every subscription but the smallest cut into many slices), and require the same
result rows, the same last-known state, the same NewFailure events and the same run records. The
nights cover what a slice could get wrong alone: new failures and fixes, resources deleted (one
by one and a whole group), new ones, a subscription emptied; with Resource Graph, a group its
answer trims (confirmed through ARM, once for the whole subscription) and a subscription it is
silent about (confirmed empty or not, once). A second test checks what the run held against the
bound: the cap plus about a slice, whatever the largest subscription.
"""

from __future__ import annotations

import errno
import re
import tempfile
import threading
import weakref
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared.core import layout
from shared.core.schema import DeferredRow
from shared.run import pipeline, spill
from shared.run.budget import Hold
from shared.run.slices import Gathered
from shared.run.writer import PackedWriter
from tests.emulators.graph import hide_group
from tests.emulators.tenant import Site, Tenant
from tests.harness import AuditHarness

REQ = {"client_cert_enabled": True, "client_cert_mode": "Required"}
NIGHT1 = datetime(2026, 4, 1, 2, 0, tzinfo=UTC)
BIG, MEDIUM, SMALL = (f"{c * 8}-0000-4000-8000-{n:012d}" for c, n in (("b", 1), ("c", 2), ("d", 3)))
#: Properties that differ between two deployments for reasons other than the decisions.
VOLATILE = {"Timestamp", "etag", "odata.etag", "Fence", "PartitionKey"}  # and every *RunId*


def build() -> tuple[Tenant, dict[str, list[Site]]]:
    tenant = Tenant()
    made: dict[str, list[Site]] = {}
    for sub_id, groups, per_group in ((BIG, 3, 12), (MEDIUM, 2, 6), (SMALL, 1, 2)):
        sub = tenant.add_subscription(sub_id)
        sites = made.setdefault(sub_id, [])
        for g in range(groups):
            for i in range(per_group):
                # owners: most sites tagged, their slots not (a slot takes its site's), one slot its own
                tags = {"owner": f"team-{g}-{i % 3}"} if i % 5 else None
                site = sub.add_site(f"rg-{g}", f"app-{g}-{i}", tags=tags, **REQ)
                sites.append(site)
                if i % 4 == 1:
                    sites.append(site.add_slot("stage", tags={"Team": "qa"} if i == 9 else None, **REQ))
    return tenant, made


def night2(tenant: Tenant, made: dict[str, list[Site]]) -> None:
    """Failures (one in three), a fix, deletions one by one and of a whole group, new sites."""
    for site in made[BIG][::3] + made[MEDIUM][::3]:
        site.update(client_cert_mode="Optional")
    made[BIG][3].update(client_cert_enabled=False)
    big = tenant.get_subscription(BIG)
    assert big is not None
    for site in [s for s in made[BIG] if s.resource_group == "rg-2" and not s.is_slot]:
        big.remove_site(site)
    big.remove_site(made[BIG][4])
    for i in range(5):
        big.add_site("rg-new", f"new-{i}", client_cert_mode="Optional", client_cert_enabled=True)


def night3_arm(tenant: Tenant, made: dict[str, list[Site]]) -> None:
    """A fix of an old failure, a new failure, a subscription emptied."""
    made[BIG][0].update(client_cert_mode="Required")
    made[BIG][1].update(client_cert_mode="OptionalInteractiveUser")
    medium = tenant.get_subscription(MEDIUM)
    assert medium is not None
    for site in [s for s in made[MEDIUM] if not s.is_slot]:
        medium.remove_site(site)


def normal(rows: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {key: {k: v for k, v in row.items() if k not in VOLATILE and "RunId" not in k} for key, row in rows.items()}


def snapshot(h: AuditHarness) -> dict[str, Any]:
    run = h.runs()[-1]
    events = sorted((e["ResourceId"].lower(), e.get("FirstFailedAt"), e.get("Status")) for e in h.new_failure_events())
    return {
        "outcome": run["Outcome"],
        "counts": {k: v for k, v in run.items() if k.startswith("Count") or k in {"NewFailures", "Resources"}},
        "rows": normal(h.rows_by_id()),
        "state": normal(h.state()),
        "events": events,
    }


def nights(
    make_arm: Any, harness_factory: Any, source: str, last: Callable[[Any, Tenant, dict[str, list[Site]]], None]
) -> list[dict[str, Any]]:
    tenant, made = build()
    arm = make_arm(tenant)
    h: AuditHarness = harness_factory(arm)
    seen = []
    for n, change in enumerate((None, night2, last)):
        if change is night2:
            night2(tenant, made)
        elif change is not None:
            change(arm, tenant, made)
        h.apply_env(AUDIT_INVENTORY_SOURCE=source, AUDIT_CONCURRENCY="3")
        h.clear_events()
        h.run_at(NIGHT1 + timedelta(days=n))
        seen.append(snapshot(h))
    return seen


def last_arm(arm: Any, tenant: Tenant, made: dict[str, list[Site]]) -> None:
    night3_arm(tenant, made)


def last_graph(arm: Any, tenant: Tenant, made: dict[str, list[Site]]) -> None:
    """Resource Graph trims a group of the big subscription (ARM still has it) and is silent about the
    small one (ARM lists sites there: an ERROR, nothing retired); a new failure in the trimmed group."""
    made[BIG][0].update(client_cert_mode="Optional")
    arm.resource_graph_hides = hide_group(BIG, "rg-0")
    arm.resource_graph_hidden.add(SMALL.lower())


class Cuts:
    """How each sliced subscription was cut for planning: by shard (``Gathered.align``) or by hash."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.aligned: list[bool] = []
        align = Gathered.align

        def tracked_align(gathered: Gathered, *args: Any, **kwargs: Any) -> Any:
            extras = align(gathered, *args, **kwargs)
            self.aligned.append(gathered.aligned)
            return extras

        monkeypatch.setattr(Gathered, "align", tracked_align)


@pytest.mark.parametrize(("source", "last"), [("arm", last_arm), ("resourcegraph", last_graph)])
@pytest.mark.parametrize("rows", [10, 1], ids=["cut-by-hash", "cut-by-shard"])
def test_sliced_subscriptions_decide_exactly_what_whole_ones_do(
    make_arm, harness_factory, monkeypatch, source, last, rows
) -> None:
    """``rows``: partitions of 10 rows give the subscriptions fewer state shards than slices, so their
    slices stay cut by the hash of the key; of 1 row, more, so they are cut again by shard."""
    monkeypatch.setattr(layout, "PARTITION_ROWS", rows)  # the big subscription gets shards of its own
    whole = nights(make_arm, harness_factory, source, last)
    monkeypatch.setattr(pipeline, "SLICE_RESOURCES", 4)
    cuts = Cuts(monkeypatch)
    sliced = nights(make_arm, harness_factory, source, last)
    # Cut by shard where a subscription has a shard per slice (not the one emptied on night 3: its
    # state holds far more than it lists; nor, at this scale, most of the next nights' ones, whose
    # state rows count as much as their records: twice the slices, about one per shard).
    if rows == 1:
        assert cuts.aligned.count(True) >= 4, cuts.aligned
    else:
        assert not any(cuts.aligned), cuts.aligned
    for n, (w, s) in enumerate(zip(whole, sliced, strict=True), start=1):
        assert w["outcome"] == ("partial" if (source, n) == ("resourcegraph", 3) else "complete"), (n, w["outcome"])
        assert s["rows"] == w["rows"], f"night {n}: rows differ"
        assert s["state"] == w["state"], f"night {n}: state differs: {differences(w['state'], s['state'])}"
        assert s["events"] == w["events"], f"night {n}: events differ"
        assert s == w, f"night {n}"
    assert whole[1]["events"], "night 2 has new failures"
    for seen in (whole[0], sliced[0]):
        assert owners(seen["rows"]) == expected_owners(build()[0]), "a slot takes its site's owner, sliced or not"
    assert any(r.get("Gone") for r in whole[2]["state"].values()), "night 3 retired resources"
    if source == "resourcegraph":
        errors = [k for k, r in whole[2]["rows"].items() if r["Status"] == "ERROR"]
        assert errors == [f"/subscriptions/{SMALL}"], errors


def owners(rows: dict[str, dict[str, Any]]) -> dict[str, str]:
    return {key: str(row.get("Owner") or "") for key, row in rows.items()}


def expected_owners(tenant: Tenant) -> dict[str, str]:
    """Each resource's owner tag, else (a slot) its site's."""
    out: dict[str, str] = {}
    for site in tenant.iter_resources():
        tags = {k.lower(): v for k, v in (site.tags or {}).items()}
        parent = {k.lower(): v for k, v in ((site.parent.tags if site.parent else None) or {}).items()}
        out[site.key] = tags.get("owner") or tags.get("team") or parent.get("owner") or ""
    return out


def differences(whole: dict[str, dict[str, Any]], sliced: dict[str, dict[str, Any]]) -> list[Any]:
    """The first few differing properties, by resource (``pytest`` elides nested dicts)."""
    out: list[Any] = [("only whole", k) for k in whole.keys() - sliced.keys()]
    out += [("only sliced", k) for k in sliced.keys() - whole.keys()]
    for key in whole.keys() & sliced.keys():
        w, s = whole[key], sliced[key]
        out += [(key.rsplit("/", 3)[-1], p, w.get(p), s.get(p)) for p in w.keys() | s.keys() if w.get(p) != s.get(p)]
    return out[:8]


def held(caplog: pytest.LogCaptureFixture) -> int:
    pattern = re.compile(r"at most (\d+) records and state rows held in memory at once")
    found = [int(m.group(1)) for r in caplog.records if (m := pattern.search(r.getMessage()))]
    assert found, "the run did not report what it held"
    return found[-1]


def big_and_small(big: int, smalls: int, each: int) -> Tenant:
    """One subscription of ``big`` sites over four groups, and ``smalls`` of ``each`` sites."""
    tenant = Tenant()
    sub = tenant.add_subscription(BIG)
    for i in range(big):
        sub.add_site(f"rg-{i % 4}", f"app-{i}", **REQ)
    for n in range(smalls):
        small = tenant.add_subscription(f"a{n:07x}-0000-4000-8000-000000000000")
        for i in range(each):
            small.add_site("rg", f"small-{n}-{i}", **REQ)
    return tenant


def capped(
    make_arm: Any, harness_factory: Any, monkeypatch: pytest.MonkeyPatch, tenant: Tenant, source: str
) -> AuditHarness:
    """The slice-bound tests' run: ``tenant`` read by ``source`` on 3 audit threads, a cap of 10 held
    resources and partitions of 10 rows (the slice is left to each test)."""
    monkeypatch.setattr(layout, "PARTITION_ROWS", 10)
    h: AuditHarness = harness_factory(make_arm(tenant))
    h.apply_env(AUDIT_INVENTORY_SOURCE=source, AUDIT_CONCURRENCY="3")
    monkeypatch.setattr(pipeline, "MAX_HELD_RESOURCES", 10)
    return h


@pytest.mark.parametrize("source", ["arm", "resourcegraph"])
def test_what_a_run_holds_is_bounded_by_the_cap_and_a_slice_not_by_its_largest_subscription(
    make_arm, harness_factory, monkeypatch, caplog, source
) -> None:
    """A subscription of 90 resources against a cap of 10 and a slice of 8: whole, the run held the
    subscription (at least 90 at once); sliced, at most the cap and a slice. Both nights."""
    tenant = big_and_small(90, 6, 1)
    h = capped(make_arm, harness_factory, monkeypatch, tenant, source)
    h.run_at(NIGHT1)
    assert held(caplog) >= 90, "whole, the large subscription is held at once"
    monkeypatch.setattr(pipeline, "SLICE_RESOURCES", 8)
    for n in (1, 2):
        caplog.clear()
        h.run_at(NIGHT1 + timedelta(days=n))
        assert h.runs()[-1]["Outcome"] == "complete"
        assert {k: r["Status"] for k, r in h.rows_by_id().items()} == {
            k: e.status for k, e in tenant.expected().items()
        }
        assert held(caplog) <= 10 + 8, f"night {n + 1}: held {held(caplog)}"


class LoadsCounted:
    """Every slice read back from disk (``Gathered.load``): how much its thread took from the budget
    *while* reading it, against what it weighs (what a wait at the cap would find counted)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.local = threading.local()
        self.loads: list[tuple[int, int]] = []  # (taken while it was read, its weight)
        take, load = Hold.take, Gathered.load
        counted = self

        def tracked_take(hold: Hold, count: int = 1) -> None:
            if getattr(counted.local, "loading", None) is not None:
                counted.local.loading += count
            take(hold, count)

        def tracked_load(gathered: Gathered, index: int, **kwargs: Any) -> Any:
            counted.local.loading = 0
            try:
                part = load(gathered, index, **kwargs)
                self.loads.append((counted.local.loading, part.weight()))
            finally:
                counted.local.loading = None
            return part

        monkeypatch.setattr(Hold, "take", tracked_take)
        monkeypatch.setattr(Gathered, "load", tracked_load)


@pytest.mark.parametrize("source", ["arm", "resourcegraph"])
def test_a_slice_read_back_is_counted_by_the_cap_as_it_is_read(
    make_arm, harness_factory, monkeypatch, caplog, source
) -> None:
    """A large subscription's slices are junior to every listing, so they wait at the cap: each
    record and each state row read back from disk is taken from the budget as it is read (a wait
    finds it counted), never the slice read whole and counted after; both passes (the survey, then
    planning), both nights. The run stays complete and held at most the cap and a slice (of 16:
    with 8, the hash's spread over a few resources per slice put 14 in one)."""
    h = capped(make_arm, harness_factory, monkeypatch, big_and_small(60, 8, 4), source)
    monkeypatch.setattr(pipeline, "SLICE_RESOURCES", 16)
    counted = LoadsCounted(monkeypatch)
    for n in (0, 1):
        caplog.clear()
        h.run_at(NIGHT1 + timedelta(days=n))
        assert h.runs()[-1]["Outcome"] == "complete"
        assert held(caplog) <= 10 + 16, f"night {n + 1}: held {held(caplog)}"
    assert len(counted.loads) >= 2 * 2 * 60 // 16, "both passes of both nights read the slices back"
    assert sum(weight for _, weight in counted.loads) >= 2 * 2 * 60, "every resource read back, each pass"
    for taken, weight in counted.loads:
        assert taken == weight, counted.loads


class StateSends:
    """What the state writer does with each slice's rows: which ones are still buffered once the
    slice's state is queued (waiting for later slices), and which slices' rows each partition got."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.left: list[str] = []  # slices with rows still buffered when their add returned
        self.owners: dict[str, set[str]] = {}  # partition -> the owners (slices) whose rows it got
        add, send = PackedWriter.add, PackedWriter._send

        def tracked_add(writer: PackedWriter, owner: str, *args: Any, **kwargs: Any) -> None:
            add(writer, owner, *args, **kwargs)
            if writer.name == "state" and "(slice" in owner:
                with writer._lock:
                    waiting = sum(1 for batch in writer._buffers.values() for o, _ in batch if o == owner)
                if waiting:
                    self.left.append(f"{owner}: {waiting} rows wait")

        def tracked_send(writer: PackedWriter, batch: list[tuple[str, Any]]) -> None:
            if writer.name == "state":
                for owner, row in batch:
                    partition = row.partition if isinstance(row, DeferredRow) else str(row["PartitionKey"])
                    self.owners.setdefault(partition, set()).add(owner)
            send(writer, batch)

        monkeypatch.setattr(PackedWriter, "add", tracked_add)
        monkeypatch.setattr(PackedWriter, "_send", tracked_send)


@pytest.mark.parametrize("source", ["arm", "resourcegraph"])
def test_slices_cut_by_shard_send_their_state_as_they_are_queued_each_shard_from_one_slice(
    make_arm, harness_factory, monkeypatch, source
) -> None:
    """A large subscription with more state shards than slices is cut again by shard: each slice's
    state rows are sent as soon as it is queued, none left in a partial batch for later slices to fill
    (cut by the hash alone, every slice wrote to every shard, and its rows waited there, held, for the
    slices after it: more of them the larger the subscription), and each shard's rows come from one
    slice. Both nights, and the decisions are the tenant's."""
    tenant = big_and_small(60, 8, 4)
    h = capped(make_arm, harness_factory, monkeypatch, tenant, source)
    monkeypatch.setattr(layout, "PARTITION_ROWS", 2)  # 30 shards of the big subscription's 60 resources
    monkeypatch.setattr(pipeline, "SLICE_RESOURCES", 16)  # 8 to 15 slices
    cuts = Cuts(monkeypatch)
    for n in (0, 1):
        sends = StateSends(monkeypatch)
        h.run_at(NIGHT1 + timedelta(days=n))
        assert h.runs()[-1]["Outcome"] == "complete"
        assert {k: r["Status"] for k, r in h.rows_by_id().items()} == {
            k: e.status for k, e in tenant.expected().items()
        }
        assert sends.left == [], f"night {n + 1}"
        shards = {p: owners for p, owners in sends.owners.items() if p.startswith(BIG)}
        assert len(shards) > 20, sorted(shards)  # a hash leaves a few of the 30 empty
        assert {p: owners for p, owners in shards.items() if len(owners) > 1} == {}, f"night {n + 1}"
    assert cuts.aligned == [True, True], cuts.aligned


class SlicesLetGo:
    """Every slice read back from disk (``Gathered.load``), by a weak reference: when a slice is read,
    which slices of the first pass (read with ``last=False``, then given back to the budget) are
    still alive, whatever holds them (a slice given back and still referenced is memory the cap no
    longer counts)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.reads = 0
        self.surveyed: list[tuple[Gathered, weakref.ref[Any]]] = []
        self.alive: list[str] = []  # what a read found still alive
        load = Gathered.load

        def tracked_load(gathered: Gathered, index: int, **kwargs: Any) -> Any:
            last = kwargs.get("last", False)
            alive = sum(1 for owner, ref in self.surveyed if owner is gathered and ref() is not None)
            if alive:
                self.alive.append(f"reading slice {index} (last={last}): {alive} surveyed alive")
            part = load(gathered, index, **kwargs)
            self.reads += 1
            if not last:
                self.surveyed.append((gathered, weakref.ref(part)))
            return part

        monkeypatch.setattr(Gathered, "load", tracked_load)


@pytest.mark.parametrize("source", ["arm", "resourcegraph"])
def test_a_slice_of_the_first_pass_is_let_go_when_it_is_given_back(
    make_arm, harness_factory, monkeypatch, source
) -> None:
    """The first pass over a large subscription's slices gives each slice back to the budget once
    it is surveyed: nothing may still hold it when the next slice is read, nor while the slices are
    planned (each one taken from the cap again). Before, the loop's variable held each surveyed
    slice while the next was read, and the last one through the whole planning pass: a slice per
    large subscription being planned, records and state rows, that the cap did not count."""
    h = capped(make_arm, harness_factory, monkeypatch, big_and_small(60, 8, 4), source)
    monkeypatch.setattr(pipeline, "SLICE_RESOURCES", 8)
    slices = SlicesLetGo(monkeypatch)
    for n in (0, 1):
        h.run_at(NIGHT1 + timedelta(days=n))
        assert h.runs()[-1]["Outcome"] == "complete"
    assert len(slices.surveyed) >= 2 * 60 // 8 and slices.reads >= 2 * len(slices.surveyed), "both passes, both nights"
    assert slices.alive == []


def disk_full(*args: Any) -> Any:
    raise spill._disk_error(OSError(errno.ENOSPC, "No space left on device"))


@pytest.mark.parametrize("source", ["arm", "resourcegraph"])
@pytest.mark.parametrize("when", ["listed", "cut-by-shard"])
def test_a_subscription_whose_temporary_files_cannot_be_written_is_an_error_row_and_the_others_go_on(
    make_arm, harness_factory, monkeypatch, tmp_path, source, when
) -> None:
    """The disk a large subscription spills to is full, missing or not writable, from the start
    (``listed``: its listing cannot go to disk) or once it fills after the subscription was listed
    and surveyed, while it is cut again by shard: that subscription is an ERROR row that says so
    (naming the directory and TMPDIR), its state stays as it was (nothing retired, no alert), and
    the other subscriptions are audited as usual; never a failed run."""
    # Partitions of 1 row: a shard per resource, so the big subscription is cut again by shard.
    monkeypatch.setattr(layout, "PARTITION_ROWS", 10 if when == "listed" else 1)
    tenant, made = build()
    h: AuditHarness = harness_factory(make_arm(tenant))
    h.apply_env(AUDIT_INVENTORY_SOURCE=source, AUDIT_CONCURRENCY="3")
    h.run_at(NIGHT1)
    before = normal(h.state())
    for site in made[BIG][::3] + made[SMALL]:
        site.update(client_cert_mode="Optional")  # failures in the big one and in a small one
    # only the big subscription (45 resources) spills; the medium one (15, and 15 state rows) stays whole
    monkeypatch.setattr(pipeline, "SLICE_RESOURCES", 40)
    if when == "listed":
        monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "missing" / "tmp"))
    else:
        monkeypatch.setattr(Gathered, "_recut", staticmethod(disk_full))
    h.clear_events()
    h.run_at(NIGHT1 + timedelta(days=1))

    run = h.runs()[-1]
    assert run["Outcome"] == "partial", run["Outcome"]
    rows = h.rows_by_id()
    big = rows[f"/subscriptions/{BIG}"]
    assert big["Status"] == "ERROR"
    assert "temporary files could not be written" in big["Reason"] and "TMPDIR" in big["Reason"], big["Reason"]
    assert (str(tmp_path / "missing") if when == "listed" else "No space left on device") in big["Reason"]
    after = normal(h.state())
    assert {k: v for k, v in after.items() if BIG.lower() in k} == {k: v for k, v in before.items() if BIG.lower() in k}
    expected = tenant.expected()
    for key, want in expected.items():
        if BIG.lower() not in key:
            assert rows[key]["Status"] == want.status, key
    assert {e[0] for e in snapshot(h)["events"]} == {s.key for s in made[SMALL]}, "the small one's failures alerted"
