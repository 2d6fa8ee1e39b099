"""Every command of docs/security-team.md, as written, against the demo (``./demo``).

The commands come from the page's ``bash`` blocks (:mod:`tests.doc_commands`), so the page and this
test cannot drift apart: ``clientcert-audit`` is a one-line shim for ``./demo``, and each line runs in
bash exactly as printed, pipes and quotes included, once its placeholders are filled with the demo's
ids. Blocks marked ``# In Azure`` need a real tenant (their ``az`` commands are checked in
``test_docs_az.py``); the install commands are run by ``test_analyst_install.py``.

Along the way the demo itself is checked as a newcomer meets it: ``./demo serve`` keeps Azurite up
and the ``az storage entity query`` line it prints works with the real Azure CLI; the second night
differs from the first; a change is caught by the change poll within the command; arguments reach
the command untouched (``--resource-group 'rg(legacy)'``) and exit codes come back untouched.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.demo_tenant import LEGACY, PROD, SANDBOX
from tests.doc_commands import REPO, bash_blocks

DOC = REPO / "docs" / "security-team.md"
DEMO = REPO / "demo"
AZ = REPO / ".venv-azcli" / "bin" / "az"
#: Install lines of the page: not run here, but by test_analyst_install.py (checked to be these).
INSTALL_LINES = {
    "pipx install .",
    "python3 -m venv ~/.local/clientcert-audit && ~/.local/clientcert-audit/bin/pip install .",
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Demo:
    """A demo in its own directory, driven through ``./demo`` and the ``clientcert-audit`` shim."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.work = root / "work"
        self.work.mkdir()
        shims = root / "bin"
        shims.mkdir()
        shim = shims / "clientcert-audit"
        shim.write_text(f'#!/bin/sh\nexec {shlex.quote(str(DEMO))} "$@"\n')
        shim.chmod(0o755)
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("AUDIT_", "DEMO_"))},
            "DEMO_DIR": str(root / "demo"),
            "DEMO_TABLE_PORT": str(_free_port()),
            "PATH": f"{shims}:{os.environ['PATH']}",
        }

    def shell(self, line: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", "-o", "pipefail", "-c", line],
            cwd=self.work,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def demo(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.shell(shlex.join([str(DEMO), *args]))


@pytest.fixture(scope="module")
def served_demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Demo, str]]:
    demo = Demo(tmp_path_factory.mktemp("demo"))
    proc = subprocess.Popen(
        [str(DEMO), "serve"],
        cwd=demo.work,
        env=demo.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    banner: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            banner.append(line)
            if line.startswith("Azure Storage Explorer"):
                break
        assert any("is served at" in line for line in banner), "".join(banner) + (
            proc.stderr.read() if proc.poll() is not None and proc.stderr else ""
        )
        yield demo, "".join(banner)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
    assert proc.returncode == 0
    assert not (Path(demo.env["DEMO_DIR"]) / "serve.json").exists(), "serve leaves no stale marker"


def _at_least_one_night(demo: Demo) -> None:
    """The tests of this module may run on different xdist workers, each with its own demo: the
    ones that need a run make the first night themselves when nobody has."""
    if not (Path(demo.env["DEMO_DIR"]) / "demo.json").exists():
        assert demo.demo().returncode == 2


def _run_id(output: str) -> str:
    match = re.search(r"^Run (\S+): (complete|partial)", output, re.M)
    assert match, output
    return match.group(1)


def _placeholders(section: str, nights: list[str]) -> dict[str, str]:
    subscription = LEGACY if section == "Subscriptions the audit has read" else PROD
    return {"<subscription-id>": subscription, "<RunA>": nights[0], "<RunB>": nights[1]}


#: What some commands must show on the demo (beyond running and exiting as documented).
EXPECT: dict[str, Any] = {
    "report --new": lambda r, d: "landing" in r.stdout and "shop-api" in r.stdout and "portal-dev" in r.stdout,
    "report --owner alice@contoso.com": lambda r, d: "shop/staging" in r.stdout and "landing" in r.stdout,
    "report --group-by owner": lambda r, d: "payments" in r.stdout and "alice@contoso.com" in r.stdout,
    "report --format json": lambda r, d: json.loads(r.stdout)["total"] == 20,
    "--format script --owner payments": lambda r, d: all(
        f"--name={app} " in (d.work / "fix-payments.sh").read_text() for app in ("payments-api", "shop-api", "checkout")
    ),
    "report --since 30d --resource": lambda r, d: r.stdout.count("FAIL") >= 2,
    "report --diff": lambda r, d: "shop-api" in r.stdout and "tmp-export" in r.stdout,
    "report --status FAIL --subscription": lambda r, d: "Prod (d7a7a3cc)" in r.stdout and "Dev (" not in r.stdout,
    "report --format ocsf": lambda r, d: all(
        json.loads(line)["class_uid"] == 2004 for line in (d.work / "findings.ocsf.jsonl").read_text().splitlines()
    ),
    "exempt list": lambda r, d: "sites/shop" in r.stdout and "status-page" in r.stdout,
    "subscriptions list": lambda r, d: "Legacy" in r.stdout and "Prod" in r.stdout,
}
#: Exit codes the page documents for each command (report: 1 when the selection holds a FAIL).
REPORT_CODES = {0, 1}


def test_every_command_of_the_security_team_page_runs_against_the_demo(served_demo: tuple[Demo, str]) -> None:
    demo, _ = served_demo
    first = demo.demo()
    assert first.returncode == 2, first.stderr  # partial: Sandbox cannot be read, as the page explains
    second = demo.demo()
    assert second.returncode == 2, second.stderr
    nights = [_run_id(first.stdout), _run_id(second.stdout)]
    assert "New failures: 4" in second.stdout and "gone: 1" in second.stdout, second.stdout

    ran, install = 0, set()
    for block in bash_blocks(DOC):
        if block.azure:
            continue
        fill = _placeholders(block.section, nights)
        for line in block.lines:
            if not line.startswith("clientcert-audit "):
                install.add(re.sub(r"\s+#.*$", "", line))
                continue
            for placeholder, value in fill.items():
                line = line.replace(placeholder, value)
            assert "<" not in re.sub(r"'[^']*'|\"[^\"]*\"", "", line), f"unfilled placeholder in {line!r}"
            result = demo.shell(line)
            ran += 1
            words = shlex.split(line, comments=True)
            allowed = REPORT_CODES if words[1] == "report" else {0}
            assert result.returncode in allowed, f"{line}\nexit {result.returncode}\n{result.stdout}\n{result.stderr}"
            assert "Traceback" not in result.stderr, f"{line}\n{result.stderr}"
            for key, check in EXPECT.items():
                if key in line:
                    assert check(result, demo), f"{line}\n{result.stdout}"
    assert install == INSTALL_LINES, "install lines of the page that test_analyst_install.py does not run"
    assert ran >= 15

    # The report after the retire no longer names Legacy; the third night is as the page says.
    third = demo.demo()
    assert third.returncode == 2 and "unreadable: 1" in third.stdout, third.stdout + third.stderr
    errors = demo.demo("report", "--status", "ERROR", "--format", "csv")
    assert SANDBOX in errors.stdout and LEGACY not in errors.stdout, errors.stdout


def test_arguments_and_exit_codes_pass_through_untouched(served_demo: tuple[Demo, str]) -> None:
    demo, _ = served_demo
    _at_least_one_night(demo)
    legacy = demo.shell("./demo report --resource-group 'rg(legacy)' --format json".replace("./demo", str(DEMO)))
    assert legacy.returncode in REPORT_CODES, legacy.stderr
    rows = json.loads(legacy.stdout)
    assert {row["AppName"] for row in rows["results"]} == {"intranet"}, rows
    usage = demo.demo("report", "--no-such-option")
    assert usage.returncode == 4 and "unrecognized arguments" in usage.stderr  # INVALID, as the exit-code table says
    bad = demo.demo("report", "--run", "19990101T000000000000Z-000000")
    assert bad.returncode == 5, bad.stdout + bad.stderr
    assert demo.demo("--help").returncode == 0


def test_a_change_is_caught_by_the_change_poll_within_the_command(served_demo: tuple[Demo, str]) -> None:
    demo, _ = served_demo
    _at_least_one_night(demo)
    before = demo.demo("report", "--status", "FAIL", "--format", "csv")
    assert ",blog," not in before.stdout
    changed = demo.demo("change", "blog-allow")
    assert changed.returncode == 0, changed.stdout + changed.stderr
    match = re.search(r"^Change run (\S+): complete; FAIL 1; new failures: 1$", changed.stdout, re.M)
    assert match, changed.stdout
    rows = demo.demo("report", "--run", match.group(1), "--format", "json")
    results = json.loads(rows.stdout)["results"]
    assert [(r["AppName"], r["Status"], r["NewFailure"]) for r in results] == [("blog", "FAIL", True)]
    again = demo.demo("change", "blog-allow")  # the owner saves the same setting again: audited, not new
    assert again.returncode == 0 and re.search(r"FAIL 1; new failures: 0$", again.stdout, re.M), again.stdout


def test_the_served_azurite_answers_the_printed_az_line(served_demo: tuple[Demo, str]) -> None:
    demo, banner = served_demo
    assert str(Path(demo.env["DEMO_DIR"]) / "tls" / "ca.pem") in banner
    exports = [line.strip() for line in banner.splitlines() if line.strip().startswith("export ")]
    az_line = next(line.strip() for line in banner.splitlines() if " az storage entity query " in line)
    _at_least_one_night(demo)
    env = {**demo.env, "PATH": f"{AZ.parent}:{demo.env['PATH']}", "AZURE_CONFIG_DIR": str(demo.root / "az")}
    result = subprocess.run(
        ["bash", "-c", "\n".join([*exports, az_line])],
        cwd=demo.work,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"^\d{8}T\d{12}Z-[0-9a-f]{6}\s+nightly\s+partial", result.stdout, re.M), result.stdout
