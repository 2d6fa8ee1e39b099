"""The exit codes: one enum, documented once, with the numbers scripts and pipelines rely on."""

from __future__ import annotations

import re

from shared.commands.common import ExitCode


def test_every_meaning_keeps_its_number() -> None:
    numbers = {name: int(member) for name, member in ExitCode.__members__.items()}
    assert numbers == {
        "OK": 0,
        "FAILED": 1,
        "FAIL_FOUND": 1,
        "NOT_FOUND": 1,
        "PARTIAL": 2,
        "BUSY": 3,
        "CONFIG": 4,
        "INVALID": 4,
        "NO_DATA": 5,
        "STORE": 6,
        "BLIND": 7,
    }


def test_the_docstring_table_lists_every_member_with_its_number() -> None:
    rows = re.findall(r"^\s*(\d)\s+``([A-Z_]+)``", ExitCode.__doc__ or "", re.MULTILINE)
    assert {name: int(code) for code, name in rows} == {
        name: int(member) for name, member in ExitCode.__members__.items()
    }
