"""Every test below this directory is an ``integration`` test: the real SDKs against Azurite and the ARM emulator.

The fixtures they use (``azurite``, ``make_arm``, ``harness_factory``) are in ``tests/conftest.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.kinds import mark_below


@pytest.hookimpl(tryfirst=True)  # before the ``-m`` selection reads the markers
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    mark_below(Path(__file__).parent, pytest.mark.integration, items)
