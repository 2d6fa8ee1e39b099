"""Security review of our own code, as tests: read-only ARM calls, TLS verification always on,
no shell-outs, no secrets, dependency pins with upper bounds."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: Every module of the product: every package under shared/ (report/, commands/, and any added later).
PRODUCT = [*sorted((ROOT / "shared").rglob("*.py")), ROOT / "function_app.py"]


def test_the_scan_covers_every_package() -> None:
    packages = {p.parent for p in (ROOT / "shared").rglob("__init__.py")}
    assert {ROOT / "shared", ROOT / "shared" / "report", ROOT / "shared" / "commands"} <= packages
    assert packages <= {p.parent for p in PRODUCT}, "a package under shared/ escapes the source scan"


def product_source() -> dict[Path, str]:
    return {p: p.read_text(encoding="utf-8") for p in PRODUCT}


def test_tls_verification_is_never_disabled() -> None:
    for path, text in product_source().items():
        assert not re.search(r"verify\s*=\s*False|connection_verify\s*=\s*False|CERT_NONE|check_hostname\s*=\s*False",
                             text), path


def test_no_shell_outs_or_dynamic_code() -> None:
    # shlex is allowed: it only quotes the az commands the report prints for people (it runs nothing,
    # and nothing here could run them: subprocess, os.system and pty stay banned).
    banned_modules = {"subprocess", "os.system", "pty"}
    for path, text in product_source().items():
        tree = ast.parse(text)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = {a.name for a in node.names} | ({node.module} if isinstance(node, ast.ImportFrom) and node.module else set())
                assert not names & banned_modules, (path, names)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                assert node.func.id not in {"eval", "exec", "compile", "__import__"}, path
            if isinstance(node, ast.Attribute):
                assert node.attr not in {"system", "popen", "spawnl", "execv"}, (path, node.attr)


def test_arm_calls_are_read_only() -> None:
    """The inventory adapters call only list/get operations (the custom role grants only reads)."""
    # close: the client's own transport; get: a configured subscription's display name (subscriptions/read)
    # get/get_slot: the change poll re-reads one changed site or slot (sites/read, sites/slots/read)
    allowed = {"list", "list_by_resource_group", "list_slots", "resources", "get", "get_slot", "close"}
    adapters = ("inventory.py", "resourcegraph.py", "changes.py", "paging.py", "sites.py")
    for name in adapters:
        tree = ast.parse(next((ROOT / "shared").rglob(name)).read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and isinstance(node.func.value, ast.Attribute)
                    and node.func.value.attr in {"web_apps", "subscriptions", "_client"}):
                assert node.func.attr in allowed, f"{name}: {node.func.value.attr}.{node.func.attr}"
    text = "".join(next((ROOT / "shared").rglob(name)).read_text() for name in adapters)
    text = text.replace("self._loader.start()", "")  # the Resource Graph loader thread, not an ARM call
    assert not re.search(r"\.(begin_|create_or_update|update|delete|restart|start|stop)\w*\(", text)


def test_no_secret_in_tracked_product_files() -> None:
    for path, text in product_source().items():
        assert not re.search(r"AccountKey=[A-Za-z0-9+/]{20,}|client_secret\s*=|SharedAccessSignature=", text), path
    for name in ("host.json", "requirements.txt"):
        assert "AccountKey" not in (ROOT / name).read_text()


def test_runtime_dependencies_are_pinned_with_upper_bounds() -> None:
    from tests.contract.pins import requirement_lines

    for line in requirement_lines(ROOT / "requirements.txt"):  # continuations joined, --hash options dropped
        assert re.match(r"^[A-Za-z0-9_.\-\[\]]+\s*(>=|==)[^,]+,\s*<\S+$", line) or "==" in line, line


def test_functions_host_does_not_sample_away_alert_events() -> None:
    import json

    host = json.loads((ROOT / "host.json").read_text())
    excluded = host["logging"]["applicationInsights"]["samplingSettings"]["excludedTypes"]
    assert "Trace" in excluded.split(";"), "NewFailure/RunSummary traces must never be sampled out"


def test_worst_case_run_fits_the_functions_timeout() -> None:
    """The bound docs/design.md states: run deadline + one call's whole retry budget + writing the
    subscriptions in flight (allowed 10 minutes here) stays inside host.json's functionTimeout."""
    import json

    from shared.azure.http import worst_case_call_seconds
    from shared.core.config import load_settings

    settings = load_settings({"AUDIT_TABLE_SERVICE_URI": "https://a.table.core.windows.net"})
    call = worst_case_call_seconds(settings.retry_total, settings.http_timeout)
    assert call <= 250, "one logical call is bounded to about 4 minutes"
    h, m, s = (int(x) for x in json.loads((ROOT / "host.json").read_text())["functionTimeout"].split(":"))
    assert settings.run_deadline_minutes * 60 + call + 600 < h * 3600 + m * 60 + s
