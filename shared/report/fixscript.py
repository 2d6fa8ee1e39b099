"""``report --format script``: a bash script of the fixes for the selected FAIL and WARN rows.

The tool only writes the script; it never runs it. The security team reviews it and hands each block
to the app's owner, because requiring client certificates breaks every client that has none.

Each command is the ``az`` command the audit recorded in the row's ``Remediation`` (built by
:mod:`shared.core.evaluate`, so new rules bring their own commands), split and joined again with
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

from ..core.fixcommand import COMMAND_GROUPS, ParsedFix, fix_command, parse_fix_command
from ..core.keys import resource_key
from ..core.models import SiteRecord, Status
from ..core.terminal import one_line
from .spool import ListSpool
from .summary import ReportContext, Summary
from .values import resource_label, subscription_label, text

#: The statuses a fix script covers: EXEMPT is left out on purpose, PASS and ERROR have nothing to fix.
SCRIPT_STATUSES: frozenset[str] = frozenset({Status.FAIL.value, Status.WARN.value})
PORTAL = "https://portal.azure.com/#"
#: The command of a remediation: the first ``az <group> `` after our own text (no estate text precedes it).
_AZ = re.compile(r"(?:^|\s)(az\s+(?:" + "|".join(COMMAND_GROUPS) + r")\s.*)$", re.S)
_TARGET = {"--name": "AppName", "--resource-group": "ResourceGroup", "--slot": "Slot"}
#: The result columns a fix command is written from.
_RECORD = ("ResourceId", "SubscriptionId", "ResourceGroup", "AppName", "Slot", "Kind")


def comment(value: Any) -> str:
    """Text safe inside a bash comment: one line, no control characters (:func:`~shared.core.terminal.one_line`)."""
    return one_line(text(value))


def portal_link(resource_id: str, tenant: str = "") -> str:
    """The app's (or slot's) Configuration blade, where the incoming client certificate setting is:
    ``https://portal.azure.com/#@<tenant>/resource<id>/configuration``, which opens in the resource's
    own directory (without a tenant, in the viewer's default one)."""
    directory = f"@{quote(tenant, safe='-.')}/" if tenant else ""
    return f"{PORTAL}{directory}resource{quote(resource_id, safe='/-_.()~')}/configuration"


def command_of(remediation: str) -> tuple[str, str]:
    """``(text, command)``: a remediation's words for people and its ``az`` command (``""`` if none)."""
    found = _AZ.search(remediation)
    if not found:
        return remediation, ""
    return remediation[: found.start(1)].rstrip(), found.group(1)


def _targets_row(parsed: ParsedFix, row: Mapping[str, Any]) -> bool:
    """Whether the command names exactly this row's resource (and its subscription, when it names one)."""
    if parsed.group == "resource":
        named = parsed.options.get("--ids", "")
        return bool(named) and resource_key(named) == resource_key(str(row.get("ResourceId") or ""))
    for option, column in _TARGET.items():
        if parsed.options.get(option, "") != str(row.get(column) or ""):
            return False
    subscription = parsed.options.get("--subscription")
    return subscription is None or subscription.lower() == str(row.get("SubscriptionId") or "").lower()


def az_command(row: Mapping[str, Any]) -> list[str] | None:
    """The fix command of a row as arguments, or ``None`` when there is none or it does not name
    exactly this row's resource or sets anything but the client certificate properties.

    The command is written again for the row's ``Kind`` (:func:`~shared.core.fixcommand.fix_command`), with
    its ``--subscription``: a row recorded by an older version (``az webapp update --name x`` for every
    kind) gets the command that works today.
    """
    found = _AZ.search(str(row.get("Remediation") or ""))
    if not found:
        return None
    try:
        parsed = parse_fix_command(shlex.split(found.group(1)))
    except ValueError:
        return None
    if parsed is None or not _targets_row(parsed, row):
        return None
    value = {column: str(row.get(column) or "") for column in _RECORD}
    target = SiteRecord(
        value["ResourceId"],
        value["SubscriptionId"],
        value["ResourceGroup"],
        value["AppName"],
        slot=value["Slot"],
        kind=value["Kind"],
    )
    if not target.resource_id or (target.kind and not target.app_name):
        return None
    return fix_command(target, parsed.properties)


def _block(row: Mapping[str, Any], tenant: str = "") -> tuple[str, bool]:
    """A resource's block (comments, then its command) and whether it has a command."""
    status = text(row.get("Status"))
    owner = comment(row.get("Owner")) or "(no owner tag)"
    lines = [
        f"# [{status}] {comment(resource_label(row))} - resource group {comment(row.get('ResourceGroup'))}, "
        f"subscription {comment(subscription_label(row))}",
        f"# Owner: {owner}",
        f"# Reason: {comment(row.get('Reason'))}",
        f"# Portal: {portal_link(str(row.get('ResourceId') or ''), tenant)}",
    ]
    command = az_command(row)
    if command is None:
        lines.append("# No az command recorded for this resource: fix it in the portal (see above).")
    else:
        lines.append(shlex.join(command))
    return "\n".join(lines) + "\n\n", command is not None


#: Without ``set -e``: a command that fails (a resource deleted since the run, a missing role) is
#: counted and named on stderr by the ERR trap, and the script goes on with the next block.
_PROLOGUE = """set -uo pipefail
failed=0
trap 'code=$?; failed=$((failed + 1)); printf "FAILED (exit %s): %s\\n\\n" "$code" "$BASH_COMMAND" >&2' ERR

"""


def _epilogue(commands: int) -> str:
    return (
        "# The end: every block above has run; a failed one is named above with FAILED.\n"
        'if [ "$failed" -ne 0 ]; then\n'
        f'  printf "%s of {commands} fix commands failed; the others ran.\\n" "$failed" >&2\n'
        "  exit 1\n"
        "fi\n"
        f'echo "All {commands} fix commands ran."\n'
    )


def write_script(rows: Iterable[Mapping[str, Any]], out: IO[str], ctx: ReportContext) -> Summary:
    """The script: a header that says what it is and what to agree first, then one block per
    FAIL (first) and WARN resource, then a last line that says how many commands failed (the script
    runs every block whatever happens to one). Returns the summary of every selected row (for the exit code)."""
    summary = Summary()
    commands = 0
    with ListSpool() as spool:
        for row in rows:
            summary.add(row)
            status = str(row.get("Status") or "")
            if status in SCRIPT_STATUSES:
                block, has_command = _block(row, ctx.tenant_of(row))
                commands += has_command
                spool.write(status, block)
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
            "# once the owner confirms that every caller presents a certificate. Run whole, the script runs\n"
            "# every block even when one fails, and ends by saying how many failed (exit status 1 then).\n" + _PROLOGUE
        )
        if not count:
            out.write("# Nothing to fix in this selection.\n")
        spool.copy_to(out)
        out.write(_epilogue(commands))
    return summary
