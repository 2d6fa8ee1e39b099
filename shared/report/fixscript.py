"""``report --format script``: a bash script of the fixes for the selected FAIL and WARN rows.

The tool only writes the script; it never runs it. The security team reviews it and hands each block
to the app's owner, because requiring client certificates breaks every client that has none.

Each command is the ``az`` command the audit recorded in the row's ``Remediation`` (built by
:mod:`shared.evaluate`, so new rules bring their own commands), split and joined again with
:mod:`shlex`: every argument is quoted for bash whatever the row holds, a command whose target is not
the row's own resource is left out, and text from the estate (reasons, owner tags) only ever lands
in comments with its line breaks removed, so no tag value can add a line of shell.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable, Mapping
from typing import IO, Any
from urllib.parse import quote

from ..models import Status
from .spool import ListSpool
from .summary import ReportContext, Summary
from .values import resource_label, subscription_label, text

#: The statuses a fix script covers: EXEMPT is left out on purpose, PASS and ERROR have nothing to fix.
SCRIPT_STATUSES: frozenset[str] = frozenset({Status.FAIL.value, Status.WARN.value})
PORTAL = "https://portal.azure.com/#resource"
_AZ = re.compile(r"(?:^|\s)(az\s+webapp\s.*)$", re.S)
_CONTROL = re.compile(r"[\x00-\x1f\x7f\x85\u2028\u2029]+")
_TARGET = {"--name": "AppName", "--resource-group": "ResourceGroup", "--slot": "Slot"}


def comment(value: Any) -> str:
    """Text safe inside a bash comment: one line, no control characters."""
    return _CONTROL.sub(" ", text(value)).strip()


def portal_link(resource_id: str) -> str:
    """The app's (or slot's) Configuration blade, where the incoming client certificate setting is."""
    return f"{PORTAL}{quote(resource_id, safe='/-_.()~')}/configuration"


def _option(tokens: list[str], name: str) -> str:
    return tokens[tokens.index(name) + 1] if name in tokens[:-1] else ""


def az_command(row: Mapping[str, Any]) -> list[str] | None:
    """The ``az webapp`` command of a row's remediation as arguments, or ``None`` when there is none
    or it does not target exactly this row's app, group and slot. ``--subscription`` is added to a
    command of an older row that lacks it, so the command never acts on the shell's default one."""
    found = _AZ.search(str(row.get("Remediation") or ""))
    if not found:
        return None
    try:
        tokens = shlex.split(found.group(1))
    except ValueError:
        return None
    if tokens[:2] != ["az", "webapp"]:
        return None
    for option, column in _TARGET.items():
        if _option(tokens, option) != str(row.get(column) or ""):
            return None
    subscription = str(row.get("SubscriptionId") or "")
    if "--subscription" not in tokens and subscription:
        tokens += ["--subscription", subscription]
    elif _option(tokens, "--subscription").lower() != subscription.lower():
        return None
    return tokens


def _block(row: Mapping[str, Any]) -> str:
    status = text(row.get("Status"))
    owner = comment(row.get("Owner")) or "(no owner tag)"
    lines = [
        f"# [{status}] {comment(resource_label(row))} - resource group {comment(row.get('ResourceGroup'))}, "
        f"subscription {comment(subscription_label(row))}",
        f"# Owner: {owner}",
        f"# Reason: {comment(row.get('Reason'))}",
        f"# Portal: {portal_link(str(row.get('ResourceId') or ''))}",
    ]
    command = az_command(row)
    if command is None:
        lines.append("# No az command recorded for this resource: fix it in the portal (see above).")
    else:
        lines.append(shlex.join(command))
    return "\n".join(lines) + "\n\n"


def write_script(rows: Iterable[Mapping[str, Any]], out: IO[str], ctx: ReportContext) -> Summary:
    """The script: a header that says what it is and what to agree first, then one block per
    FAIL (first) and WARN resource. Returns the summary of every selected row (for the exit code)."""
    summary = Summary()
    with ListSpool() as spool:
        for row in rows:
            summary.add(row)
            status = str(row.get("Status") or "")
            if status in SCRIPT_STATUSES:
                spool.write(status, _block(row))
        count = spool.count
        out.write(
            "#!/usr/bin/env bash\n"
            f"# Client certificate fixes - {comment(ctx.title())}\n"
            f"# Selection: {comment(ctx.flt.describe())}; {count} FAIL/WARN resources (exempted ones are left out).\n"
            f"# Written {ctx.generated_at:%Y-%m-%d %H:%M} UTC by `clientcert-audit report --format script`;"
            " the audit never runs it.\n"
            "#\n"
            "# Requiring client certificates breaks every client that does not send one. Each command below\n"
            "# is a change to agree with the app's owner first: review it, hand it over, and run it only\n"
            "# once the owner confirms that every caller presents a certificate.\n"
            "set -euo pipefail\n\n"
        )
        if not count:
            out.write("# Nothing to fix in this selection.\n")
        spool.copy_to(out)
    return summary
