"""What an ARM scan remembers of a subscription's sites: each group's app names, for the per-app slot
lists of a group whose ``includeSlots`` list fails (``inventory._scan``). Rarely read, so kept in
memory only up to a bound, then on disk: a scan holds nothing that grows with the subscription.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from typing import IO

from ..core.names import fold

#: App names a scan keeps in memory for the per-app fallback; past them, a temporary file holds them.
APPS_IN_MEMORY = 2_000


class GroupApps:
    """Each group's app names as the site list shows them, for the per-app slot lists of a group
    whose list fails (rare): in memory up to ``limit`` names, past it appended to an unlinked
    temporary file (a JSON line each) and read back for the one group that needs them. The scan
    thread alone uses it."""

    def __init__(self, limit: int | None = None) -> None:
        self.limit = APPS_IN_MEMORY if limit is None else limit
        self._memory: list[tuple[str, str]] = []  # (folded group, app name as listed)
        self._file: IO[str] | None = None

    def add(self, group: str, app: str) -> None:
        self._memory.append((group, app))
        if len(self._memory) >= self.limit:
            if self._file is None:
                self._file = tempfile.TemporaryFile("w+", encoding="utf-8")  # noqa: SIM115 - closed by close()
            self._file.seek(0, os.SEEK_END)
            self._file.writelines(json.dumps(pair) + "\n" for pair in self._memory)
            self._memory = []

    def of(self, group: str) -> list[str]:
        """The distinct apps (as ARM compares names) of a folded group name, in the order listed."""
        apps: dict[str, str] = {}
        for listed_group, app in self._pairs():
            if listed_group == group:
                apps.setdefault(fold(app), app)
        return list(apps.values())

    def _pairs(self) -> Iterator[tuple[str, str]]:
        if self._file is not None:
            self._file.flush()
            self._file.seek(0)
            for line in self._file:
                group, app = json.loads(line)
                yield str(group), str(app)
        yield from self._memory

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
