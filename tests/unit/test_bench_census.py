"""The census of live objects (``bench.child``) and its comparison (``bench.census``)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

from bench import census, child


def test_a_census_does_not_break_a_tuple_another_thread_is_building() -> None:
    """A census holds a reference to every object; CPython grows a tuple built from an iterator only
    while it has a single reference, and fails otherwise (``SystemError``, which broke a smoke run
    that took a census while the audit imported its modules). The census stops the other threads
    while it holds them (``child._alone``): without it, this fails (``child._census`` alone does)."""
    ballast = [{"n": n} for n in range(300_000)]  # a census of a process this size takes a while
    errors: list[BaseException] = []

    def items() -> Iterator[int]:
        for n in range(200):
            if n == 100:
                time.sleep(0.2)  # lets go of the GIL with the tuple half built
            yield n

    def build() -> None:
        try:
            tuple(items())
        except SystemError as exc:
            errors.append(exc)

    builder = threading.Thread(target=build)
    builder.start()
    time.sleep(0.1)
    started = time.monotonic()
    rows = child.census()
    took = time.monotonic() - started
    builder.join()
    assert took > 0.2, "the census must still hold its references when the builder goes on"
    assert errors == []
    assert dict((kind, n) for kind, n, _ in rows)["dict{n}"] >= len(ballast)  # and any other test's


def test_compare_censuses_by_the_kinds_that_changed(tmp_path: Path) -> None:
    first, second = tmp_path / "a.txt", tmp_path / "b.txt"
    first.write_text("100 Python blocks live\n     1.00 MiB      1000  SiteRecord\n     0.50 MiB        10  type\n")
    second.write_text("after the run\n     0.50 MiB        10  type\n     0.25 MiB       300  dict{a,b}\n")
    read = [census.read(first), census.read(second)]
    assert read[1].header == "after the run" and read[1].kinds["dict{a,b}"] == (0.25, 300)
    assert census.changed(read, 2) == [("SiteRecord", [(1.0, 1000), (0.0, 0)]), ("dict{a,b}", [(0.0, 0), (0.25, 300)])]
    assert census.main([str(first), str(second), "--top", "1"]) == 0
