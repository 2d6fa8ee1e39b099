"""``clientcert-audit report``: the latest finished run, another run, a period, or a diff of two.

This module turns the options into a selection and picks the runs; :mod:`shared.report` reads the
rows and renders them. Exit codes (:class:`~.common.ExitCode`): ``OK`` when the selection has no
FAIL, ``FAIL_FOUND`` when it has, ``INVALID``, ``NO_DATA``, ``STORE``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

from azure.core.exceptions import ResourceNotFoundError

from .. import report
from ..azure.exemptions import EXPIRING_SOON_DAYS, expiring_soon, in_force, load_exemption_rows, validate_scope
from ..azure.store import TableStore
from ..core.errors import ExemptionError, NoDataError
from ..core.ids import subscription_id
from ..core.terminal import terminal_text
from ..core.when import parse_when
from ..report import ReportContext, ReportSource, RowFilter, Summary
from ..run.ledger import BLIND
from .common import (
    ExitCode,
    UnknownSubscription,
    guarded,
    open_store,
    output,
    resolve_subscription,
    silence_stdout,
    subscription_arg,
)

#: Where ``--format html`` writes without ``-o``: a folder of its own, which .gitignore ignores and the
#: deployment package (.funcignore, an allow-list) never contains, even when run from the checkout.
DEFAULT_HTML = "clientcert-audit-reports/clientcert-audit-report.html"
FORMATS = ("table", "csv", "json", "html", "script", "ocsf")
DIFF_FORMATS = ("table", "csv", "json")
HELP = "report on the latest finished run (or another run, a period, or a diff of two runs)"
DESCRIPTION = (
    "Summary by status and subscription, then the failing and warning resources with their reason and fix. "
    f"Exits {ExitCode.FAIL_FOUND:d} when the selection contains FAIL, {ExitCode.NO_DATA:d} when there is no run yet."
)


# -- argument types -------------------------------------------------------------------------------
def parse_since(value: str, now: datetime) -> datetime:
    """``--since``: ``YYYY-MM-DD`` (00:00 UTC), an ISO date-time, or ``7d``/``12h``/``2w`` ago."""
    try:
        return parse_when(value, now, direction=-1)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a date (2026-03-01), a date-time (2026-03-01T02:00Z) or an age (7d, 12h, 2w)"
        ) from None


def _statuses(value: str) -> list[str]:
    out = [part.strip().upper() for part in value.split(",") if part.strip()]
    unknown = [s for s in out if s not in report.STATUSES]
    if unknown or not out:
        raise argparse.ArgumentTypeError(f"status must be among {', '.join(report.STATUSES)}; got {value!r}")
    return out


def _resource_id(value: str) -> str:
    try:
        return validate_scope(value)
    except ExemptionError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = -1
    if number < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {value!r}")
    return number


# -- parser ---------------------------------------------------------------------------------------
def register(subparsers: Any) -> None:
    """Add ``report`` to the ``clientcert-audit`` command line."""
    p = subparsers.add_parser("report", help=HELP, description=DESCRIPTION)
    _add_run_options(p)
    _add_selection_options(p)
    _add_output_options(p)
    p.set_defaults(func=guarded(cmd_report))


def _add_run_options(p: argparse.ArgumentParser) -> None:
    which = p.add_mutually_exclusive_group()
    which.add_argument("--run", metavar="RUNID", help="report on this run instead of the latest finished one")
    which.add_argument(
        "--since",
        metavar="DATE",
        type=lambda v: parse_since(v, datetime.now(UTC)),
        help="history: every complete or partial run since DATE (2026-03-01, 2026-03-01T02:00Z, 7d)",
    )
    which.add_argument("--diff", nargs=2, metavar=("RUN_A", "RUN_B"), help="what changed from RUN_A to RUN_B")


def _add_selection_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--status", type=_statuses, action="extend", help="only these statuses (repeatable or comma-separated)"
    )
    p.add_argument("--new", action="store_true", help="only new failures (FAIL that was not FAIL before)")
    p.add_argument(
        "--subscription",
        type=subscription_arg,
        help="only this subscription: its id, its name, or the start of either (e.g. Prod, d7a7a3cc)",
    )
    p.add_argument("--resource-group", help="only this resource group (case-insensitive)")
    p.add_argument("--kind", help="only apps whose kind has all these comma-separated parts (e.g. functionapp,linux)")
    p.add_argument("--resource", type=_resource_id, help="only this site or slot id (with --since: its history)")
    p.add_argument("--owner", help="only resources whose Owner contains this text (case-insensitive)")


def _add_output_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--group-by",
        choices=report.GROUPINGS,
        help="the summary table per subscription (default), owner or resource group, worst first "
        "(with --format csv: that table instead of the rows)",
    )
    p.add_argument(
        "--format",
        choices=FORMATS,
        default="table",
        help="script: a bash script of the fixes for FAIL/WARN (never run by the tool); "
        "ocsf: OCSF Detection Findings as JSON lines, for a SIEM",
    )
    p.add_argument(
        "-o", "--output", help=f"file to write ('-' for stdout); default stdout, or {DEFAULT_HTML} for --format html"
    )
    p.add_argument("--trend", type=_positive, default=30, metavar="N", help="runs in the HTML trend chart (30)")
    p.add_argument(
        "--html-rows",
        type=_positive,
        default=5000,
        metavar="N",
        help="resources listed in the HTML page, worst first (5000)",
    )
    p.add_argument(
        "--expiring-days",
        type=_positive,
        default=EXPIRING_SOON_DAYS,
        metavar="N",
        help=f"list exemptions expiring within N days ({EXPIRING_SOON_DAYS})",
    )


# -- the command ----------------------------------------------------------------------------------
def _row_filter(args: argparse.Namespace) -> RowFilter:
    kinds = tuple(sorted(report.kind_tokens(args.kind))) if args.kind else ()
    return RowFilter(
        statuses=frozenset(args.status or ()),
        new_only=args.new,
        subscription=args.subscription or "",
        resource_group=(args.resource_group or "").strip(),
        kinds=kinds,
        resource=args.resource or "",
        owner=(getattr(args, "owner", None) or "").strip(),
    )


def _refusal(args: argparse.Namespace) -> str:
    """Why these options do not go together, or ``""``."""
    if args.diff and args.format not in DIFF_FORMATS:
        return f"--diff writes table, csv or json; not {args.format}"
    if args.since is not None and args.format == "script":
        return "--format script is written from one run (the latest, or --run); not with --since"
    return ""


def _known(store: TableStore) -> dict[str, dict[str, Any]]:
    """The subscription registry (names, tenants), or nothing before the first run made the table."""
    try:
        return store.known_subscriptions()
    except ResourceNotFoundError:
        return {}


def _subscription(value: str | None, known: Mapping[str, Mapping[str, Any]]) -> str:
    """``--subscription`` as an id: a name or the start of one is looked up among the subscriptions
    the audit has read."""
    if not value:
        return ""
    try:
        return subscription_id(value)
    except ValueError:
        return resolve_subscription(value, known)


def cmd_report(args: argparse.Namespace) -> int:
    if refusal := _refusal(args):
        print(refusal, file=sys.stderr)
        return ExitCode.INVALID
    store = open_store()
    try:
        known = _known(store)
        args.subscription = _subscription(args.subscription, known)
        flt = _row_filter(args)
        source = ReportSource(store)
        runs = source.runs()
        table = store.runs.table_name
        if args.diff:
            return _report_diff(source, runs, table, flt, args)
        tenants = {key: str(row.get("TenantId") or "") for key, row in known.items() if row.get("TenantId")}
        return _report_runs(source, store, runs, table, flt, args, tenants)
    except UnknownSubscription as exc:
        print(terminal_text(exc), file=sys.stderr)
        return ExitCode.INVALID
    except NoDataError as exc:
        print(terminal_text(exc), file=sys.stderr)
        return ExitCode.NO_DATA
    except BrokenPipeError:  # `report | head`: the reader has what it wanted
        silence_stdout()
        return ExitCode.OK
    finally:
        store.close()


def _selected_runs(runs: Sequence[Mapping[str, Any]], table: str, args: argparse.Namespace) -> list[Mapping[str, Any]]:
    """The runs to report on, oldest first: every one since ``--since``, or the one run asked for."""
    if args.since is None:
        return [report.find_run(runs, args.run, table) if args.run else report.latest_finished(runs, table)]
    selected = report.runs_since(runs, args.since)
    if not runs:
        raise NoDataError(report.no_run_message(table))
    if not selected:
        raise NoDataError(f"No complete or partial run started since {args.since.isoformat()}.")
    return selected


def _narrowed(flt: RowFilter, args: argparse.Namespace) -> RowFilter:
    """Read only the rows the format shows when no ``--status`` says otherwise."""
    if args.since is not None and args.format in ("table", "html") and not flt.statuses and not flt.resource:
        return replace(flt, statuses=report.ACTIONABLE)  # one query per run lists only what to act on
    if args.format == "script" and not flt.statuses:
        return replace(flt, statuses=report.SCRIPT_STATUSES)  # read only the rows with a fix
    return flt


def _report_runs(
    source: ReportSource,
    store: TableStore,
    runs: Sequence[Mapping[str, Any]],
    table: str,
    flt: RowFilter,
    args: argparse.Namespace,
    tenants: Mapping[str, str],
) -> int:
    now = datetime.now(UTC)
    selected = _selected_runs(runs, table, args)
    if flt.new_only:
        for run in selected:
            if run.get("Baseline") is True:
                print(
                    f"Run {terminal_text(run.get('RowKey'))} is the baseline (the audit's first run): nothing "
                    "counts as new on a baseline, so --new selects nothing from it.",
                    file=sys.stderr,
                )
    flt = _narrowed(flt, args)
    exemptions = load_exemption_rows(store)
    ctx = ReportContext(
        runs=tuple(selected),
        flt=flt,
        trend=tuple(report.trend_runs(runs, selected[-1], args.trend)),
        expiring=tuple(expiring_soon(in_force(exemptions.valid, now), now, timedelta(days=args.expiring_days))),
        expiring_days=args.expiring_days,
        broken=tuple(exemptions.broken),
        html_rows=args.html_rows,
        generated_at=now,
        group_by=args.group_by or "",
        tenants=tenants,
    )
    rows = _chain(source.results(str(run.get("RowKey")), flt) for run in selected)
    path = args.output or (DEFAULT_HTML if args.format == "html" else None)
    if path == DEFAULT_HTML:
        Path(DEFAULT_HTML).parent.mkdir(exist_ok=True)
    with output(path) as out:
        summary = _render(args.format, rows, out, ctx)
    if path and path != "-":
        counts = ", ".join(f"{s} {summary.by_status.get(s, 0)}" for s in report.STATUSES)
        print(f"Wrote {terminal_text(path)}: {terminal_text(ctx.title())}; {counts}")
    if summary.has_fail:
        return ExitCode.FAIL_FOUND
    # No FAIL in a run that read nothing is not a pass.
    return ExitCode.BLIND if any(run.get("Outcome") == BLIND for run in selected) else ExitCode.OK


_Renderer = Callable[[Iterable[Mapping[str, Any]], IO[str], ReportContext], Summary]
_RENDERERS: dict[str, _Renderer] = {
    "csv": report.write_csv,
    "script": report.write_script,
    "ocsf": report.write_ocsf,
    "json": report.write_json,
    "html": report.write_html,
    "table": report.write_table,
}


def _render(fmt: str, rows: Iterable[Mapping[str, Any]], out: IO[str], ctx: ReportContext) -> Summary:
    return _RENDERERS.get(fmt, report.write_table)(rows, out, ctx)


def _report_diff(
    source: ReportSource,
    runs: Sequence[Mapping[str, Any]],
    table: str,
    flt: RowFilter,
    args: argparse.Namespace,
) -> int:
    run_a, run_b = (str(report.find_run(runs, run_id, table).get("RowKey")) for run_id in args.diff)
    scope = replace(flt, statuses=frozenset(), new_only=False)
    changes = report.diff_rows(source.results(run_a, scope), source.results(run_b, scope))
    selected = (c for c in changes if report.change_selected(c, flt))
    with output(args.output) as out:
        counts = report.write_diff(selected, out, args.format, run_a, run_b)
    into_fail = any(key.endswith("->FAIL") for key in counts)
    return ExitCode.FAIL_FOUND if into_fail else ExitCode.OK


def _chain(iterables: Iterable[Iterable[Mapping[str, Any]]]) -> Iterator[Mapping[str, Any]]:
    for rows in iterables:
        yield from rows
