"""The security team's report: which rows and runs, what they add up to, and how they look.

Modules by role (each format makes one pass over an *iterable* of rows, so 100,000 rows never sit
in memory at once):

* :mod:`.selection`: the row filter and the choice of runs (pure);
* :mod:`.summary`: counting per status and per ``--group-by`` group, and the report's context;
* :mod:`.values`: how one value reads in a cell, a label or JSON;
* :mod:`.text`: the terminal table, CSV and JSON, and a diff's text;
* :mod:`.html`: the HTML page with its inline SVG trend;
* :mod:`.diff`: what changed between two runs (pure);
* :mod:`.fixscript` and :mod:`.ocsf`: the fix script and OCSF findings for a SIEM;
* :mod:`.spool`: the disk-backed spools that let a summary come before its list;
* :mod:`.source`: the only I/O, reading run records and result rows from the tables.

The command line that drives them is :mod:`shared.commands.report`. The columns a report exports
are :data:`shared.core.schema.REPORT_COLUMNS`.
"""

from __future__ import annotations

from ..core.schema import REPORT_COLUMNS
from .charts import COLOURS, ISSUE_STATUSES, trend_svg
from .diff import DIFF_COLUMNS, Change, change_selected, diff_rows
from .fixscript import SCRIPT_STATUSES, write_script
from .html import write_html
from .ocsf import write_ocsf
from .selection import (
    ACTIONABLE,
    TREND_OUTCOMES,
    RowFilter,
    find_run,
    kind_tokens,
    latest_finished,
    listed_statuses,
    no_run_message,
    runs_since,
    trend_runs,
)
from .source import ReportSource
from .spool import LIST_ORDER, ListSpool
from .summary import GROUPINGS, NO_OWNER, ReportContext, Summary
from .text import CsvWriter, csv_cell, write_csv, write_diff, write_group_csv, write_json, write_rows_csv, write_table
from .values import (
    STATUSES,
    broken_exemption_view,
    exemption_view,
    plain,
    resource_label,
    run_view,
    subscription_label,
    text,
)

__all__ = [
    "ACTIONABLE",
    "COLOURS",
    "DIFF_COLUMNS",
    "GROUPINGS",
    "ISSUE_STATUSES",
    "LIST_ORDER",
    "NO_OWNER",
    "REPORT_COLUMNS",
    "SCRIPT_STATUSES",
    "STATUSES",
    "TREND_OUTCOMES",
    "Change",
    "CsvWriter",
    "ListSpool",
    "ReportContext",
    "ReportSource",
    "RowFilter",
    "Summary",
    "broken_exemption_view",
    "change_selected",
    "csv_cell",
    "diff_rows",
    "exemption_view",
    "find_run",
    "kind_tokens",
    "latest_finished",
    "listed_statuses",
    "no_run_message",
    "plain",
    "resource_label",
    "run_view",
    "runs_since",
    "subscription_label",
    "text",
    "trend_runs",
    "trend_svg",
    "write_csv",
    "write_diff",
    "write_group_csv",
    "write_html",
    "write_json",
    "write_ocsf",
    "write_rows_csv",
    "write_script",
    "write_table",
]
