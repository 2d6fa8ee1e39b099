"""The security team's report: filter, summarise and render result rows, without any I/O of its own.

Every renderer takes an *iterable* of result rows (the entities of the results table, or plain
dicts in the tests) and a text stream, and makes one pass over the rows: CSV and JSON are written
row by row, and the table and HTML formats, whose summary comes *before* the list, write the list
to a spooled temporary file while they count, so 100,000 rows never sit in memory at once.

The reading of the tables lives in :mod:`shared.report_cli`; this module only decides what a row
means and how it looks.
"""

from __future__ import annotations

import contextlib
import csv
import html
import json
import math
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO, Any

from .exemptions import Exemption
from .keys import odata_quote, resource_key
from .models import Status
from .terminal import terminal_row, terminal_text

STATUSES: tuple[str, ...] = tuple(s.value for s in Status)
#: What the table and HTML formats list when no ``--status`` is given: what someone must act on.
ACTIONABLE: frozenset[str] = frozenset({Status.FAIL.value, Status.WARN.value, Status.ERROR.value})
#: Columns of ``--format csv`` and of each ``results`` item of ``--format json`` (a contract for tooling).
RESULT_COLUMNS: tuple[str, ...] = (
    "RunId",
    "Status",
    "NewFailure",
    "PreviousStatus",
    "FirstFailedAt",
    "SubscriptionId",
    "SubscriptionName",
    "ResourceGroup",
    "AppName",
    "Slot",
    "Owner",
    "Kind",
    "ResourceType",
    "ClientCertEnabled",
    "ClientCertMode",
    "ExclusionPaths",
    "Reason",
    "Remediation",
    "Exemption",
    "ExemptionRequest",
    "HttpsOnly",
    "PublicNetworkAccess",
    "Tags",
    "Location",
    "State",
    "AuditedAt",
    "ResourceId",
)
DIFF_COLUMNS: tuple[str, ...] = (
    "Change",
    "Before",
    "After",
    "SubscriptionId",
    "ResourceGroup",
    "AppName",
    "Slot",
    "Reason",
    "ResourceId",
)
COLOURS: dict[str, str] = {
    "PASS": "#2e7d32",
    "WARN": "#e08600",
    "FAIL": "#c62828",
    "EXEMPT": "#1565c0",
    "ERROR": "#6a1b9a",
}
MAX_REQUESTS_SHOWN = 500
SPOOL_BYTES = 2 * 1024 * 1024
#: The second trend chart: PASS usually dwarfs these, so they get a scale of their own.
ISSUE_STATUSES: tuple[str, ...] = ("FAIL", "WARN", "ERROR", "EXEMPT")
#: Order of the resource list: what is worst comes first.
LIST_ORDER: tuple[str, ...] = ("FAIL", "ERROR", "WARN", "EXEMPT", "PASS")
#: ``--group-by`` choices: what the summary table counts per row ("subscription" is the default).
GROUPINGS: tuple[str, ...] = ("subscription", "owner", "resource-group")
NO_OWNER = "(no owner)"
#: First characters that make a spreadsheet read a CSV cell as a formula (CSV injection).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


# -- selection ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RowFilter:
    """The report's ``--status/--new/--subscription/--resource-group/--kind/--resource`` selection.

    :meth:`odata` is the part the Table service can evaluate (exact, case-sensitive values);
    :meth:`matches` re-checks everything client-side, including what OData cannot do
    case-insensitively (resource group names and kinds come back in whatever casing ARM used).
    """

    statuses: frozenset[str] = frozenset()
    new_only: bool = False
    subscription: str = ""
    resource_group: str = ""
    kinds: tuple[str, ...] = ()
    resource: str = ""
    owner: str = ""  # case-insensitive part of the Owner column

    def matches(self, row: Mapping[str, Any]) -> bool:
        if self.statuses and str(row.get("Status") or "") not in self.statuses:
            return False
        if self.new_only and row.get("NewFailure") is not True:
            return False
        if self.subscription and str(row.get("SubscriptionId") or "").lower() != self.subscription.lower():
            return False
        if self.resource_group and str(row.get("ResourceGroup") or "").lower() != self.resource_group.lower():
            return False
        if self.kinds and not set(self.kinds) <= kind_tokens(row.get("Kind")):
            return False
        if self.owner and self.owner.casefold() not in str(row.get("Owner") or "").casefold():
            return False
        return not self.resource or resource_key(str(row.get("ResourceId") or "")) == resource_key(self.resource)

    def odata(self) -> str:
        """The server-side part of the filter, ``""`` when there is none."""
        parts = []
        if self.statuses:
            parts.append("(" + " or ".join(f"Status eq {odata_quote(s)}" for s in sorted(self.statuses)) + ")")
        if self.new_only:
            parts.append("NewFailure eq true")
        return " and ".join(parts)

    def describe(self) -> str:
        """The selection in words, printed above every report so nobody misreads a filtered one."""
        parts = []
        if self.statuses:
            parts.append("status " + "/".join(s for s in STATUSES if s in self.statuses))
        if self.new_only:
            parts.append("new failures only")
        if self.subscription:
            parts.append(f"subscription {self.subscription}")
        if self.resource_group:
            parts.append(f"resource group {self.resource_group}")
        if self.kinds:
            parts.append("kind " + ",".join(self.kinds))
        if self.resource:
            parts.append(f"resource {self.resource}")
        if self.owner:
            parts.append(f"owner containing '{self.owner}'")
        return ", ".join(parts) or "all resources"

    def as_dict(self) -> dict[str, Any]:
        return {
            "statuses": [s for s in STATUSES if s in self.statuses],
            "newOnly": self.new_only,
            "subscription": self.subscription,
            "resourceGroup": self.resource_group,
            "kinds": list(self.kinds),
            "resource": self.resource,
            "owner": self.owner,
        }


def kind_tokens(kind: Any) -> set[str]:
    """``"functionapp,linux"`` -> ``{"functionapp", "linux"}``: ``--kind linux`` matches every Linux app."""
    return {part.strip().lower() for part in str(kind or "").split(",") if part.strip()}


def listed_statuses(flt: RowFilter) -> frozenset[str]:
    """Statuses the table and HTML formats list: the filter's, every one for a single resource, else the actionable."""
    if flt.statuses:
        return flt.statuses
    return frozenset(STATUSES) if flt.resource else ACTIONABLE


# -- summary ----------------------------------------------------------------------------------------
def one_line(value: Any) -> str:
    """Text from the estate (an owner tag may hold anything) on one line of a terminal or a label."""
    return " ".join(text(value).split())


def short_id(subscription_id: str) -> str:
    """The first block of a subscription id: enough to tell two subscriptions of one name apart."""
    return subscription_id.split("-", 1)[0]


def subscription_label(row: Mapping[str, Any]) -> str:
    """``Prod (d7a7a3cc)``: the name people know, with a short id; the whole id when there is no name."""
    sub = str(row.get("SubscriptionId") or "")
    name = str(row.get("SubscriptionName") or "").strip()
    return f"{name} ({short_id(sub)})" if name and sub else (name or sub)


def group_of(row: Mapping[str, Any], group_by: str) -> tuple[str, str]:
    """``(key, label)`` of a row's group: keys compare case-insensitively, labels are for people."""
    if group_by == "owner":
        owner = one_line(row.get("Owner"))
        return owner.casefold(), owner or NO_OWNER
    sub = str(row.get("SubscriptionId") or "").lower()
    if group_by == "resource-group":
        rg = str(row.get("ResourceGroup") or "")
        return f"{sub}/{rg.casefold()}", f"{rg or '-'} in {subscription_label(row)}"
    return sub, subscription_label(row)


@dataclass
class Summary:
    """Counts of a selection, built while the rows stream past."""

    group_by: str = "subscription"
    by_status: Counter[str] = field(default_factory=Counter)
    by_subscription: dict[str, Counter[str]] = field(default_factory=dict)
    by_group: dict[str, Counter[str]] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)  # group key -> label (first seen)
    subscription_names: dict[str, str] = field(default_factory=dict)
    new_failures: int = 0
    requests: list[Mapping[str, Any]] = field(default_factory=list)
    requests_total: int = 0

    def add(self, row: Mapping[str, Any]) -> None:
        status = str(row.get("Status") or "")
        self.by_status[status] += 1
        sub = str(row.get("SubscriptionId") or "").lower()
        self.by_subscription.setdefault(sub, Counter())[status] += 1
        if row.get("SubscriptionName"):
            self.subscription_names.setdefault(sub, str(row.get("SubscriptionName")))
        key, label = group_of(row, self.group_by)
        self.by_group.setdefault(key, Counter())[status] += 1
        self.labels.setdefault(key, label)
        if row.get("NewFailure") is True:
            self.new_failures += 1
        if row.get("ExemptionRequest") and status in (Status.FAIL.value, Status.WARN.value):
            self.requests_total += 1
            if len(self.requests) < MAX_REQUESTS_SHOWN:
                self.requests.append({k: row.get(k) for k in RESULT_COLUMNS})

    @property
    def total(self) -> int:
        return sum(self.by_status.values())

    @property
    def has_fail(self) -> bool:
        """Whether the selection contains FAIL: the report's exit code for pipelines."""
        return self.by_status.get(Status.FAIL.value, 0) > 0

    def subscriptions_worst_first(self) -> list[tuple[str, Counter[str]]]:
        return sorted(self.by_subscription.items(), key=lambda kv: (-kv[1]["FAIL"], -kv[1]["WARN"], kv[0]))

    def groups_worst_first(self) -> list[tuple[str, Counter[str]]]:
        """``(label, counts)`` per group: most FAIL first, then most WARN, then most ERROR."""
        ranked = sorted(
            self.by_group.items(),
            key=lambda kv: (-kv[1]["FAIL"], -kv[1]["WARN"], -kv[1]["ERROR"], self.labels[kv[0]].casefold()),
        )
        return [(self.labels[key], counts) for key, counts in ranked]

    def as_dict(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "byStatus": {s: self.by_status.get(s, 0) for s in STATUSES},
            "newFailures": self.new_failures,
            "bySubscription": {
                sub: {s: counts.get(s, 0) for s in STATUSES} for sub, counts in self.subscriptions_worst_first()
            },
            "subscriptionNames": dict(sorted(self.subscription_names.items())),
            "groupBy": self.group_by,
            "byGroup": [
                {"group": label, **{s: counts.get(s, 0) for s in STATUSES}, "total": sum(counts.values())}
                for label, counts in self.groups_worst_first()
            ],
            "exemptionRequests": self.requests_total,
        }


@dataclass(frozen=True)
class ReportContext:
    """Everything a renderer shows besides the rows: which runs, what filter, which exemptions expire."""

    runs: tuple[Mapping[str, Any], ...]
    flt: RowFilter = field(default_factory=RowFilter)
    trend: tuple[Mapping[str, Any], ...] = ()
    expiring: tuple[Exemption, ...] = ()
    expiring_days: int = 14
    html_rows: int = 5000  # a page with 100,000 rows helps nobody; CSV has them all
    group_by: str = ""  # --group-by; "" is the default summary (per subscription)
    generated_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def multi_run(self) -> bool:
        return len(self.runs) != 1

    @property
    def listed(self) -> frozenset[str]:
        return listed_statuses(self.flt)

    def summary(self) -> Summary:
        """An empty summary that counts per the requested group."""
        return Summary(group_by=self.group_by or "subscription")

    def title(self) -> str:
        if not self.runs:
            return "no run in the selected period"
        if self.multi_run:
            return f"{len(self.runs)} runs from {run_started(self.runs[0])} to {run_started(self.runs[-1])}"
        run = self.runs[0]
        outcome = str(run.get("Outcome") or "")
        if outcome == "partial":
            unreadable = int(run.get("SubscriptionsFailed") or 0)
            outcome = f"partial: {unreadable} subscription(s) unreadable, see the ERROR rows"
        return f"run {run.get('RowKey')} ({outcome}, started {run_started(run)})"


# -- value formatting -----------------------------------------------------------------------------
def plain(value: Any) -> Any:
    """A JSON-ready value: datetimes as ISO 8601 UTC, everything else unchanged."""
    if isinstance(value, datetime):
        stamp = value if value.tzinfo else value.replace(tzinfo=UTC)
        return stamp.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return value


def text(value: Any) -> str:
    """A CSV/table cell: ``""`` for missing, ``true``/``false`` for booleans."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(plain(value))


def run_started(run: Mapping[str, Any]) -> str:
    started = run.get("StartedAt")
    if isinstance(started, datetime):
        return started.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return str(run.get("RowKey") or "")[:16]


def run_counts(run: Mapping[str, Any]) -> dict[str, int]:
    """The per-status totals a run recorded (``Count<STATUS>``) - the trend's data points."""
    return {s: int(run.get(f"Count{s}") or 0) for s in STATUSES}


def run_view(run: Mapping[str, Any]) -> dict[str, Any]:
    """A run record for JSON: stable names, no table metadata."""
    return {
        "runId": run.get("RowKey"),
        "outcome": run.get("Outcome"),
        "startedAt": plain(run.get("StartedAt")),
        "endedAt": plain(run.get("EndedAt")),
        "counts": run_counts(run),
        "newFailures": int(run.get("NewFailures") or 0),
    }


def exemption_view(exemption: Exemption) -> dict[str, Any]:
    return {
        "scope": exemption.scope,
        "reason": exemption.reason,
        "approver": exemption.approver,
        "createdAt": plain(exemption.created),
        "expiresAt": plain(exemption.expires),
        "recordedBy": exemption.recorded_by,
    }


def resource_label(row: Mapping[str, Any]) -> str:
    """``app``, ``app/slot``, or the scope id for an ERROR row that is not a single app."""
    app = str(row.get("AppName") or "")
    if not app:
        return str(row.get("ResourceId") or "")
    slot = str(row.get("Slot") or "")
    return f"{app}/{slot}" if slot else app


def _fit(value: str, width: int) -> str:
    return value if len(value) <= width else value[: width - 1] + "…"


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
    """Every selected row, one CSV line each, in :data:`RESULT_COLUMNS` order; with ``--group-by``,
    the summary table instead: one line per group, worst first (a pivot ready for a spreadsheet)."""
    if ctx is not None and ctx.group_by:
        return write_group_csv(rows, out, ctx)
    summary = Summary()
    writer = CsvWriter(out)
    writer.writerow(RESULT_COLUMNS)
    for row in rows:
        summary.add(row)
        writer.writerow([csv_cell(row.get(c)) for c in RESULT_COLUMNS])
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
    }
    out.write('{"report": ' + json.dumps(header) + ',\n"results": [')
    separator = "\n"
    for row in rows:
        summary.add(row)
        out.write(separator + json.dumps({c: plain(row.get(c)) for c in RESULT_COLUMNS}, ensure_ascii=False))
        separator = ",\n"
    out.write('\n],\n"summary": ' + json.dumps(summary.as_dict()) + "}\n")
    return summary


# -- terminal table -------------------------------------------------------------------------------
_LIST_HEAD = f"{'STATUS':<7} {'NEW':<3} {'APP':<32} {'RESOURCE GROUP':<24} {'SUBSCRIPTION':<28} {'OWNER':<24} MODE"


def _table_line(row: Mapping[str, Any], with_run: bool) -> str:
    new = "new" if row.get("NewFailure") is True else ""
    head = (
        f"{text(row.get('Status')):<7} {new:<3} {_fit(resource_label(row), 32):<32} "
        f"{_fit(text(row.get('ResourceGroup')), 24):<24} {_fit(subscription_label(row), 28):<28} "
        f"{_fit(one_line(row.get('Owner')), 24):<24} {text(row.get('ClientCertMode'))}"
    )
    lines = [f"{text(row.get('RunId'))}  {head}" if with_run else head]
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
        lines.append(f"  {_fit(label, width - 2):<{width}}{cells}{sum(counts.values()):>8}")
    return lines


def _runs_block(runs: Sequence[Mapping[str, Any]]) -> list[str]:
    lines = [f"  {'run':<24}{'outcome':<10}{'started':<22}" + "".join(f"{s:>8}" for s in STATUSES) + f"{'new':>6}"]
    for run in runs:
        counts = run_counts(run)
        lines.append(
            f"  {text(run.get('RowKey')):<24}{text(run.get('Outcome')):<10}{run_started(run):<22}"
            + "".join(f"{counts[s]:>8}" for s in STATUSES)
            + f"{int(run.get('NewFailures') or 0):>6}"
        )
    return lines


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


def _spool() -> tempfile.SpooledTemporaryFile[str]:
    return tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES, mode="w+", encoding="utf-8", newline="")


def _copy(spool: IO[str], out: IO[str]) -> None:
    spool.seek(0)
    while chunk := spool.read(64 * 1024):
        out.write(chunk)


class ListSpool:
    """Rendered list entries held per status on disk-backed spools, replayed worst status first.

    Rows arrive in table order (subscription, then resource); the reader wants every FAIL before
    the first WARN. One spool per status keeps that ordering without holding the rows in memory.
    With ``limit``, at most that many entries are replayed (worst first), and entries must be one
    line each; :attr:`count` still counts every entry.
    """

    def __init__(self, limit: int | None = None) -> None:
        self._stack = contextlib.ExitStack()
        self._spools: dict[str, IO[str]] = {}
        self._kept: Counter[str] = Counter()
        self.limit = limit
        self.count = 0

    def __enter__(self) -> ListSpool:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def write(self, status: str, rendered: str) -> None:
        self.count += 1
        if self.limit is not None and self._kept[status] >= self.limit:
            return  # never replayed: no need to keep it
        spool = self._spools.get(status)
        if spool is None:
            spool = self._spools[status] = self._stack.enter_context(_spool())
        spool.write(rendered)
        self._kept[status] += 1

    @property
    def shown(self) -> int:
        """How many entries :meth:`copy_to` writes."""
        kept = sum(self._kept.values())
        return kept if self.limit is None else min(kept, self.limit)

    def copy_to(self, out: IO[str]) -> None:
        room = self.shown
        for status in sorted(self._spools, key=_list_rank):
            spool = self._spools[status]
            if self._kept[status] <= room:
                _copy(spool, out)
                room -= self._kept[status]
                continue
            spool.seek(0)
            for _ in range(room):
                out.write(spool.readline())
            return


def _list_rank(status: str) -> int:
    return LIST_ORDER.index(status) if status in LIST_ORDER else len(LIST_ORDER)


def write_table(rows: Iterable[Mapping[str, Any]], out: IO[str], ctx: ReportContext) -> Summary:
    """Readable terminal report: summary by status and by group (subscription unless ``--group-by``
    says otherwise), then the rows to act on."""
    summary = ctx.summary()
    with ListSpool() as spool:
        for raw in rows:
            row = terminal_row(raw)  # every value from the estate, printed without control characters
            summary.add(row)
            if str(row.get("Status")) in ctx.listed:
                spool.write(str(row.get("Status")), _table_line(row, ctx.multi_run))
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
        requests = _requests_block(summary)
        head += ["", *requests] if requests else []
        which = "/".join(s for s in LIST_ORDER if s in ctx.listed)
        head += ["", f"{which} resources: {listed}" + ("" if listed else " - nothing to act on.")]
        out.write("\n".join(head) + "\n")
        if listed:
            out.write(("RUN" + " " * 23 if ctx.multi_run else "") + _LIST_HEAD + "\n")
            spool.copy_to(out)
    return summary


# -- HTML -----------------------------------------------------------------------------------------
def _nice_ceiling(value: int) -> int:
    """Smallest 1/2/5×10^k at or above ``value`` (at least 1): round numbers on the chart's axis."""
    if value <= 1:
        return 1
    exponent = int(10 ** math.floor(math.log10(value)))
    return next(step * exponent for step in (1, 2, 5, 10) if step * exponent >= value)


def trend_svg(
    runs: Sequence[Mapping[str, Any]],
    statuses: Sequence[str] = STATUSES,
    chart_id: str = "trend-chart",
    width: int = 960,
    height: int = 300,
) -> str:
    """An inline SVG line chart of the given statuses' counts per run (no script, no CDN).

    Partial runs are drawn with hollow markers: their counts miss the subscriptions they could not read.
    """
    if not runs:
        return '<p class="empty">No complete or partial run to chart yet.</p>'
    left, right, top, bottom = 64, 120, 16, 56
    plot_w, plot_h = width - left - right, height - top - bottom
    series = [run_counts(r) for r in runs]
    ymax = _nice_ceiling(max(c[s] for c in series for s in statuses))

    def x(i: int) -> float:
        return left + (plot_w * i / (len(runs) - 1) if len(runs) > 1 else plot_w / 2)

    def y(v: int) -> float:
        return top + plot_h * (1 - v / ymax)

    parts = [
        f'<svg id="{chart_id}" class="trend-chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img" aria-label="Status counts over the last {len(runs)} runs">',
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="#fafafa" stroke="#ccc"/>',
    ]
    intervals = next(n for n in (5, 4, 2, 1) if ymax % n == 0)  # whole-number gridlines
    for k in range(intervals + 1):
        value = ymax * k // intervals
        parts.append(
            f'<line x1="{left}" x2="{left + plot_w}" y1="{y(value):.1f}" y2="{y(value):.1f}" stroke="#e3e3e3"/>'
            f'<text x="{left - 8}" y="{y(value) + 4:.1f}" text-anchor="end" class="axis">{value}</text>'
        )
    step = max(1, math.ceil(len(runs) / 10))
    days = [run_started(r)[:10] for r in runs]
    same_day = len(set(days)) < len(days)  # several runs a day: label them by time as well
    for i, run in enumerate(runs):
        if i % step == 0 or i == len(runs) - 1:
            label = html.escape(run_started(run)[5:16] if same_day else days[i])
            parts.append(
                f'<text x="{x(i):.1f}" y="{top + plot_h + 18}" text-anchor="middle" class="axis">{label}</text>'
            )
    for row_index, status in enumerate(statuses):
        colour = COLOURS[status]
        points = " ".join(f"{x(i):.1f},{y(c[status]):.1f}" for i, c in enumerate(series))
        parts.append(
            f'<polyline class="series series-{status}" fill="none" stroke="{colour}" stroke-width="2.5" points="{points}"/>'
        )
        for i, (run, counts) in enumerate(zip(runs, series, strict=True)):
            hollow = run.get("Outcome") != "complete"
            tip = html.escape(f"{run.get('RowKey')} ({run.get('Outcome')}): {status} {counts[status]}")
            parts.append(
                f'<circle cx="{x(i):.1f}" cy="{y(counts[status]):.1f}" r="4" stroke="{colour}" stroke-width="2" '
                f'fill="{"#fff" if hollow else colour}"><title>{tip}</title></circle>'
            )
        ly = top + 14 + row_index * 22
        parts.append(
            f'<rect x="{left + plot_w + 16}" y="{ly - 10}" width="14" height="14" fill="{colour}"/>'
            f'<text x="{left + plot_w + 36}" y="{ly + 2}" class="legend">{status}</text>'
        )
    parts.append(
        f'<text x="{left + plot_w / 2:.1f}" y="{height - 12}" text-anchor="middle" class="axis">'
        "run (hollow marker: partial run)</text></svg>"
    )
    return "".join(parts)


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px;color:#1f1f1f;background:#fff}
h1{font-size:1.5rem;margin:0 0 4px}h2{font-size:1.15rem;margin:28px 0 8px}
.meta{color:#555;margin:0 0 16px}
.cards{display:flex;gap:12px;flex-wrap:wrap}
.card{border-radius:8px;padding:10px 16px;min-width:96px;color:#fff}
.card b{display:block;font-size:1.6rem}
table{border-collapse:collapse;font-size:.9rem;width:100%}
th,td{border-bottom:1px solid #e0e0e0;padding:5px 8px;text-align:left;vertical-align:top}
th{background:#f3f3f3;position:sticky;top:0}
td.num,th.num{text-align:right}
.badge{display:inline-block;border-radius:4px;padding:1px 6px;color:#fff;font-weight:600;font-size:.8rem}
.new{color:#c62828;font-weight:700}
.fix{color:#444;font-family:ui-monospace,Consolas,monospace;font-size:.8rem}
.axis{font-size:11px;fill:#555}.legend{font-size:12px;fill:#222}
.empty{color:#555}figure{margin:0 0 12px}figcaption{color:#555;font-size:.85rem}
"""


def _e(value: Any) -> str:
    return html.escape(text(value))


def _badge(status: str) -> str:
    return f'<span class="badge" style="background:{COLOURS.get(status, "#555")}">{_e(status)}</span>'


def _html_row(row: Mapping[str, Any], with_run: bool) -> str:
    status = text(row.get("Status"))
    cells = [f"<td>{_e(row.get('RunId'))}</td>"] if with_run else []
    cells += [
        f"<td>{_badge(status)}</td>",
        f'<td class="new">{"new" if row.get("NewFailure") is True else ""}</td>',
        f'<td title="{_e(row.get("ResourceId"))}">{_e(resource_label(row))}</td>',
        f"<td>{_e(row.get('ResourceGroup'))}</td>",
        f'<td class="sub" title="{_e(row.get("SubscriptionId"))}">{_e(subscription_label(row))}</td>',
        f'<td class="owner">{_e(row.get("Owner"))}</td>',
        f"<td>{_e(row.get('ClientCertMode'))}</td>",
        f"<td>{_e(row.get('Reason'))}"
        + (f'<div class="fix">{_e(row.get("Remediation"))}</div>' if row.get("Remediation") else "")
        + "</td>",
    ]
    line = "".join(cells).replace("\r", " ").replace("\n", " ")  # one line per row: ListSpool replays by line
    return f'<tr class="status-{html.escape(status)}">{line}</tr>\n'


def _html_summary(summary: Summary) -> list[str]:
    cards = "".join(
        f'<div class="card" id="count-{s}" style="background:{COLOURS[s]}"><b>{summary.by_status.get(s, 0)}</b>{s}</div>'
        for s in STATUSES
    )
    groups = "".join(
        f"<tr><td>{_e(label)}</td>"
        + "".join(f'<td class="num">{c.get(s, 0)}</td>' for s in STATUSES)
        + f'<td class="num">{sum(c.values())}</td></tr>'
        for label, c in summary.groups_worst_first()
    )
    head = "".join(f'<th class="num">{s}</th>' for s in STATUSES) + '<th class="num">Total</th>'
    name = summary.group_by.replace("-", " ")
    return [
        f'<div class="cards">{cards}<div class="card" style="background:#333"><b>{summary.new_failures}</b>'
        "new failures</div></div>",
        f'<h2>By {name}</h2><table id="by-{summary.group_by}" class="groups"><tr><th>{name.capitalize()}</th>'
        f"{head}</tr>{groups}</table>",
    ]


def _html_exemptions(ctx: ReportContext, summary: Summary) -> list[str]:
    out = [f"<h2>Exemptions expiring within {ctx.expiring_days} days</h2>"]
    if ctx.expiring:
        rows = "".join(
            f"<tr><td>{e.expires.astimezone(UTC):%Y-%m-%d %H:%M} UTC</td><td>{_e(e.scope)}</td>"
            f"<td>{_e(e.reason)}</td><td>{_e(e.approver)}</td></tr>"
            for e in ctx.expiring
        )
        out.append(
            '<table id="expiring"><tr><th>Expires</th><th>Scope</th><th>Reason</th><th>Approver</th></tr>'
            f"{rows}</table>"
        )
    else:
        out.append('<p class="empty">None.</p>')
    if summary.requests_total:
        rows = "".join(
            f"<tr><td>{_badge(text(r.get('Status')))}</td><td>{_e(r.get('ResourceId'))}</td>"
            f"<td>{_e(r.get('ExemptionRequest'))}</td></tr>"
            for r in summary.requests
        )
        out.append(
            f"<h2>Exemption requests from tags ({summary.requests_total})</h2>"
            "<p>Requests only: nothing is exempt until the security team runs <code>clientcert-audit exempt add</code>.</p>"
            f'<table id="requests"><tr><th>Status</th><th>Resource</th><th>Request</th></tr>{rows}</table>'
        )
    return out


def _html_trend_table(runs: Sequence[Mapping[str, Any]]) -> str:
    head = "".join(f'<th class="num">{s}</th>' for s in STATUSES)
    body = "".join(
        f"<tr><td>{_e(r.get('RowKey'))}</td><td>{_e(r.get('Outcome'))}</td><td>{_e(run_started(r))}</td>"
        + "".join(f'<td class="num">{v}</td>' for v in run_counts(r).values())
        + f'<td class="num">{int(r.get("NewFailures") or 0)}</td></tr>'
        for r in reversed(runs)
    )
    return (
        "<details><summary>Counts per run</summary>"
        f'<table id="trend-table"><tr><th>Run</th><th>Outcome</th><th>Started</th>{head}'
        f'<th class="num">New</th></tr>{body}</table></details>'
    )


def write_html(rows: Iterable[Mapping[str, Any]], out: IO[str], ctx: ReportContext) -> Summary:
    """A self-contained page: summary, trend chart (inline SVG), expiring exemptions, rows to act on.

    A Content-Security-Policy forbids every external load and every script, so the page renders
    the same offline, and a hostile app name or tag cannot run anything in an analyst's browser.
    """
    summary = ctx.summary()
    with ListSpool(ctx.html_rows) as spool:
        for row in rows:
            summary.add(row)
            if str(row.get("Status")) in ctx.listed:
                spool.write(str(row.get("Status")), _html_row(row, ctx.multi_run))
        listed, shown = spool.count, spool.shown
        which = "/".join(s for s in LIST_ORDER if s in ctx.listed)
        columns = ("<th>Run</th>" if ctx.multi_run else "") + (
            "<th>Status</th><th>New</th><th>App</th><th>Resource group</th><th>Subscription</th>"
            "<th>Owner</th><th>Mode</th><th>Reason and fix</th>"
        )
        page = [
            '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">"
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>Client certificate audit - {_e(ctx.title())}</title><style>{_CSS}</style></head><body>",
            f'<h1>Client certificate audit</h1><p class="meta">{_e(ctx.title())} · selection: {_e(ctx.flt.describe())}'
            f" · generated {_e(ctx.generated_at.astimezone(UTC).strftime('%Y-%m-%d %H:%M UTC'))}</p>",
            *_html_summary(summary),
            f"<h2>Trend over the last {len(ctx.trend)} runs</h2>",
            f'<figure id="trend">{trend_svg(ctx.trend)}<figcaption>Every status</figcaption></figure>',
            '<figure id="trend-issues">'
            + trend_svg(ctx.trend, ISSUE_STATUSES, "trend-chart-issues")
            + "<figcaption>Without PASS, on a scale of its own: what needs attention</figcaption></figure>"
            if ctx.trend
            else "",
            _html_trend_table(ctx.trend) if ctx.trend else "",
            *_html_exemptions(ctx, summary),
            f"<h2>{which} resources ({listed})</h2>"
            + (
                f'<p class="meta" id="truncated">The first {shown} of {listed}, worst first; every one of them: '
                "<code>--format csv</code>, or a larger <code>--html-rows</code>.</p>"
                if shown < listed
                else ""
            )
            + f'<table id="findings"><thead><tr>{columns}</tr></thead><tbody>\n',
        ]
        out.write("\n".join(page))
        spool.copy_to(out)
    out.write("</tbody></table>" + ("" if listed else '<p class="empty">Nothing to act on.</p>') + "</body></html>\n")
    return summary


# -- diff -----------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Change:
    """A resource whose status differs between two runs (``""``: absent from that run)."""

    before: str
    after: str
    resource_id: str
    subscription_id: str
    resource_group: str
    app_name: str
    slot: str
    reason: str

    @property
    def kind(self) -> str:
        if not self.before:
            return "appeared"
        return "disappeared" if not self.after else "changed"

    def as_row(self) -> dict[str, str]:
        return {
            "Change": self.kind,
            "Before": self.before,
            "After": self.after,
            "SubscriptionId": self.subscription_id,
            "ResourceGroup": self.resource_group,
            "AppName": self.app_name,
            "Slot": self.slot,
            "Reason": self.reason,
            "ResourceId": self.resource_id,
        }


_KEPT = ("ResourceId", "SubscriptionId", "ResourceGroup", "AppName", "Slot")


def _row_identity(row: Mapping[str, Any]) -> tuple[str, str]:
    return str(row.get("SubscriptionId") or "").lower(), str(row.get("RowKey") or resource_key(str(row["ResourceId"])))


def _change(before: str, after: str, row: Mapping[str, Any]) -> Change:
    return Change(
        before=before,
        after=after,
        resource_id=str(row.get("ResourceId") or ""),
        subscription_id=str(row.get("SubscriptionId") or ""),
        resource_group=str(row.get("ResourceGroup") or ""),
        app_name=str(row.get("AppName") or ""),
        slot=str(row.get("Slot") or ""),
        reason=str(row.get("Reason") or ""),
    )


def diff_rows(older: Iterable[Mapping[str, Any]], newer: Iterable[Mapping[str, Any]]) -> Iterator[Change]:
    """Changes from ``older`` to ``newer``: status changes first (in ``newer``'s order), then disappearances.

    Only the older run is held in memory, and only what a disappearance needs to be reported.
    """
    before: dict[tuple[str, str], tuple[str, ...]] = {}  # a tuple per row: 100,000 of them stay small
    for row in older:
        before[_row_identity(row)] = (str(row.get("Status") or ""), *(str(row.get(k) or "") for k in _KEPT))
    for row in newer:
        previous = before.pop(_row_identity(row), None)
        status = str(row.get("Status") or "")
        if previous is None or previous[0] != status:
            yield _change(previous[0] if previous else "", status, row)
    for status, *kept in sorted(before.values(), key=lambda item: item[1].lower()):
        gone = dict(zip(_KEPT, kept, strict=True))
        yield _change(status, "", {**gone, "Reason": "No longer listed (deleted, moved, or its scope was unreadable)."})


def write_diff(changes: Iterable[Change], out: IO[str], fmt: str, run_a: str, run_b: str) -> Counter[str]:
    """Render a diff as table, CSV or JSON (streamed); returns counts per ``BEFORE->AFTER``."""
    counts: Counter[str] = Counter()
    if fmt == "csv":
        writer = CsvWriter(out)
        writer.writerow(DIFF_COLUMNS)
        for change in changes:
            counts[f"{change.before or '-'}->{change.after or '-'}"] += 1
            writer.writerow([csv_cell(v) for v in change.as_row().values()])
        return counts
    if fmt == "json":
        out.write(f'{{"from": {json.dumps(run_a)}, "to": {json.dumps(run_b)}, "changes": [')
        separator = "\n"
        for change in changes:
            counts[f"{change.before or '-'}->{change.after or '-'}"] += 1
            out.write(separator + json.dumps(change.as_row(), ensure_ascii=False))
            separator = ",\n"
        out.write('\n], "summary": ' + json.dumps(dict(sorted(counts.items()))) + "}\n")
        return counts
    with _spool() as spool:
        for change in changes:
            counts[f"{change.before or '-'}->{change.after or '-'}"] += 1
            shown = terminal_row(change.as_row())
            spool.write(
                f"{change.before or '-':<7}-> {change.after or '-':<7} {_fit(resource_label(shown), 32):<32} "
                f"{_fit(shown['ResourceGroup'], 24):<24} {shown['SubscriptionId']}\n        {shown['Reason']}\n"
            )
        out.write(f"Changes from run {run_a} to run {run_b}: {sum(counts.values())}\n")
        out.write("".join(f"  {k:<18}{v:>8}\n" for k, v in sorted(counts.items())))
        if counts:
            out.write("\n")
            _copy(spool, out)
    return counts
