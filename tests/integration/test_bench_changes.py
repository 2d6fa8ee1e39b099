"""The change-poll benchmark end to end on a tiny tenant, so ``bench/changes.py`` cannot rot (the
real figures come from ``python -m bench.changes``; see bench/README.md, "Change poll")."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.changes import INTERVAL, main


def test_change_bench_runs_on_a_tiny_tenant(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "changes.json"
    code = main(
        [
            "--sites",
            "30",
            "--subscriptions",
            "2",
            "--changes",
            "8",
            "--intervals",
            "2",
            "--lags",
            "0,300",
            "--burst",
            "6",
            "--latency",
            "0.002",
            "--json",
            str(out),
            "--workdir",
            str(tmp_path / "work"),
        ]
    )
    assert code == 0
    figures = json.loads(out.read_text())
    interval = INTERVAL.total_seconds()

    immediate, late = figures["latency"]
    for run in (immediate, late):
        # every change alerted exactly once, by a poll whose instant is after it
        assert run["changes"] == run["alerted"] == 8 and run["missed"] == 0 and run["duplicate_alerts"] == 0
        lat = run["latency_seconds"]
        assert 0 < lat["best"] <= lat["median"] <= lat["p95"] <= lat["worst"]
        assert 0 < run["processing_to_event_seconds"]["worst"] <= run["poll_wall_seconds"]["worst"] + 0.01
    # no lag: a change waits at most one interval for its poll, plus that poll's real work
    assert immediate["latency_seconds"]["worst"] <= interval + immediate["processing_to_event_seconds"]["worst"] + 0.01
    # a 5-minute lag: nothing is seen before it is visible, and nothing waits more than one extra interval
    assert late["latency_seconds"]["best"] >= 300
    assert late["latency_seconds"]["worst"] <= 300 + interval + late["processing_to_event_seconds"]["worst"] + 0.01

    steps = figures["requests"]["steps"]
    quiet, burst = figures["requests"]["no_change"], figures["requests"]["with_burst"]
    assert quiet["resource_graph_requests"] == 1 and quiet["arm_requests"] == 0 and quiet["alerts"] == 0
    assert figures["targets"]["no_change_poll_costs_one_resource_graph_request"]["met"]
    # a burst: still one query; one GET per changed resource, and no more (a changed slot takes its owner
    # from its own tags, its changed site's GET, or what the nightly run stored)
    assert figures["requests"]["slots_in_burst"] > 0
    assert burst["resource_graph_requests"] == 1 and burst["alerts"] == 6
    assert burst["arm_requests"] == burst["arm_requests_by_kind"]["site_get"] == 6
    assert burst["table_requests"] > quiet["table_requests"]
    # the polls inside the overlap margin list the burst again, recognise it as handled and read nothing
    inside = steps[3:-1]
    assert len(inside) == 3 and all(s["arm_requests"] == 0 and s["alerts"] == 0 for s in inside)
    assert all(s["resource_graph_requests"] == 1 for s in inside)
    assert steps[-1]["arm_requests"] == 0 and steps[-1]["resource_graph_requests"] == 1
    assert all(s["watermark_advanced"] and s["http_429"] == 0 for s in steps)

    printed = capsys.readouterr().out
    assert "Latency from a change to its NewFailure event" in printed and "Targets:" in printed
