"""The HTML report, opened in headless Chromium (Debian ``chromium``): the DOM after rendering has the
chart and the tables, and screenshots show the trend lines in their status colours.

``make chromium`` installs the browser (``make test`` depends on it). Without it the test is skipped
with a loud reason on a developer machine, and fails under CI, where it must run.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
import zlib
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from shared.report import COLOURS
from tests.reportbed import SUB_B, AuditBed

WINDOW = (1200, 900)
#: The widths the page is checked at: a desktop browser, and a narrow window or a mail preview pane.
WIDTHS = (1400, 900)


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    reason = (
        "HTML REPORT NOT RENDERED: Debian `chromium` is not installed; run `make chromium` (apt-get install chromium)"
    )
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


def run_chromium(tmp_path: Path, *args: str, window: tuple[int, int] = WINDOW) -> subprocess.CompletedProcess[bytes]:
    """Headless Chromium with everything that could reach the network switched off."""
    argv = [
        chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        "--force-device-scale-factor=1",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        f"--window-size={window[0]},{window[1]}",
        *args,
    ]
    result = subprocess.run(argv, capture_output=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr.decode(errors="replace")[-2000:]
    return result


# -- a minimal PNG reader (stdlib only) -----------------------------------------------------------
def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    return a if pa <= pb and pa <= pc else (b if pb <= pc else c)


def _unfilter(kind: int, line: bytearray, prev: bytes, bpp: int) -> bytearray:
    if kind == 0:
        return line
    if kind == 2:
        return bytearray((x + y) & 0xFF for x, y in zip(line, prev, strict=True))
    out = bytearray(len(line))
    for i, x in enumerate(line):
        a = out[i - bpp] if i >= bpp else 0
        b = prev[i]
        c = prev[i - bpp] if i >= bpp else 0
        if kind == 1:
            predictor = a
        elif kind == 3:
            predictor = (a + b) // 2
        else:
            predictor = _paeth(a, b, c)
        out[i] = (x + predictor) & 0xFF
    return out


def png_colours(path: Path) -> tuple[int, int, Counter[tuple[int, int, int]]]:
    """Width, height and a count of every RGB colour of an 8-bit RGB/RGBA, non-interlaced PNG."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, bytearray(), b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    width, height, depth, colour_type, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert depth == 8 and colour_type in (2, 6) and interlace == 0, (depth, colour_type, interlace)
    bpp = 4 if colour_type == 6 else 3
    raw = zlib.decompress(bytes(idat))
    stride = width * bpp
    prev = bytes(stride)
    colours: Counter[tuple[int, int, int]] = Counter()
    for y in range(height):
        start = y * (stride + 1)
        line = _unfilter(raw[start], bytearray(raw[start + 1 : start + 1 + stride]), prev, bpp)
        colours.update(zip(line[0::bpp], line[1::bpp], line[2::bpp], strict=True))
        prev = bytes(line)
    return width, height, colours


def rgb(hex_colour: str) -> tuple[int, int, int]:
    return int(hex_colour[1:3], 16), int(hex_colour[3:5], 16), int(hex_colour[5:7], 16)


# -- what the DOM holds after Chromium rendered it ------------------------------------------------
class _Dom(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: Counter[str] = Counter()
        self.tags: Counter[str] = Counter()
        self.classes: Counter[str] = Counter()
        self.finding_rows = 0
        self._table: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attr = dict(attrs)
        self.tags[tag] += 1
        if attr.get("id"):
            self.ids[str(attr["id"])] += 1
        for name in str(attr.get("class") or "").split():
            self.classes[name] += 1
        if tag == "table":
            self._table.append(str(attr.get("id") or ""))
        if (
            tag == "tr"
            and self._table
            and self._table[-1] == "findings"
            and str(attr.get("class", "")).startswith("status-")
        ):
            self.finding_rows += 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "table" and self._table:
            self._table.pop()


def _estate_with_history(bed: AuditBed) -> None:
    """Five runs whose counts move, so the trend has a shape."""
    bed.run()
    bed.sites["intranet"].update(client_cert_mode="Optional")
    bed.run()
    sub_b = bed.tenant.get_subscription(SUB_B)
    assert sub_b is not None
    for i in range(4):
        sub_b.add_site("rg-dev", f"new-{i}", client_cert_enabled=False)
    bed.run()
    bed.sites["shop"].update(client_cert_mode="Required")
    bed.run()
    bed.sites["portal"].update(exclusion_paths=None)
    bed.run()


@pytest.fixture
def bed(azurite: Any, make_arm: Any, monkeypatch: pytest.MonkeyPatch) -> AuditBed:
    return AuditBed(azurite, make_arm, monkeypatch)


def test_html_report_renders_chart_and_table_in_chromium(
    bed: AuditBed, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    chromium()  # skip (or fail under CI) before spending time on the runs
    _estate_with_history(bed)
    page = tmp_path / "report.html"
    code, out, _ = bed.cli(capsys, ["report", "--format", "html", "-o", str(page)])
    assert code == 1 and f"Wrote {page}" in out
    failing = bed.summaries[-1].counts["FAIL"] + bed.summaries[-1].counts["WARN"]

    dom = _Dom()
    dom.feed(run_chromium(tmp_path, "--dump-dom", page.as_uri()).stdout.decode("utf-8"))
    assert dom.ids["trend-chart"] == 1 and dom.ids["subscription-chart"] == 1
    assert dom.classes["series"] == 5  # a line per status in the trend
    assert dom.tags["circle"] == 5 * 5  # a marker per status per run
    assert dom.classes["bar"] >= 2  # the per-subscription bars: Dev (FAIL), Prod (FAIL and WARN)
    assert dom.ids["findings"] == 1 and dom.finding_rows == failing == 7
    assert dom.ids["by-subscription"] == 1 and dom.ids["trend-table"] == 1
    assert dom.tags["script"] == 0

    shot = tmp_path / "report.png"
    run_chromium(tmp_path, f"--screenshot={shot}", page.as_uri())
    width, height, colours = png_colours(shot)
    assert (width, height) == WINDOW
    assert len(colours) > 50, "the page rendered (nearly) blank"
    for status in ("PASS", "FAIL", "WARN", "EXEMPT", "ERROR"):
        assert colours[rgb(COLOURS[status])] > 500, f"{status} colour missing from the page"

    # The chart alone: hide everything else, so the colours can only come from the SVG's lines.
    chart_only = tmp_path / "chart.html"
    chart_only.write_text(
        page.read_text(encoding="utf-8").replace(
            "</head>", "<style>body>*:not(#trend){display:none!important}</style></head>", 1
        ),
        encoding="utf-8",
    )
    shot = tmp_path / "chart.png"
    run_chromium(tmp_path, f"--screenshot={shot}", chart_only.as_uri())
    _, _, colours = png_colours(shot)
    legend_square = 14 * 14
    for status in ("PASS", "FAIL", "WARN"):  # the statuses that occur: lines and markers, not just the legend
        assert colours[rgb(COLOURS[status])] > legend_square + 300, f"no {status} line drawn"
    assert colours[rgb(COLOURS["EXEMPT"])] >= legend_square  # in the legend although every count is 0


class _Cells(HTMLParser):
    """The text of every cell, per table id, as Chromium left the DOM."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self._stack: list[str] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self._stack.append(str(dict(attrs).get("id") or ""))
            self.tables.setdefault(self._stack[-1], [])
        elif tag == "tr" and self._stack:
            self.tables[self._stack[-1]].append([])
        elif tag in ("td", "th") and self._stack:
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "table" and self._stack:
            self._stack.pop()
        elif tag in ("td", "th") and self._cell is not None and self._stack:
            self.tables[self._stack[-1]][-1].append("".join(self._cell).replace("\xad", "").strip())
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def test_html_report_shows_subscription_names_and_owners_in_chromium(
    bed: AuditBed, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    chromium()
    bed.sites["api/qa"] = bed.sites["api"].add_slot("qa", client_cert_enabled=False, tags={"OWNER": "qa-crew"})
    bed.run(
        tags={"shop": {"Owner": "alice@contoso.com"}, "api": {"Team": "payments"}, "jobs": {"contact": "<b>ops</b>"}}
    )
    bed.sites["intranet"].update(client_cert_mode="Optional")
    bed.run()
    page = tmp_path / "owners.html"
    code, _, _ = bed.cli(capsys, ["report", "--format", "html", "--group-by", "owner", "-o", str(page)])
    assert code == 1

    cells = _Cells()
    cells.feed(run_chromium(tmp_path, "--dump-dom", page.as_uri()).stdout.decode("utf-8"))
    findings = cells.tables["findings"]
    head = findings[0]
    col = {name: head.index(name) for name in ("Resource (portal link, resource group, id)", "Subscription", "Owner")}
    app = col.pop("Resource (portal link, resource group, id)")
    shown = {row[app].split("rg-")[0]: (row[col["Subscription"]], row[col["Owner"]]) for row in findings[1:]}
    assert shown == {
        "shop": ("Prod (aaaaaaaa)", "alice@contoso.com"),
        "api/staging": ("Prod (aaaaaaaa)", "payments"),  # no tag of its own: its site's owner
        "api/qa": ("Prod (aaaaaaaa)", "qa-crew"),
        "portal": ("Prod (aaaaaaaa)", ""),
        "jobs": ("Prod (aaaaaaaa)", "<b>ops</b>"),  # shown as text, not markup
        "intranet": ("Dev (bbbbbbbb)", ""),
    }
    groups = cells.tables["by-owner"]
    assert groups[0][0] == "Owner"
    assert [(g[0], g[3], g[-1]) for g in groups[1:]] == [  # owner, FAIL, total: worst first
        ("(no owner)", "1", "2"),  # intranet FAIL, portal WARN
        ("<b>ops</b>", "1", "1"),
        ("alice@contoso.com", "1", "1"),
        ("payments", "1", "2"),
        ("qa-crew", "1", "1"),
    ]
    shot = tmp_path / "owners.png"
    run_chromium(tmp_path, f"--screenshot={shot}", page.as_uri())
    width, height, colours = png_colours(shot)
    assert (width, height) == WINDOW and len(colours) > 50


class _Findings(HTMLParser):
    """The list as Chromium left it: per row, its classes, its portal link, its id and its subscription."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[dict[str, str]] = []
        self._in = False
        self._field = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attr = {k: v or "" for k, v in attrs}
        if tag == "table":
            self._in = attr.get("id") == "findings"
        elif self._in and tag == "tr" and attr.get("class", "").startswith("status-"):
            self.rows.append({"class": attr["class"], "href": "", "id": "", "sub": ""})
        elif self._in and self.rows and tag == "a":
            self.rows[-1]["href"] = attr.get("href", "")
        elif self._in and self.rows and tag == "code" and "id" in attr.get("class", "").split():
            self._field = "id"
        elif self._in and self.rows and tag == "td" and "sub" in attr.get("class", "").split():
            self.rows[-1]["sub"] = attr.get("title", "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self._in = False
        elif tag == "code":
            self._field = ""

    def handle_data(self, data: str) -> None:
        if self._field and self.rows:
            self.rows[-1][self._field] += data


PROBE = (
    "<script>document.body.setAttribute('data-scroll-width', document.documentElement.scrollWidth);"
    "document.body.setAttribute('data-chart-width', document.getElementById('subscription-chart')"
    ".getBoundingClientRect().width);"
    "document.body.setAttribute('data-spilling-cells', Array.from(document.querySelectorAll('#findings td'))"
    ".filter(function (td) { return td.scrollWidth > td.clientWidth + 1; }).length);"
    # Words cut in two: a badge on two lines, or a heading or a short cell (not an id) on more lines than
    # it has words (the small tables lay out by content: only their id columns may break anywhere).
    "var heights = Array.from(document.querySelectorAll('.badge')).map(function (b) { return b.offsetHeight; });"
    "document.body.setAttribute('data-badge-heights', Math.min.apply(null, heights) + '-' + Math.max.apply(null, heights));"
    "document.body.setAttribute('data-cut-words', Array.from(document.querySelectorAll("
    "'#expiring th, #requests th, #expiring td:not(.id), #requests td:not(.id), #findings th'))"
    ".filter(function (c) { var tops = new Set(), walk = document.createTreeWalker(c, NodeFilter.SHOW_TEXT);"
    " while (walk.nextNode()) { var r = document.createRange(); r.selectNodeContents(walk.currentNode);"
    " Array.from(r.getClientRects()).forEach(function (x) { tops.add(Math.round(x.top)); }); }"
    " var lines = tops.size;"
    " return lines > Math.max(1, c.textContent.split(/[\\s\\u00ad]+/).filter(Boolean).length); })"
    ".map(function (c) { return c.textContent; }).join('|'));</script></body>"
)


def test_html_report_puts_new_failures_first_links_every_resource_and_fits_900_px(
    bed: AuditBed, capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """New failures first, then FAIL by worst subscription, then WARN; a portal link to each
    resource's Configuration blade in its own directory and its full id; at 1400 and 900 px the page
    is no wider than the window (the charts scale, the table wraps)."""
    chromium()
    sub_b = bed.tenant.get_subscription(SUB_B)
    assert sub_b is not None
    monkeypatch.setenv("AUDIT_EXEMPTION_REQUEST_TAG", "ExemptionRequest")
    bed.run()  # baseline: shop, api/staging, jobs FAIL (Prod); portal WARN
    intranet = bed.site_id("intranet")
    assert (
        bed.cli(
            capsys,
            [
                "exempt",
                "add",
                "--scope",
                intranet,
                "--reason",
                "r",
                "--approver",
                "carol@contoso.com",
                "--expires",
                "3d",
            ],
        )[0]
        == 0
    )  # listed as expiring: a table laid out by its content
    for i in range(3):  # Dev becomes the worst subscription, with three new failures
        sub_b.add_site("rg-dev", f"dev-{i}", client_cert_enabled=False)
    bed.sites["shop"].update(client_cert_mode="Required")  # fixed
    bed.sites["long"] = sub_b.add_site(
        "rg-" + "x" * 80, "a-very-long-application-name-that-must-wrap-in-the-table", client_cert_enabled=False
    )
    bed.run(tags={"jobs": {"ExemptionRequest": "Partner callbacks cannot present certificates yet. SEC-2041"}})
    page = tmp_path / "report.html"
    assert bed.cli(capsys, ["report", "--format", "html", "-o", str(page)])[0] == 1

    found = _Findings()
    found.feed(run_chromium(tmp_path, "--dump-dom", page.as_uri()).stdout.decode("utf-8"))
    names = [r["id"].rsplit("/sites/", 1)[1] for r in found.rows]
    groups = [set(names[:4]), set(names[4:6]), names[6:]]  # within a subscription: the tables' order
    assert groups == [
        {"dev-0", "dev-1", "dev-2", "a-very-long-application-name-that-must-wrap-in-the-table"},  # new: Dev
        {"api/slots/staging", "jobs"},  # FAIL in Prod, not new
        ["portal"],  # WARN
    ]
    assert [("new-failure" in r["class"]) for r in found.rows] == [True] * 4 + [False] * 3
    tenant = bed.tenant.tenant_id
    for r in found.rows:
        site = {s.id: s for s in bed.tenant.iter_resources()}[r["id"]]  # the full id, exactly
        assert (
            r["href"] == f"https://portal.azure.com/#@{tenant}/resource{quote(site.id, safe='/-_.()~')}/configuration"
        )
        assert r["sub"] == site.subscription.subscription_id
    html = page.read_text(encoding="utf-8")
    assert 'id="count-fixed"><b>1</b>' in html and re.search(r'id="count-NEW"[^>]*><b>4</b>', html)

    probed = tmp_path / "probed.html"  # the page plus a probe that measures it (the page itself runs no script)
    probed.write_text(
        html.replace("script-src 'none'", "").replace("default-src 'none'", "").replace("</body>", PROBE),
        encoding="utf-8",
    )
    for width in WIDTHS:
        dom = run_chromium(tmp_path, "--virtual-time-budget=2000", "--dump-dom", probed.as_uri(), window=(width, 900))
        measured = re.search(
            rb'data-scroll-width="(\d+)" data-chart-width="([\d.]+)" data-spilling-cells="(\d+)" '
            rb'data-badge-heights="(\d+)-(\d+)" data-cut-words="([^"]*)"',
            dom.stdout,
        )
        assert measured, dom.stdout[-500:]
        scroll, chart, spilling = int(measured.group(1)), float(measured.group(2)), int(measured.group(3))
        assert measured.group(4) == measured.group(5), f"at {width} px a status badge wraps onto two lines"
        assert measured.group(6) == b"", f"at {width} px words are cut in two: {measured.group(6)!r}"
        assert scroll <= width, f"at {width} px the page is {scroll} px wide: something does not wrap or scale"
        assert 0 < chart <= width
        assert spilling == 0, f"at {width} px, {spilling} cells of the list spill over their neighbours"
        shot = tmp_path / f"report-{width}.png"
        run_chromium(tmp_path, f"--screenshot={shot}", page.as_uri(), window=(width, 2400))
        got_width, _, colours = png_colours(shot)
        assert got_width == width and colours[rgb(COLOURS["FAIL"])] > 500
