"""A test's kind is the directory it lives in: ``tests/unit``, ``tests/integration``, ``tests/infra``.

Each of those directories' ``conftest.py`` calls :func:`mark_below` from its
``pytest_collection_modifyitems``, so a test file needs no ``pytestmark`` and cannot be filed under
one kind while marked as another; ``make unit`` (``-m "not integration and not infra"``),
``make integration`` and ``make test-infra`` select by these markers.
"""

from __future__ import annotations

from pathlib import Path

import pytest


def mark_below(directory: Path, marker: pytest.MarkDecorator, items: list[pytest.Item]) -> None:
    """Add ``marker`` to every collected item whose file is below ``directory``.

    The hook is given every item of the session, not only this directory's, hence the path test.
    """
    root = directory.resolve()
    for item in items:
        if item.path.resolve().is_relative_to(root):
            item.add_marker(marker)
