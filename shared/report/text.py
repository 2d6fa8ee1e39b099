"""The text formats: the terminal table, CSV, JSON, and a diff's table, CSV and JSON.

Each writer takes an *iterable* of rows and a text stream and makes one pass: CSV and JSON are
written row by row; the table, whose summary comes before its list, spools the list while it
counts (:mod:`.spool`). The terminal formats print every value from the estate through
:func:`~shared.core.terminal.terminal_row`; CSV and JSON keep exact values (CSV defuses formulas).
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC
from typing import IO, Any

from ..core.schema import REPORT_COLUMNS
from ..core.terminal import columns, terminal_row, terminal_text
from .diff import DIFF_COLUMNS, Change
from .spool import LIST_ORDER, ListSpool, copy, new_spool
from .summary import ReportContext, Summary
from .values import (
    STATUSES,
    broken_exemption_view,
    exemption_view,
    fit,
    plain,
    resource_label,
    run_counts,
    run_started,
    run_view,
    single_line,
    subscription_label,
    text,
)

#: First characters that make a spreadsheet read a CSV cell as a formula (CSV injection).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_LIST_HEAD = f"{'STATUS':<7} {'NEW':<3} {'APP':<32} {'RESOURCE GROUP':<24} {'SUBSCRIPTION':<28} {'OWNER':<24} MODE"


# -- CSV and JSON (streamed) ----------------------------------------------------------------------
def csv_cell(value: Any) -> str:
    """A CSV cell that a spreadsheet cannot run: tag values and app settings come from app owners,
    so a cell starting like a formula gets a leading ``'`` (the OWASP CSV-injection advice)."""
    cell = text(value)
    return "'" + cell if cell.startswith(_FORMULA_START) else cell


class CsvWriter:
    """``csv.writer`` with ``\n`` line ends that also quotes every cell of a row holding a bare ``\r``.

    Minimal quoting quotes only the line terminator's characters, and a reader takes an unquoted CR
    for the end of a line: one tag value holding ``\r`` made the whole export unreadable. The
    values stay exact (CSV is a data format); other rows are written as before.
    """

    def __init__(self, out: IO[str]) -> None:
        self._plain = csv.writer(out, lineterminator="\n")
        self._quoted = csv.writer(out, lineterminator="\n", quoting=csv.QUOTE_ALL)

    def writerow(self, cells: Iterable[Any]) -> None:
        row = list(cells)
        carriage_return = any(isinstance(cell, str) and "\r" in cell for cell in row)
        (self._quoted if carriage_return else self._plain).writerow(row)

    def writerows(self, rows: Iterable[Iterable[Any]]) -> None:
        for row in rows:
            self.writerow(row)


def write_csv(rows: Iterable[Mapping[str, Any]], out: IO[str], ctx: ReportContext | None = None) -> Summary:
    """Every selected row, one CSV line each, in :data:`REPORT_COLUMNS` order; with ``--group-by``,
    the summary table instead: one line per group, worst first (a pivot ready for a spreadsheet)."""
    if ctx is not None and ctx.group_by:
        return write_group_csv(rows, out, ctx)
    summary = Summary()
    writer = CsvWriter(out)
    writer.writerow(REPORT_COLUMNS)
    for row in rows:
        summary.add(row)
        writer.writerow([csv_cell(row.get(c)) for c in REPORT_COLUMNS])
    return summary


def write_group_csv(rows: Iterable[Mapping[str, Any]], out: IO[str], ctx: ReportContext) -> Summary:
    """The per-group summary as CSV: ``Group,PASS,WARN,FAIL,EXEMPT,ERROR,Total``."""
    summary = ctx.summary()
    for row in rows:
        summary.add(row)
    writer = CsvWriter(out)
    writer.writerow([ctx.group_by.replace("-", " ").capitalize(), *STATUSES, "Total"])
    for label, counts in summary.groups_worst_first():
        writer.writerow([csv_cell(label), *(counts.get(s, 0) for s in STATUSES), sum(counts.values())])
    return summary


def write_rows_csv(rows: Iterable[Mapping[str, Any]], out: IO[str], columns: Sequence[str]) -> None:
    """Any mappings as CSV with the given columns (``exempt list --format csv``)."""
    writer = CsvWriter(out)
    writer.writerow(columns)
    writer.writerows([csv_cell(row.get(c)) for c in columns] for row in rows)


def write_json(rows: Iterable[Mapping[str, Any]], out: IO[str], ctx: ReportContext) -> Summary:
    """One JSON document: ``report`` (runs, selection, expiring exemptions), ``results``, ``summary``.

    The summary comes last because it is only known once every row has streamed past.
    """
    summary = ctx.summary()
    header = {
        "generatedAt": plain(ctx.generated_at),
        "runs": [run_view(r) for r in ctx.runs],
        "selection": ctx.flt.as_dict(),
        "expiringExemptions": [exemption_view(e) for e in ctx.expiring],
        "brokenExemptions": [broken_exemption_view(b) for b in ctx.broken],
    }
    out.write('{"report": ' + json.dumps(header) + ',\n"results": [')
    separator = "\n"
    for row in rows:
        summary.add(row)
        out.write(separator + json.dumps({c: plain(row.get(c)) for c in REPORT_COLUMNS}, ensure_ascii=False))
        separator = ",\n"
    out.write('\n],\n"summary": ' + json.dumps(summary.as_dict()) + "}\n")
    return summary


# -- terminal table -------------------------------------------------------------------------------
def _table_line(row: Mapping[str, Any], run_width: int) -> str:
    """A resource's lines; with ``run_width`` (several runs), its run id first, padded to that width."""
    new = "new" if row.get("NewFailure") is True else ""
    head = (
        f"{text(row.get('Status')):<7} {new:<3} {fit(resource_label(row), 32):<32} "
        f"{fit(text(row.get('ResourceGroup')), 24):<24} {fit(subscription_label(row), 28):<28} "
        f"{fit(single_line(row.get('Owner')), 24):<24} {text(row.get('ClientCertMode'))}"
    )
    lines = [f"{text(row.get('RunId')):<{run_width}}  {head}" if run_width else head]
    lines.append(f"        {text(row.get('Reason'))}")
    if row.get("Remediation"):
        lines.append(f"        Fix: {text(row.get('Remediation'))}")
    if row.get("ExemptionRequest"):
        lines.append(f"        Exemption requested by tag: {text(row.get('ExemptionRequest'))}")
    return "\n".join(lines) + "\n"


def _status_block(summary: Summary) -> list[str]:
    lines = [f"  {'status':<8}{'count':>8}"]
    lines += [f"  {s:<8}{summary.by_status.get(s, 0):>8}" for s in STATUSES]
    lines.append(f"  {'total':<8}{summary.total:>8}    new failures: {summary.new_failures}")
    return lines


def _group_block(summary: Summary) -> list[str]:
    groups = summary.groups_worst_first()
    width = max([38, *(min(len(label), 60) + 2 for label, _ in groups)])
    heading = summary.group_by.replace("-", " ")
    lines = [f"  {heading:<{width}}" + "".join(f"{s:>8}" for s in STATUSES) + f"{'total':>8}"]
    for label, counts in groups:
        cells = "".join(f"{counts.get(s, 0):>8}" for s in STATUSES)
        lines.append(f"  {fit(label, width - 2):<{width}}{cells}{sum(counts.values()):>8}")
    return lines


def _runs_block(runs: Sequence[Mapping[str, Any]]) -> list[str]:
    """One line per run, every column as wide as its data (run ids are longer than they once were)."""
    cells = []
    for run in runs:
        counts, new = run_counts(run), int(run.get("NewFailures") or 0)
        cells.append([run.get("RowKey"), run.get("Outcome"), run_started(run), *(counts[s] for s in STATUSES), new])
    numbers = range(3, 4 + len(STATUSES))
    return ["  " + line for line in columns(("run", "outcome", "started", *STATUSES, "new"), cells, right=numbers)]


def _expiring_block(ctx: ReportContext) -> list[str]:
    if not ctx.expiring:
        return [f"No exemption expires within {ctx.expiring_days} days."]
    lines = [f"Exemptions expiring within {ctx.expiring_days} days (renew with `exempt add`, or let them lapse):"]
    lines += [
        f"  {e.expires.astimezone(UTC):%Y-%m-%d %H:%M}  {terminal_text(e.scope)}  "
        f"({terminal_text(e.reason)}; approved by {terminal_text(e.approver)})"
        for e in ctx.expiring
    ]
    return lines


def _broken_block(ctx: ReportContext) -> list[str]:
    if not ctx.broken:
        return []
    lines = [
        f"Broken exemptions ({len(ctx.broken)}) - they exempt nothing, their resources are audited as if "
        "unexempted; fix the row or `exempt remove` it:"
    ]
    lines += [
        f"  {terminal_text(b.scope)}\n    {terminal_text(b.problem)} (row {terminal_text(b.row)})" for b in ctx.broken
    ]
    return lines


def _requests_block(summary: Summary) -> list[str]:
    if not summary.requests_total:
        return []
    lines = [
        f"Exemption requests from resource tags ({summary.requests_total}) - NOT exemptions; the security team "
        "approves with `clientcert-audit exempt add`:"
    ]
    lines += [
        f"  {text(r.get('Status')):<6} {resource_label(r)}  {text(r.get('ResourceId'))}\n"
        f"         request: {text(r.get('ExemptionRequest'))}"
        for r in summary.requests
    ]
    if summary.requests_total > len(summary.requests):
        lines.append(f"  … and {summary.requests_total - len(summary.requests)} more (see --format csv)")
    return lines


def write_table(rows: Iterable[Mapping[str, Any]], out: IO[str], ctx: ReportContext) -> Summary:
    """Readable terminal report: summary by status and by group (subscription unless ``--group-by``
    says otherwise), then the rows to act on."""
    summary = ctx.summary()
    run_width = max((len(text(r.get("RowKey"))) for r in ctx.runs), default=3) if ctx.multi_run else 0
    with ListSpool() as spool:
        for raw in rows:
            row = terminal_row(raw)  # every value from the estate, printed without control characters
            summary.add(row)
            if str(row.get("Status")) in ctx.listed:
                spool.write(str(row.get("Status")), _table_line(row, run_width))
        listed = spool.count
        head = [
            f"Client certificate audit - {ctx.title()}",
            f"Selection: {ctx.flt.describe()}",
            "",
            *_status_block(summary),
            "",
            *_group_block(summary),
        ]
        if ctx.multi_run and ctx.runs:
            head += ["", "Run totals (whole tenant, as each run recorded them):", *_runs_block(ctx.runs)]
        head += ["", *_expiring_block(ctx)]
        broken = _broken_block(ctx)
        head += ["", *broken] if broken else []
        requests = _requests_block(summary)
        head += ["", *requests] if requests else []
        which = "/".join(s for s in LIST_ORDER if s in ctx.listed)
        head += ["", f"{which} resources: {listed}" + ("" if listed else " - nothing to act on.")]
        out.write("\n".join(head) + "\n")
        if listed:
            out.write((f"{'RUN':<{run_width}}  " if run_width else "") + _LIST_HEAD + "\n")
            spool.copy_to(out)
    return summary


# -- diff ---------------------------------------------------------------------------------------
def write_diff(changes: Iterable[Change], out: IO[str], fmt: str, run_a: str, run_b: str) -> Counter[str]:
    """Render a diff as table, CSV or JSON (streamed); returns counts per ``BEFORE->AFTER``."""
    counts: Counter[str] = Counter()
    if fmt == "csv":
        writer = CsvWriter(out)
        writer.writerow(DIFF_COLUMNS)
        for change in changes:
            counts[change.transition] += 1
            writer.writerow([csv_cell(v) for v in change.as_row().values()])
        return counts
    if fmt == "json":
        out.write(f'{{"from": {json.dumps(run_a)}, "to": {json.dumps(run_b)}, "changes": [')
        separator = "\n"
        for change in changes:
            counts[change.transition] += 1
            out.write(separator + json.dumps(change.as_row(), ensure_ascii=False))
            separator = ",\n"
        out.write('\n], "summary": ' + json.dumps(dict(sorted(counts.items()))) + "}\n")
        return counts
    with new_spool() as spool:
        for change in changes:
            counts[change.transition] += 1
            shown = terminal_row(change.as_row())
            spool.write(
                f"{change.before or '-':<7}-> {change.after or '-':<7} {fit(resource_label(shown), 32):<32} "
                f"{fit(shown['ResourceGroup'], 24):<24} {shown['SubscriptionId']}\n        {shown['Reason']}\n"
            )
        out.write(f"Changes from run {run_a} to run {run_b}: {sum(counts.values())}\n")
        out.write("".join(f"  {k:<18}{v:>8}\n" for k, v in sorted(counts.items())))
        if counts:
            out.write("\n")
            copy(spool, out)
    return counts
