"""Records ``tested-pins.txt`` after a contract run that passed whole, when asked to.

With ``AUDIT_RECORD_TESTED_PINS=1`` (see ``pins.py``), the session's end rewrites the file only if
the run collected contract tests, none was deselected, and each one passed (none failed or
skipped); otherwise it says why and fails the session. Without the variable nothing is written.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.contract.pins import RECORD_ENV, TESTED_PINS, record_tested_pins

HERE = Path(__file__).resolve().parent


class _Outcomes:
    def __init__(self) -> None:
        self.by_test: dict[str, str] = {}
        self.deselected = 0


_OUTCOMES = _Outcomes()


def _is_contract(path: Path | str) -> bool:
    return Path(path).resolve().is_relative_to(HERE)


def pytest_deselected(items: list[pytest.Item]) -> None:
    _OUTCOMES.deselected += sum(1 for item in items if _is_contract(item.path))


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Every test's worst phase (only the contract tests' are read, by node id)."""
    previous = _OUTCOMES.by_test.get(report.nodeid, "passed")
    if report.when == "call" or report.outcome != "passed":
        _OUTCOMES.by_test[report.nodeid] = report.outcome if previous == "passed" else previous


def _refusal(session: pytest.Session, exitstatus: int) -> str | None:
    if hasattr(session.config, "workerinput") or session.config.getoption("numprocesses", None):
        return "run it without xdist (-p no:xdist): the outcomes are only known in one process"
    items = [item.nodeid for item in session.items if _is_contract(item.path)]
    if not items or _OUTCOMES.deselected:
        return "every contract test must be collected and selected"
    not_passed = {node: _OUTCOMES.by_test.get(node, "not run") for node in items}
    not_passed = {node: outcome for node, outcome in not_passed.items() if outcome != "passed"}
    if not_passed or exitstatus != 0:
        return f"not every contract test passed: {not_passed or f'exit status {exitstatus}'}"
    return None


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if os.environ.get(RECORD_ENV) != "1" or hasattr(session.config, "workerinput"):
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    refusal = _refusal(session, int(exitstatus))
    try:
        if refusal is None:
            record_tested_pins()
    except RuntimeError as exc:
        refusal = str(exc)
    if refusal is not None:
        message = f"{TESTED_PINS.name} NOT written: {refusal}"
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    else:
        message = f"{TESTED_PINS.name} written: the contract test passed with requirements.txt's pins"
    if reporter is not None:
        reporter.write_line(message)
