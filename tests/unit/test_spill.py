"""The spill of a subscription's streams (``shared/run/spill.py``): what goes to disk comes back the
same, in order, each pair in the slice of its key, and the directory goes away."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.core.layout import state_shard
from shared.core.models import SiteRecord
from shared.run.spill import Spill, SpillDir, by_shard, slice_of

keys = st.text(min_size=1, max_size=12)
#: Rows whose values repeat across rows (as state rows do: a status, a run id, a partition), and
#: objects shared between pairs: what a pickle memo would conflate across separate pickles.
rows = st.fixed_dictionaries(
    {"Status": st.sampled_from(["PASS", "FAIL"]), "LastRunId": st.sampled_from(["r1", "r2"]), "N": st.integers()}
)


@given(st.lists(st.tuples(keys, rows), max_size=60), st.integers(min_value=1, max_value=7))
def test_pairs_come_back_as_they_went_in_whatever_was_spilled(
    pairs: list[tuple[str, dict[str, object]]], limit: int
) -> None:
    where = SpillDir()
    try:
        spill: Spill[dict[str, object]] = Spill(where, limit)
        shared = {"Status": sys.intern("PASS")}
        for _, row in pairs:
            row["Again"] = row["LastRunId"]  # one object twice in a pair (as "" is in a state row)
        for n, (key, row) in enumerate(pairs):
            spill.add(key, shared if n % 5 == 0 else row)  # the same object in more than one pair
        expected = [(key, shared if n % 5 == 0 else row) for n, (key, row) in enumerate(pairs)]
        assert list(spill) == expected
        assert list(spill) == expected, "read twice"
        assert spill.count == len(pairs)
        assert spill.spilled == (len(pairs) >= limit)
    finally:
        where.close()


@given(st.lists(st.tuples(keys, st.integers()), max_size=80), st.integers(min_value=2, max_value=9))
def test_a_split_puts_each_pair_in_the_slice_of_its_key_in_order(pairs: list[tuple[str, int]], slices: int) -> None:
    where = SpillDir()
    try:
        spill: Spill[int] = Spill(where, 4)
        spill.extend(pairs)
        parts = spill.split(slices)
        assert len(parts) == slices
        for index, part in enumerate(parts):
            assert list(part) == [(k, v) for k, v in pairs if slice_of(k, slices) == index]
    finally:
        where.close()


def test_records_round_trip_and_the_directory_is_removed() -> None:
    where = SpillDir()
    record = SiteRecord(
        resource_id="/subscriptions/s/resourceGroups/rg-µ/providers/Microsoft.Web/sites/a",
        subscription_id="s",
        resource_group="rg-µ",
        app_name="a",
        client_cert_mode="Required",
        tags=(("owner", "web"),),
    )
    spill: Spill[SiteRecord] = Spill(where, 1)
    spill.add("k", record)
    assert spill.spilled and list(spill) == [("k", record)]
    files = list(Path(spill._path).parent.iterdir()) if spill._path else []
    assert files, "the pair went to disk"
    where.close()
    assert not files[0].parent.exists()


def test_slices_of_a_key_are_stable_and_one_slice_is_slice_zero() -> None:
    assert slice_of("|subscriptions|x", 1) == 0
    assert slice_of("|subscriptions|x", 7) == slice_of("|subscriptions|x", 7)
    assert slice_of("\ud800 lone surrogate", 3) in range(3)


def test_a_slot_goes_to_its_sites_slice() -> None:
    """A slot needs its site where it is compared (its owner): every slot is in its site's slice."""
    site = "|subscriptions|s|resourcegroups|rg|providers|microsoft.web|sites|app{}"
    spread = {slice_of(site.format(i), 16) for i in range(200)}
    assert len(spread) == 16, "sites spread over the slices"
    for i in range(200):
        assert {slice_of(site.format(i) + f"|slots|s{k}", 16) for k in range(5)} == {slice_of(site.format(i), 16)}


def test_a_split_leaves_each_pair_on_disk_once() -> None:
    where = SpillDir()
    try:
        spill: Spill[int] = Spill(where, 2)
        spill.extend((f"k{n}", n) for n in range(10))
        source = spill._path
        assert source is not None and source.exists()
        parts = spill.split(3)
        assert not source.exists(), "the unsplit stream is removed once it is cut"
        assert sorted(v for part in parts for _, v in part) == list(range(10))
        parts[0].discard()
        assert list(parts[0]) == []
    finally:
        where.close()


def test_directories_of_dead_processes_are_swept_and_live_ones_kept(tmp_path: Path) -> None:
    import os
    import subprocess

    from shared.run.spill import PREFIX, sweep

    finished = subprocess.Popen(["true"])  # a process that ran and is gone (reaped): its pid runs nothing
    finished.wait()
    dead_pid = finished.pid
    dead = tmp_path / f"{PREFIX}{dead_pid}-abc"
    live = tmp_path / f"{PREFIX}{os.getpid()}-def"
    other = tmp_path / "clientcert-audit-notapid-x"
    for path in (dead, live, other):
        path.mkdir()
        (path / "1.pickle").write_bytes(b"x")
    assert sweep(tmp_path) == 1
    assert not dead.exists() and live.exists() and other.exists()


def test_records_read_back_share_their_common_values_again() -> None:
    """A listed record keeps the values many records share once (``sites.site_record``); read back
    from disk, each would be a string of its own (memory grows by a few hundred bytes a record)."""
    where = SpillDir()
    try:
        spill: Spill[SiteRecord] = Spill(where, 1)
        for n in range(3):
            spill.add(
                f"k{n}",
                SiteRecord(
                    resource_id=f"/subscriptions/s/resourceGroups/rg/providers/Microsoft.Web/sites/a{n}",
                    subscription_id="".join(["sub", "-1"]),
                    resource_group="".join(["r", "g"]),
                    app_name=f"a{n}",
                    kind="".join(["app,", "linux"]),
                    location="".join(["west", "europe"]),
                    client_cert_mode="".join(["Req", "uired"]),
                ),
            )
        (_, a), (_, b), (_, c) = list(spill)
        assert a.kind is b.kind is c.kind and a.location is c.location and a.resource_group is b.resource_group
        assert a.client_cert_mode is c.client_cert_mode and a.subscription_id is b.subscription_id
        assert a.app_name == "a0" and c.resource_id.endswith("/a2")
    finally:
        where.close()


def test_records_read_back_share_exactly_the_fields_a_listed_record_shares() -> None:
    """``spill._SHARED_FIELDS`` repeats which fields ``sites.site_record`` keeps once: a field shared
    on one side only would be one string per record once read back (memory, not correctness).
    Two records built from separately decoded JSON tell which fields the listing shares."""
    import dataclasses
    import json

    from shared.azure.sites import site_record
    from shared.run import spill as spill_module

    page = (
        '{"id": "/subscriptions/sub-1/resourceGroups/rg-1/providers/Microsoft.Web/sites/app%d/slots/blue",'
        ' "type": "Microsoft.Web/sites/slots", "kind": "app,linux", "location": "westeurope",'
        ' "properties": {"state": "Running", "clientCertEnabled": true, "clientCertMode": "Optional",'
        ' "clientCertExclusionPaths": "/health", "httpsOnly": true, "publicNetworkAccess": "Enabled"}}'
    )
    a, b = (site_record(json.loads(page % n), "sub-1") for n in (1, 2))
    assert isinstance(a, SiteRecord) and isinstance(b, SiteRecord)
    shared = {
        f.name
        for f in dataclasses.fields(SiteRecord)
        if isinstance(getattr(a, f.name), str) and getattr(a, f.name) and getattr(a, f.name) is getattr(b, f.name)
    }
    assert shared == spill_module._SHARED_FIELDS


def test_cutting_a_stream_buffers_a_bounded_number_of_pairs_however_many_slices(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A buffer per slice would hold slices × buffer pairs while a stream is cut: a term in the
    subscription's size (its slices). The stream's buffer is shared by its slices instead."""
    from shared.run import spill as spill_module

    monkeypatch.setattr(spill_module, "_CUT_BUFFER", 100)
    where = SpillDir()
    try:
        stream: Spill[int] = Spill(where, 10)
        for n in range(3000):
            stream.add(f"key-{n}", n)
        held: list[int] = []
        parts: list[Spill[int]] = []
        add = Spill.add

        def counting_add(self: Spill[int], key: str, item: int) -> None:
            if self not in parts:
                parts.append(self)
            add(self, key, item)
            held.append(sum(len(p._memory) for p in parts))

        monkeypatch.setattr(Spill, "add", counting_add)
        cut = stream.split(50)
        assert len(parts) == 50 and max(held) <= 100, f"{max(held)} pairs in memory while cutting"
        assert sorted(item for part in cut for _, item in part) == list(range(3000))
    finally:
        where.close()


@given(st.integers(min_value=1, max_value=40), st.integers(min_value=1, max_value=40))
def test_cut_by_shard_each_shard_is_whole_in_one_slice_and_every_slice_gets_one(slices: int, extra: int) -> None:
    """``by_shard``: a key's slice is a function of its state shard alone (so a shard's rows all come
    from one slice), the slices take contiguous runs of shards, and none is left without a shard."""
    shards = slices + extra - 1
    keys = [f"|subscriptions|s|resourcegroups|rg|providers|microsoft.web|sites|app-{i}" for i in range(30 * shards)]
    slice_of_shard: dict[int, int] = {}
    for key in keys:
        shard, cut = state_shard(key, shards), by_shard(key, shards, slices)
        assert slice_of_shard.setdefault(shard, cut) == cut, "one shard, two slices"
    assert set(slice_of_shard) == set(range(shards)), "30 keys a shard reach every shard"
    owners = [slice_of_shard[shard] for shard in range(shards)]
    assert owners == sorted(owners) and set(owners) == set(range(slices))
