"""The measurement behind bench/README.md's "The independent figures": wait4's ru_maxrss of a child
is at least its spawner's peak RSS, so the bench reports the audit's own VmHWM instead."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux's /proc and ru_maxrss")
def test_an_idle_childs_ru_maxrss_is_its_spawners_peak() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "bench.maxrss", "300"], cwd=ROOT, capture_output=True, text=True, check=True, timeout=60
    ).stdout
    (_, first_child), (peak, child) = [
        (int(a), int(b)) for a, b in re.findall(r"parent peak (\d+) MB.*ru_maxrss (\d+) MB", out)
    ]
    assert first_child < 100 and peak >= 300, out  # the idle child needs little; the spawner grew
    assert child >= peak - 5, f"an idle child reported its spawner's peak: {out}"


def test_bytes_held_per_listed_resource_is_a_fraction_of_its_json() -> None:
    """``bench.held``, the bound's ``r``: what a listed resource costs while held (its compact record,
    not its 3 KB of JSON), its prior-state row on the next night, and what its plan and its state row
    waiting in a partial batch add while its rows wait for the writers."""
    from bench.held import per_resource

    figures = per_resource(300)
    assert 300 < figures["resources"] < 450  # sites and their slots
    assert 200 < figures["listed_bytes_per_resource"] < figures["json_bytes_per_resource"] / 2
    assert 100 < figures["prior_state_bytes_per_resource"] < figures["listed_bytes_per_resource"]
    assert 50 < figures["queued_bytes_per_resource"] < figures["prior_state_bytes_per_resource"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's FILE and CPython's pymalloc")
def test_the_memory_samples_tell_pymallocs_arenas_from_its_live_blocks() -> None:
    """``bench.child``'s samples split the RSS: pymalloc's arenas (1 MiB each), the bytes in their
    live blocks, and the arenas' high-water mark. 20 MB of small objects show in both, and freeing
    them leaves the high-water mark where it was."""
    script = (
        "from bench.child import _pymalloc_mb as m\n"
        "a = m()\n"
        "x = [(i, str(i)) for i in range(250_000)]\n"
        "b = m()\n"
        "del x\n"
        "c = m()\n"
        "print(*a, *b, *c)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True, timeout=60
    )
    arenas0, _, live0, arenas1, high1, live1, arenas2, high2, live2 = map(float, out.stdout.split())
    assert live0 <= arenas0 and live1 <= arenas1 and live2 <= arenas2, out.stdout
    assert live1 - live0 > 15 and arenas1 - arenas0 > 15, out.stdout  # 250k tuples and strings: ~22 MB
    assert high2 == high1 >= arenas1 and live2 < live1 - 15, out.stdout
