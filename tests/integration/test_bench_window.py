"""The window benchmark end to end on a tiny tenant, so ``bench/window.py`` cannot rot (the real
figures come from ``python -m bench.window``; see bench/README.md, "The one window left")."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.window import main


def test_window_bench_measures_every_alert(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "window.json"
    args = ["--sites", "40", "--subscriptions", "2", "--failing", "30", "--json", str(out), "--workdir", str(tmp_path)]
    assert main(args) == 0
    figures = json.loads(out.read_text())
    assert figures["alerts"] == 30 and figures["mark_batches"] >= 2  # one mark per partition of owed rows
    answer, request = figures["from_the_marks_answer"], figures["from_the_marks_request"]
    assert answer["every_event"]["n"] == request["every_event"]["n"] == 30
    for bound in (answer, request):
        for which in bound.values():
            assert 0 < which["median_us"] <= which["p99_us"] <= which["worst_us"]
    # the request bound includes the answer bound (the transaction's round trip)
    assert request["last_event_of_a_batch"]["worst_us"] >= answer["last_event_of_a_batch"]["worst_us"]
    assert "from the marks answer" in capsys.readouterr().out
