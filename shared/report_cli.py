"""``clientcert-audit report`` and ``clientcert-audit exempt``: the security team's commands.

Both read the same settings as the audit (``AUDIT_TABLE_SERVICE_URI`` with the signed-in identity,
or ``AUDIT_TABLE_CONNECTION_STRING`` locally). This module reads the tables and picks the runs;
:mod:`shared.report` renders, :mod:`shared.exemptions` validates and stores exemptions.

Exit codes of ``report``: 0 the selection has no FAIL, 1 it has (usable as a pipeline gate),
4 invalid arguments, 5 nothing to report (no run yet, or an unknown run id).
Exit codes of ``exempt``: 0 done, 1 nothing to remove, 4 refused (the message says which rule).
Both exit 6 when the tables cannot be read or written (not signed in, no role, unreachable).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import IO, Any

from azure.core.exceptions import AzureError, ClientAuthenticationError, ResourceNotFoundError

from . import fixscript, layout, ocsf, report
from .config import load_settings
from .errors import ExemptionError, NoDataError, one_line
from .exemptions import (
    EXPIRING_SOON_DAYS,
    Exemption,
    add_exemption,
    current_user,
    expiring_soon,
    list_exemptions,
    new_exemption,
    parse_expiry,
    remove_exemption,
    validate_scope,
)
from .identity import build_credential
from .keys import odata_quote, resource_key
from .store import TableStore
from .terminal import terminal_text
from .when import parse_when

EXIT_OK, EXIT_FAIL_FOUND, EXIT_INVALID, EXIT_NO_DATA, EXIT_STORE = 0, 1, 4, 5, 6
DEFAULT_HTML = "clientcert-audit-report.html"
TREND_OUTCOMES = ("complete", "partial")


# -- reading the tables ---------------------------------------------------------------------------
class ReportSource:
    """Reads run records and result rows; result rows stream page by page (1,000 per page)."""

    def __init__(self, store: TableStore) -> None:
        self.store = store

    def runs(self) -> list[Mapping[str, Any]]:
        """Every run record, oldest first (one per night: small)."""
        try:
            return list(self.store.runs_list())
        except ResourceNotFoundError:
            return []

    def results(self, run_id: str, flt: report.RowFilter) -> Iterator[Mapping[str, Any]]:
        """The rows of one run that match ``flt``; the narrowest query that can answer it.

        A run is the ``PartitionKey`` range of its partitions (``<RunId>_`` up to the character after
        ``_``, see :func:`layout.run_range`). Rows of many subscriptions share those partitions, so
        one subscription is that range narrowed to the subscription's ``RowKey`` range, and one
        resource is that range with ``RowKey eq`` its key: neither partition can be derived from
        the id any more, so there is no point read.
        """
        low, high = layout.run_range(run_id)
        parts = [f"PartitionKey ge {odata_quote(low)}", f"PartitionKey lt {odata_quote(high)}"]
        if flt.resource:
            parts.append(f"RowKey eq {odata_quote(resource_key(flt.resource))}")
        elif flt.subscription:
            first, after = layout.subscription_row_range(flt.subscription)
            parts += [f"RowKey ge {odata_quote(first)}", f"RowKey lt {odata_quote(after)}"]
        if server := flt.odata():
            parts.append(server)
        try:
            for row in self.store.results.query_entities(" and ".join(parts), results_per_page=1000):
                if flt.matches(row) and _in_subscription(row, flt.subscription):
                    yield row
        except ResourceNotFoundError:
            return


def _in_subscription(row: Mapping[str, Any], subscription: str) -> bool:
    """Exactly ``subscription``'s rows (its RowKey range also admits a longer id with the same start)."""
    return not subscription or layout.in_subscription(str(row.get("RowKey") or ""), subscription)


# -- choosing runs (pure) -------------------------------------------------------------------------
def _no_run_message(table: str) -> str:
    return (
        f"No audit run is recorded in table {table} yet. Run `clientcert-audit run` "
        "(or `make demo` locally), or wait for the nightly timer, then report again."
    )


def latest_finished(runs: Sequence[Mapping[str, Any]], table: str) -> Mapping[str, Any]:
    """The newest run that finished writing its rows (Outcome ``complete`` or ``partial``).

    A partial run is included on purpose: a tenant with one subscription the audit may not read
    has *only* partial runs, and its readable subscriptions still need reporting. The report's
    header says "partial" and the unreadable scopes are ERROR rows. A run that failed or is still
    running is never picked silently.
    """
    finished = [run for run in runs if run.get("Outcome") in TREND_OUTCOMES]
    if finished:
        return finished[-1]
    if not runs:
        raise NoDataError(_no_run_message(table))
    last = runs[-1]
    raise NoDataError(
        f"No finished run yet; the latest is {last.get('RowKey')} ({last.get('Outcome')}). "
        f"Report on it anyway with --run {last.get('RowKey')}."
    )


def find_run(runs: Sequence[Mapping[str, Any]], run_id: str, table: str) -> Mapping[str, Any]:
    for run in runs:
        if str(run.get("RowKey")) == run_id:
            return run
    if not runs:
        raise NoDataError(_no_run_message(table))
    recent = ", ".join(str(r.get("RowKey")) for r in runs[-5:])
    raise NoDataError(f"No run {run_id!r} in table {table}. Most recent runs: {recent}")


def runs_since(runs: Sequence[Mapping[str, Any]], since: datetime) -> list[Mapping[str, Any]]:
    """Complete and partial runs started at or after ``since`` (failed ones hold no trustworthy rows)."""
    return [
        r
        for r in runs
        if r.get("Outcome") in TREND_OUTCOMES and isinstance(r.get("StartedAt"), datetime) and r["StartedAt"] >= since
    ]


def trend_runs(runs: Sequence[Mapping[str, Any]], last: Mapping[str, Any], count: int) -> list[Mapping[str, Any]]:
    """Up to ``count`` complete/partial runs ending with ``last``: the chart's x axis."""
    upto = str(last.get("RowKey"))
    eligible = [r for r in runs if r.get("Outcome") in TREND_OUTCOMES and str(r.get("RowKey")) <= upto]
    return eligible[-count:] if count > 0 else []


def parse_since(value: str, now: datetime) -> datetime:
    """``--since``: ``YYYY-MM-DD`` (00:00 UTC), an ISO date-time, or ``7d``/``12h``/``2w`` ago."""
    try:
        return parse_when(value, now, direction=-1)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a date (2026-03-01), a date-time (2026-03-01T02:00Z) or an age (7d, 12h, 2w)"
        ) from None


# -- argument types -------------------------------------------------------------------------------
def _statuses(value: str) -> list[str]:
    out = [part.strip().upper() for part in value.split(",") if part.strip()]
    unknown = [s for s in out if s not in report.STATUSES]
    if unknown or not out:
        raise argparse.ArgumentTypeError(f"status must be among {', '.join(report.STATUSES)}; got {value!r}")
    return out


def _subscription_id(value: str) -> str:
    if not re.fullmatch(r"[0-9a-fA-F-]{36}", value.strip()):
        raise argparse.ArgumentTypeError(f"{value!r} is not a subscription id")
    return value.strip().lower()


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


# -- parsers --------------------------------------------------------------------------------------
def register(subparsers: Any) -> None:
    """Add ``report`` and ``exempt`` to the ``clientcert-audit`` command line."""
    _register_report(subparsers)
    _register_exempt(subparsers)


def _register_report(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "report",
        help="report on the latest finished run (or another run, a period, or a diff of two runs)",
        description="Summary by status and subscription, then the failing and warning resources with "
        "their reason and fix. Exits 1 when the selection contains FAIL, 5 when there is no run yet.",
    )
    which = p.add_mutually_exclusive_group()
    which.add_argument("--run", metavar="RUNID", help="report on this run instead of the latest finished one")
    which.add_argument(
        "--since",
        metavar="DATE",
        type=lambda v: parse_since(v, datetime.now(UTC)),
        help="history: every complete or partial run since DATE (2026-03-01, 2026-03-01T02:00Z, 7d)",
    )
    which.add_argument("--diff", nargs=2, metavar=("RUN_A", "RUN_B"), help="what changed from RUN_A to RUN_B")
    p.add_argument(
        "--status", type=_statuses, action="extend", help="only these statuses (repeatable or comma-separated)"
    )
    p.add_argument("--new", action="store_true", help="only new failures (FAIL that was not FAIL before)")
    p.add_argument("--subscription", type=_subscription_id, help="only this subscription id")
    p.add_argument("--resource-group", help="only this resource group (case-insensitive)")
    p.add_argument("--kind", help="only apps whose kind has all these comma-separated parts (e.g. functionapp,linux)")
    p.add_argument("--resource", type=_resource_id, help="only this site or slot id (with --since: its history)")
    p.add_argument("--owner", help="only resources whose Owner contains this text (case-insensitive)")
    p.add_argument(
        "--group-by",
        choices=report.GROUPINGS,
        help="the summary table per subscription (default), owner or resource group, worst first "
        "(with --format csv: that table instead of the rows)",
    )
    p.add_argument(
        "--format",
        choices=("table", "csv", "json", "html", "script", "ocsf"),
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
    p.set_defaults(func=_guarded(cmd_report))


def _register_exempt(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "exempt",
        help="manage exemptions (security team only; every exemption expires)",
        description="Exemptions live in the exemptions table, never in resource tags. An exempted FAIL or "
        "WARN reports EXEMPT until the expiry, then its real status again (a FAIL then alerts as new).",
    )
    sub = p.add_subparsers(dest="exempt_command", required=True)
    add = sub.add_parser("add", help="exempt a site, slot, resource group or subscription until a date")
    add.add_argument("--scope", required=True, help="/subscriptions/<id>[/resourceGroups/<rg>[/providers/...]]")
    add.add_argument("--reason", required=True, help="why requiring client certificates does not apply")
    add.add_argument("--approver", required=True, help="who on the security team accepted the risk")
    add.add_argument(
        "--expires", required=True, help="2026-06-30, 2026-06-30T18:00Z or 30d/12h/2w (at most 365 days away)"
    )
    add.set_defaults(func=_guarded(cmd_exempt_add))
    lst = sub.add_parser("list", help="list exemptions (valid ones; --all adds expired)")
    lst.add_argument("--all", action="store_true", help="include expired exemptions")
    lst.add_argument("--format", choices=("table", "csv", "json"), default="table")
    lst.set_defaults(func=_guarded(cmd_exempt_list))
    rm = sub.add_parser("remove", help="remove the exemption of exactly this scope")
    rm.add_argument("scope")
    rm.set_defaults(func=_guarded(cmd_exempt_remove))


# -- commands -------------------------------------------------------------------------------------
def _guarded(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Turn a store error into one actionable line and exit 6, instead of an SDK traceback."""

    @functools.wraps(command)
    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except AzureError as exc:
            print(f"Cannot use the results tables: {store_error_hint(exc)}", file=sys.stderr)
            return EXIT_STORE

    return run


def store_error_hint(exc: AzureError) -> str:
    """What went wrong with the tables, and what the analyst can do about it."""
    if isinstance(exc, ClientAuthenticationError) and getattr(exc, "status_code", None) is None:
        return f"no signed-in identity ({type(exc).__name__}); sign in with `az login` first."
    status = getattr(exc, "status_code", None)
    if status in (401, 403) or isinstance(exc, ClientAuthenticationError):
        return (
            f"access denied ({status} {getattr(exc, 'error_code', '') or ''}). Reading needs the "
            "Storage Table Data Reader role on the results account; `exempt add/remove` also needs "
            "Storage Table Data Contributor on the exemptions table (see README.md, 'For the security team')."
        )
    return one_line(exc, 300 + len(type(exc).__name__) + 2)


def open_store() -> TableStore:
    """The results store with the audit's own settings and identity."""
    settings = load_settings()
    credential = None if settings.table_connection_string else build_credential(settings.client_id)
    return TableStore(settings, credential)


@contextlib.contextmanager
def _output(path: str | None) -> Iterator[IO[str]]:
    if not path or path == "-":
        yield sys.stdout
        sys.stdout.flush()
        return
    with open(path, "w", encoding="utf-8", newline="") as handle:  # noqa: PTH123 - a plain text stream
        yield handle


def _row_filter(args: argparse.Namespace) -> report.RowFilter:
    kinds = tuple(sorted(report.kind_tokens(args.kind))) if args.kind else ()
    return report.RowFilter(
        statuses=frozenset(args.status or ()),
        new_only=args.new,
        subscription=args.subscription or "",
        resource_group=(args.resource_group or "").strip(),
        kinds=kinds,
        resource=args.resource or "",
        owner=(getattr(args, "owner", None) or "").strip(),
    )


def cmd_report(args: argparse.Namespace) -> int:
    if args.diff and args.format not in ("table", "csv", "json"):
        print(f"--diff writes table, csv or json; not {args.format}", file=sys.stderr)
        return EXIT_INVALID
    if args.since is not None and args.format == "script":
        print("--format script is written from one run (the latest, or --run); not with --since", file=sys.stderr)
        return EXIT_INVALID
    flt = _row_filter(args)
    store = open_store()
    try:
        source = ReportSource(store)
        runs = source.runs()
        table = store.runs.table_name
        if args.diff:
            return _report_diff(source, runs, table, flt, args)
        return _report_runs(source, store, runs, table, flt, args)
    except NoDataError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_NO_DATA
    except BrokenPipeError:  # `report | head`: the reader has what it wanted
        _silence_stdout()
        return EXIT_OK
    finally:
        store.close()


def _report_runs(
    source: ReportSource,
    store: TableStore,
    runs: Sequence[Mapping[str, Any]],
    table: str,
    flt: report.RowFilter,
    args: argparse.Namespace,
) -> int:
    now = datetime.now(UTC)
    if args.since is not None:
        selected = runs_since(runs, args.since)
        if not runs:
            raise NoDataError(_no_run_message(table))
        if not selected:
            raise NoDataError(f"No complete or partial run started since {args.since.isoformat()}.")
        if args.format in ("table", "html") and not flt.statuses and not flt.resource:
            flt = replace(flt, statuses=report.ACTIONABLE)  # one query per run lists only what to act on
        last = selected[-1]
    else:
        last = find_run(runs, args.run, table) if args.run else latest_finished(runs, table)
        selected = [last]
    if args.format == "script" and not flt.statuses:
        flt = replace(flt, statuses=fixscript.SCRIPT_STATUSES)  # read only the rows with a fix
    ctx = report.ReportContext(
        runs=tuple(selected),
        flt=flt,
        trend=tuple(trend_runs(runs, last, args.trend)),
        expiring=tuple(_expiring(store, now, args.expiring_days)),
        expiring_days=args.expiring_days,
        html_rows=args.html_rows,
        generated_at=now,
        group_by=args.group_by or "",
    )
    rows = _chain(source.results(str(run.get("RowKey")), flt) for run in selected)
    path = args.output or (DEFAULT_HTML if args.format == "html" else None)
    with _output(path) as out:
        summary = _render(args.format, rows, out, ctx)
    if path and path != "-":
        counts = ", ".join(f"{s} {summary.by_status.get(s, 0)}" for s in report.STATUSES)
        print(f"Wrote {path}: {ctx.title()}; {counts}")
    return EXIT_FAIL_FOUND if summary.has_fail else EXIT_OK


def _render(fmt: str, rows: Iterable[Mapping[str, Any]], out: IO[str], ctx: report.ReportContext) -> report.Summary:
    if fmt == "csv":
        return report.write_csv(rows, out, ctx)
    if fmt == "script":
        return fixscript.write_script(rows, out, ctx)
    if fmt == "ocsf":
        return ocsf.write_ocsf(rows, out, ctx)
    if fmt == "json":
        return report.write_json(rows, out, ctx)
    if fmt == "html":
        return report.write_html(rows, out, ctx)
    return report.write_table(rows, out, ctx)


def _report_diff(
    source: ReportSource,
    runs: Sequence[Mapping[str, Any]],
    table: str,
    flt: report.RowFilter,
    args: argparse.Namespace,
) -> int:
    run_a, run_b = (str(find_run(runs, run_id, table).get("RowKey")) for run_id in args.diff)
    scope = replace(flt, statuses=frozenset(), new_only=False)
    changes = report.diff_rows(source.results(run_a, scope), source.results(run_b, scope))
    selected = (c for c in changes if _change_selected(c, flt))
    with _output(args.output) as out:
        counts = report.write_diff(selected, out, args.format, run_a, run_b)
    into_fail = any(key.endswith("->FAIL") for key in counts)
    return EXIT_FAIL_FOUND if into_fail else EXIT_OK


def _change_selected(change: report.Change, flt: report.RowFilter) -> bool:
    """``--status`` keeps changes from or to those statuses; ``--new`` keeps changes into FAIL."""
    if flt.statuses and change.before not in flt.statuses and change.after not in flt.statuses:
        return False
    return not flt.new_only or (change.after == "FAIL" and change.before != "FAIL")


def _expiring(store: TableStore, now: datetime, days: int) -> list[Exemption]:
    return expiring_soon(list_exemptions(store, now), now, timedelta(days=days))


def _chain(iterables: Iterable[Iterable[Mapping[str, Any]]]) -> Iterator[Mapping[str, Any]]:
    for rows in iterables:
        yield from rows


def _silence_stdout() -> None:
    """After a closed pipe, point stdout at /dev/null so the interpreter's final flush is quiet."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def cmd_exempt_add(args: argparse.Namespace) -> int:
    now = datetime.now(UTC)
    try:
        exemption = new_exemption(
            args.scope, args.reason, args.approver, parse_expiry(args.expires, now), now, recorded_by=current_user()
        )
    except ExemptionError as exc:
        print(f"Exemption refused: {exc}", file=sys.stderr)
        return EXIT_INVALID
    store = open_store()
    try:
        replaced = add_exemption(store, exemption)
    finally:
        store.close()
    if replaced:
        print(
            f"Replaced the exemption of {terminal_text(replaced.scope)} (was until {replaced.expires:%Y-%m-%d %H:%M} UTC)."
        )
    print(
        f"Exempted {exemption.scope} until {exemption.expires:%Y-%m-%d %H:%M} UTC "
        f"({exemption.reason}; approved by {exemption.approver}). It takes effect on the next run."
    )
    return EXIT_OK


def cmd_exempt_list(args: argparse.Namespace) -> int:
    now = datetime.now(UTC)
    store = open_store()
    try:
        found = list_exemptions(store, now, include_expired=args.all)
    finally:
        store.close()
    views = [{**report.exemption_view(e), "state": _state(e, now)} for e in found]
    if args.format == "json":
        print(json.dumps(views, indent=2))
    elif args.format == "csv":
        columns = ("scope", "state", "expiresAt", "reason", "approver", "createdAt", "recordedBy")
        report.write_rows_csv(views, sys.stdout, columns)
    elif not views:
        print("No exemptions" + ("." if args.all else " in force (--all shows expired ones)."))
    else:
        for view, e in zip(views, found, strict=True):  # table text is printed without control characters
            print(f"{view['state']:<14} until {e.expires:%Y-%m-%d %H:%M} UTC  {terminal_text(e.scope)}")
            reason, approver = terminal_text(e.reason), terminal_text(e.approver)
            print(f"{'':14} {reason} (approved by {approver}, added {e.created:%Y-%m-%d})")
    return EXIT_OK


def _state(exemption: Exemption, now: datetime) -> str:
    if exemption.expires <= now:
        return "expired"
    if exemption.expires <= now + timedelta(days=EXPIRING_SOON_DAYS):
        return "expiring-soon"
    return "active" if exemption.active(now) else "not-yet-valid"


def cmd_exempt_remove(args: argparse.Namespace) -> int:
    store = open_store()
    try:
        removed = remove_exemption(store, args.scope)
    finally:
        store.close()
    if removed is None:
        print(f"No exemption for exactly {args.scope} (scopes are not matched as prefixes here).", file=sys.stderr)
        return EXIT_FAIL_FOUND
    print(f"Removed the exemption of {terminal_text(removed.scope)}; from the next run it reports its real status.")
    return EXIT_OK
