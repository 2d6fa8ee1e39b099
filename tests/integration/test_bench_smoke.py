"""The benchmark end to end on a tiny tenant, so ``bench/`` cannot rot (the real runs are ``make bench``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import census
from bench.run import main


def test_bench_runs_on_a_tiny_tenant(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "figures.json"
    code = main(
        [
            "--sites",
            "60",
            "--subscriptions",
            "4",
            "--latency",
            "0.002",
            "--baseline-budget",
            "30",
            "--json",
            str(out),
            "--workdir",
            str(tmp_path / "work"),
        ]
    )
    assert code == 0
    figures = json.loads(out.read_text())
    assert figures["settings"]["site_shape"] == "full" and figures["settings"]["spread"] == "heavy"
    assert 0 < figures["tenant"]["largest_subscription_resources"] <= figures["tenant"]["resources"]
    runs = {r["source"]: r for r in figures["runs"]}
    assert set(runs) == {"arm", "resourcegraph", "arm+state", "resourcegraph+state"}  # + the next night
    for run in runs.values():
        assert run["outcome"] == "complete" and run["matches_oracle"]
        assert run["resources"] == figures["tenant"]["resources"] == 78
        assert run["rows_written"] == 2 * run["resources"]
        assert 0 < run["table_partitions"] <= run["table_transactions"]  # a transaction holds one partition
        assert run["peak_rss_mb"] > 0 and run["cpu_seconds"] > 0
        assert set(run["targets"]) >= {"cpu_le_0.5ms_per_resource", "peak_rss_le_300mb", "wall_le_1.3x_bound"}
    assert runs["arm"]["night"] == "baseline" and runs["arm+state"]["night"] == "nightly"
    assert runs["arm"]["arm_requests"] == figures["arm_floor"]["total"]  # exactly the list strategy
    assert runs["arm+state"]["arm_requests"] == figures["arm_floor"]["total"]
    assert runs["arm"]["arm_requests_by_kind"]["site_get"] == 0
    assert runs["resourcegraph"]["arm_requests"] == figures["resourcegraph_floor"]
    assert figures["raw_ingest"]["rows"] == 156
    assert figures["baseline"]["sample_requests"] > 0 and figures["baseline"]["estimated_wall_seconds"] > 0
    printed = capsys.readouterr().out
    assert "Targets:" in printed and "faster than the baseline" in printed


def test_bench_runs_the_zipf_shape_both_nights(tmp_path: Path) -> None:
    """The independent run's shape (``--spread zipf``), small: its own page size, its statistics in
    the figures, both nights equal to the oracle, and the memory figures of the run recorded."""
    out = tmp_path / "figures.json"
    code = main(
        [
            *("--spread", "zipf", "--sites", "400", "--subscriptions", "20", "--latency", "0.002"),
            *("--sources", "arm", "--skip-baseline", "--skip-ingest", "--check-rows"),
            *("--census", "--census-every", "0.5"),
            *("--json", str(out), "--workdir", str(tmp_path / "work")),
        ]
    )
    assert code == 0
    figures = json.loads(out.read_text())
    assert figures["settings"]["spread"] == "zipf" and figures["settings"]["page_size"] == 100
    shape = figures["tenant"]["shape"]
    assert shape["subscriptions"] == 20 and shape["subscriptions_without_sites"] == 1
    assert shape["slots_on_flex_apps"] == 0 and shape["slots"] == figures["tenant"]["slots"] == 120
    runs = {r["source"]: r for r in figures["runs"]}
    assert set(runs) == {"arm", "arm+state"}
    for run in runs.values():
        assert run["outcome"] == "complete" and run["matches_oracle"] and run["resources"] == 520
        assert run["row_mismatches"] == {"missing": 0, "unknown": 0, "twice": 0, "wrong": 0}, "row by row"
        assert run["arm_requests"] == figures["arm_floor"]["total"]
        assert run["log_lines"]["connection_pool_full"] == 0
        assert run["targets"]["peak_rss_le_300mb"]["met"]
        # The audit's own peak (VmHWM), not wait4's ru_maxrss: Linux starts the latter at what the
        # bench had resident when it spawned the audit (here the bench holds the tenant and more).
        assert run["peak_rss_mb"] > 0 and run["ru_maxrss_wait4_mb"] >= run["bench_rss_at_spawn_mb"] - 5
        # The bound's H: what the run held at most, under the memory cap (from the pipeline's last line),
        # each resource's record and, the next night, its state row: at most two units a resource.
        units = run["resources"] * (2 if run["night"] == "nightly" else 1)
        assert run["held"]["cap"] == 20_000 and 0 < run["held"]["most_held"] <= units
    # The censuses of what is live (bench.census compares them): after each run, none of its records
    # is left (a cache or a module that kept them would hold them for the process's life).
    work = tmp_path / "work"
    for label in runs:
        after = census.read(work / f"census-{label}.txt.end")
        assert after.header.startswith("after the run") and len(after.kinds) == 200
        assert "SiteRecord" not in after.kinds and "DeferredRow" not in after.kinds
        taken = sorted(work.glob(f"census-{label}.txt.*"))  # those of the run (if it lasted), then .end
        assert census.main([str(taken[0]), str(taken[-1])]) == 0
