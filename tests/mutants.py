"""Mutation check of the guards issue 21 gave teeth: ``python -m tests.mutants [name-part ...]``.

Each mutant removes or weakens one guard in the product (CSV formula neutralising, HTML quote
escaping, the fix script's quoting, the source scan of shared/report and shared/commands, the
terminal helper (C1, bidi, surrogates, table rows, log lines), the fix's exclusion-path rules, the
per-kind command (in the unit tests and in the script the real Azure CLI runs), the list order, the
page's wrapping), runs the tests meant to catch it, and restores the file (also on Ctrl-C). Every
mutant must be KILLED: a test that survives its guard's removal cannot fail, which is a defect. Not collected by pytest (it edits the source tree); run it by
hand after changing one of these guards or its tests.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[1]


class Mutant(NamedTuple):
    name: str
    path: str
    old: str
    new: str
    tests: tuple[str, ...]


#: The fix script run whole by azure-cli 2.91 against the emulated ARM: the per-kind command's proof.
REAL_CLI = (
    "tests/integration/test_fix_script_azcli.py::test_the_fix_script_run_by_the_real_cli_fixes_exactly_what_it_names"
)

MUTANTS = (
    Mutant(
        "CSV neutralising cut to '='",
        "shared/report/text.py",
        '_FORMULA_START = ("=", "+", "-", "@", "\\t", "\\r")',
        '_FORMULA_START = ("=",)',
        ("tests/unit/test_report.py::test_csv_defuses_every_formula_start",),
    ),
    Mutant(
        "HTML escaping without quotes",
        "shared/report/html.py",
        "    return html.escape(text(value))",
        "    return html.escape(text(value), quote=False)",
        ("tests/unit/test_report.py::test_html_values_in_attributes_cannot_break_out",),
    ),
    Mutant(
        "fix script without shlex.join",
        "shared/report/fixscript.py",
        "        lines.append(shlex.join(command))",
        '        lines.append(" ".join(command))',
        ("tests/unit/test_remediation.py::test_the_fix_script_hands_az_exactly_the_recorded_arguments",),
    ),
    Mutant(
        "subprocess imported in shared/report",
        "shared/report/fixscript.py",
        "import re\n",
        "import re\nimport subprocess  # noqa: F401\n",
        ("tests/unit/test_security.py::test_no_shell_outs_or_dynamic_code",),
    ),
    Mutant(
        "subprocess imported in shared/commands",
        "shared/commands/run.py",
        "import json\n",
        "import json\nimport subprocess  # noqa: F401\n",
        ("tests/unit/test_security.py::test_no_shell_outs_or_dynamic_code",),
    ),
    Mutant(
        "verify=False in shared/commands",
        "shared/commands/common.py",
        "    return TableStore(settings, credential)",
        "    return TableStore(settings, credential)  # verify=False",
        ("tests/unit/test_security.py::test_tls_verification_is_never_disabled",),
    ),
    Mutant(
        "verify=False in shared/report",
        "shared/report/source.py",
        "from __future__ import annotations\n",
        "from __future__ import annotations  # verify=False\n",
        ("tests/unit/test_security.py::test_tls_verification_is_never_disabled",),
    ),
    Mutant(
        "fix-script comments without the terminal helper",
        "shared/report/fixscript.py",
        "    return one_line(text(value))",
        '    return " ".join(text(value).split())',
        (
            "tests/integration/test_report_security.py::"
            "test_script_keeps_estate_text_in_comments_and_commands_on_their_resource",
        ),
    ),
    Mutant(
        "the terminal helper lets C1 controls through",
        "shared/core/terminal.py",
        '_HIDDEN = re.compile("[\\x00-\\x1f\\x7f-\\x9f',
        '_HIDDEN = re.compile("[\\x00-\\x1f\\x7f',
        ("tests/unit/test_terminal.py",),
    ),
    Mutant(
        "the terminal helper lets bidi overrides through",
        "shared/core/terminal.py",
        "\\u061c\\u200e\\u200f\\u202a-\\u202e\\u2066-\\u2069",
        "",
        ("tests/unit/test_terminal.py",),
    ),
    Mutant(
        "the terminal helper lets lone surrogates through",
        "shared/core/terminal.py",
        "\\ud800-\\udfff]",
        "]",
        ("tests/unit/test_terminal.py",),
    ),
    Mutant(
        "table rows skip the helper",
        "shared/core/terminal.py",
        '    if "".join(v for v in row.values() if isinstance(v, str)).isprintable():',
        "    if True:",
        ("tests/unit/test_terminal.py", "tests/integration/test_terminal_integration.py"),
    ),
    Mutant(
        "run prints ARM's text raw",
        "shared/commands/run.py",
        '        print(f"Audit failed: {terminal_text(exc)}", file=sys.stderr)',
        '        print(f"Audit failed: {exc}", file=sys.stderr)',
        ("tests/integration/test_terminal_integration.py::test_run_output_and_its_log_lines_never_steer_the_terminal",),
    ),
    Mutant(
        "log lines raw",
        "shared/core/terminal.py",
        "        return terminal_text(super().formatMessage(record))",
        "        return super().formatMessage(record)",
        ("tests/integration/test_terminal_integration.py::test_run_output_and_its_log_lines_never_steer_the_terminal",),
    ),
    Mutant(
        "the fix keeps '/' when the mode is not Required",
        "shared/core/evaluate.py",
        "    if every_path:\n",
        "    if every_path and mode == CertMode.REQUIRED.value:\n",
        ("tests/unit/test_evaluate.py::test_a_mode_fix_takes_slash_out_too",),
    ),
    Mutant(
        "the fix drops the other exclusion paths",
        "shared/core/evaluate.py",
        "    kept = [path for path in split_exclusion_paths(raw) if path != EVERY_PATH]",
        "    kept: list[str] = []",
        ("tests/unit/test_evaluate.py::test_exclusion_path_slash_exempts_everything_and_fails",),
    ),
    Mutant(
        "az webapp update for every kind",
        "shared/core/fixcommand.py",
        '    return "functionapp" if "function" in kind else "webapp"',
        '    return "webapp"',
        ("tests/unit/test_remediation.py",),
    ),
    Mutant(
        "a group passed as a separate argument",
        "shared/core/fixcommand.py",
        '    args = ["az", group, "update", f"--resource-group={target.resource_group}", f"--name={target.app_name}"]',
        '    args = ["az", group, "update", "--resource-group", target.resource_group, f"--name={target.app_name}"]',
        ("tests/unit/test_remediation.py",),
    ),
    Mutant(
        "az webapp update for every kind, run by the real CLI",
        "shared/core/fixcommand.py",
        '    return "functionapp" if "function" in kind else "webapp"',
        '    return "webapp"',
        (REAL_CLI,),
    ),
    Mutant(
        "a group passed as a separate argument, run by the real CLI",
        "shared/core/fixcommand.py",
        '    args = ["az", group, "update", f"--resource-group={target.resource_group}", f"--name={target.app_name}"]',
        '    args = ["az", group, "update", "--resource-group", target.resource_group, f"--name={target.app_name}"]',
        (REAL_CLI,),
    ),
    Mutant(
        "a slot named by --ids, run by the real CLI",
        "shared/core/fixcommand.py",
        '    if target.slot:\n        args.append(f"--slot={target.slot}")',
        '    if target.slot:\n        args = ["az", group, "update", f"--ids={target.resource_id}"]',
        (REAL_CLI,),
    ),
    Mutant(
        "a site without kind sent to az webapp update, run by the real CLI",
        "shared/core/fixcommand.py",
        '    if not kind:\n        return "resource"\n',
        '    if not kind:\n        return "webapp"\n',
        (REAL_CLI,),
    ),
    Mutant(
        "new failures not first in the HTML list",
        "shared/report/html.py",
        '    if status == "FAIL" and row.get("NewFailure") is True:\n        return 0\n',
        "",
        (
            "tests/unit/test_report.py::test_html_lists_new_failures_then_fail_by_worst_subscription_then_error_then_warn",
        ),
    ),
    Mutant(
        "the HTML table does not wrap",
        "shared/report/html.py",
        ";overflow-wrap:break-word}\ntable.findings td,td.id{overflow-wrap:anywhere}",
        "}",
        (
            "tests/integration/test_report_html.py::test_html_report_puts_new_failures_first_links_every_resource_and_fits_900_px",
        ),
    ),
    Mutant(
        "the HTML tables cut short words",
        "shared/report/html.py",
        "vertical-align:top;overflow-wrap:break-word}",
        "vertical-align:top;overflow-wrap:anywhere}",
        (
            "tests/integration/test_report_html.py::test_html_report_puts_new_failures_first_links_every_resource_and_fits_900_px",
        ),
    ),
)


def run(mutant: Mutant) -> bool:
    """Apply, test, restore; True when a test failed (the mutant is killed)."""
    path = ROOT / mutant.path
    original = path.read_text(encoding="utf-8")
    if original.count(mutant.old) != 1:
        raise SystemExit(f"{mutant.name}: the guard's text is not in {mutant.path} exactly once; update this list")
    try:
        path.write_text(original.replace(mutant.old, mutant.new), encoding="utf-8")
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *mutant.tests],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
    finally:
        path.write_text(original, encoding="utf-8")
    last = (done.stdout.strip().splitlines() or [""])[-1]
    print(f"{'KILLED  ' if done.returncode else 'SURVIVED'} {mutant.name}: {last}", flush=True)
    return done.returncode != 0


def main(only: list[str]) -> int:
    chosen = [m for m in MUTANTS if not only or any(o in m.name for o in only)]
    survived = [m.name for m in chosen if not run(m)]
    if survived:
        print(f"{len(survived)} mutant(s) survived: {', '.join(survived)}")
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
