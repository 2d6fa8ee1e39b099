"""Test helper: run ``clientcert-audit run`` and die like a killed process (``os._exit``, no
clean-up, no ``finally``) right after the results rows are written and before the last-known
state is advanced. Used by tests/integration/test_reliability.py; never part of the product."""

from __future__ import annotations

import os
import sys

from shared.azure.store import TableStore
from shared.cli import main


def _die_before_state(self: TableStore, entities):  # type: ignore[no-untyped-def]
    sys.stderr.write("crash_run: killed between writing rows and advancing state\n")
    sys.stderr.flush()
    os._exit(137)


TableStore.write_state = _die_before_state  # type: ignore[method-assign]
sys.exit(main(["run"]))
