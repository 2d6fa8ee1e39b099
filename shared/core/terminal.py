"""Text from the estate shown on a terminal: no character in it can steer the terminal.

Names, reasons, exclusion paths, tag values (owners, exemption requests), subscription names and
exemption scopes come from Azure, where an app owner (the person the audit watches) can put almost
any text. Printed raw, ``ESC [ ... m`` recolours or hides the lines around it, ``ESC ] ...`` can set
the window title or a hyperlink, ``\\r`` overwrites the start of a line (``FAIL`` becomes ``PASS``),
``\\x9b`` is the one-byte CSI of some terminals, and bidi overrides reorder what is read.

So everything printed for a person goes through this module: the terminal formats (``report
--format table``, the ``--diff`` table, ``exempt list``, ``subscriptions list``), every message the
commands print (an ARM or Storage error's text included), the log lines of ``-v``
(:class:`TerminalFormatter`) and the comments of the fix script (:func:`one_line`). They show:

* line and layout controls (TAB, LF, VT, FF, CR, FS/GS/RS, NEL, U+2028, U+2029) as one space,
  so a value can neither forge a line nor break the columns;
* every other C0 control (ESC included), DEL, every C1 control (CSI U+009B, OSC U+009D, ...), the
  bidi controls (U+061C, U+200E, U+200F, U+202A-U+202E, U+2066-U+2069) and lone surrogates as
  U+FFFD (``�``), so the reader sees that the value held something unprintable, and ``ESC[31m``
  prints as ``�[31m``.

Other format characters (zero-width joiners, soft hyphens) steer no terminal and are kept. CSV and
JSON keep the exact values: they are data formats (CSV already defuses formulas), and the HTML
report escapes its text.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any

#: Shown as a space: characters that end or lay out a line.
LINE_CONTROLS = "\t\n\x0b\x0c\r\x1c\x1d\x1e\x85\u2028\u2029"
#: Shown as U+FFFD: the rest of C0, DEL, C1, bidi controls and lone surrogates.
_HIDDEN = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029\ud800-\udfff]")
REPLACEMENT = "\ufffd"


def _shown(match: re.Match[str]) -> str:
    return " " if match.group() in LINE_CONTROLS else REPLACEMENT


def terminal_text(value: Any) -> str:
    """``value`` as text that is safe to print on a terminal (see the module docstring)."""
    text = value if isinstance(value, str) else str(value)
    return _HIDDEN.sub(_shown, text)


def terminal_row(row: Mapping[str, Any]) -> Mapping[str, Any]:
    """The row with every string value made :func:`terminal_text` (others unchanged): a copy when a
    value had to change, else the row itself (one search over its text, for reports of 100k rows)."""
    if "".join(v for v in row.values() if isinstance(v, str)).isprintable():  # no target is printable
        return row
    return {key: terminal_text(value) if isinstance(value, str) else value for key, value in row.items()}


def one_line(value: Any) -> str:
    """:func:`terminal_text` on one line, runs of white space as one space, trimmed: a value inside a
    bash comment, a table cell or a message (nothing in it can end the comment or forge a line)."""
    return " ".join(terminal_text(value).split())


def display_width(text: str) -> int:
    """Terminal columns ``text`` takes: East Asian wide and full-width characters two, combining
    marks and zero-width characters none, the rest one."""
    width = 0
    for ch in text:
        if unicodedata.combining(ch) or unicodedata.category(ch) in ("Mn", "Me", "Cf"):
            continue
        width += 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1
    return width


def columns(
    header: Sequence[str], rows: Sequence[Sequence[Any]], *, right: Sequence[int] = (), gap: int = 2
) -> list[str]:
    """A table as lines, each column as wide as its widest cell (header included), cells through
    :func:`one_line`: values of any length never run into the next column. Columns whose index is in
    ``right`` are right-aligned (counts); the last column is not padded."""
    table = [[one_line(cell) for cell in header], *([one_line(cell) for cell in row] for row in rows)]
    widths = [max(display_width(line[i]) for line in table) for i in range(len(header))]
    lines = []
    for line in table:
        cells = []
        for i, cell in enumerate(line):
            pad = " " * (widths[i] - display_width(cell))
            last = i == len(line) - 1
            cells.append(pad + cell if i in right else cell + ("" if last else pad))
        lines.append((" " * gap).join(cells).rstrip())
    return lines


class TerminalFormatter(logging.Formatter):
    """A log formatter for a terminal: the message (with its arguments: subscription names, ARM error
    text) through :func:`terminal_text`, and a traceback line by line, its own line breaks kept."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return terminal_text(super().formatMessage(record))

    def formatException(
        self, ei: tuple[type[BaseException], BaseException, TracebackType | None] | tuple[None, None, None]
    ) -> str:
        return "\n".join(terminal_text(line) for line in super().formatException(ei).splitlines())

    def formatStack(self, stack_info: str) -> str:
        return "\n".join(terminal_text(line) for line in super().formatStack(stack_info).splitlines())
