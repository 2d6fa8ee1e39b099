"""Benchmark: the real audit (timer function) against an emulated tenant at scale and Azurite.

One invocation: builds the tenant in an ARM emulator process (latency and ARM's throttling model
on), measures Azurite's raw ingest of as many rows as the audit writes, runs the audit in a child
process once per inventory source (each against a fresh Azurite), times a peer-style baseline on
a sample of subscriptions, then prints a table with the targets and writes the figures as JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import pstats
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from azure.data.tables import TableServiceClient

from bench.armproc import build_tenant
from bench.baseline import run_baseline
from bench.ingest import raw_ingest, spread_jobs
from bench.shapes import SHAPE_DEFAULTS, SHAPES, shape_statistics
from shared.core.layout import PARTITION_ROWS, state_bucket, state_shards
from tests.emulators.arm import SITE_SHAPES, ArmEmulator
from tests.emulators.azurite import Azurite, repo_root
from tests.emulators.faults import FaultRule, Latency
from tests.emulators.proxy import FaultProxy
from tests.emulators.tenant import ACTIVE_STATES, Tenant
from tests.emulators.tls import make_tls

RG_PAGE = 1000
#: Log lines counted in the audit's log (each a figure of the run).
LOG_MARKERS = {
    "connection_pool_full": "Connection pool is full",
    "partial_batches_sent_early": "Sending partial batches early",
    "warnings": " WARNING ",
}
#: The pipeline's end-of-run line: what the run held at most (the bound's H), its cap, how often a
#: listing waited at it and how many partial flushes that asked for.
HELD_LINE = re.compile(
    r"at most (\d+) records and state rows held in memory at once \(cap (\d+)\); listings waited (\d+) times, (\d+) partial"
)
ARM_KINDS = ("subscriptions", "sites_list", "rg_sites_list", "slots_list", "site_get")


# -- floors ------------------------------------------------------------------------------------------
def arm_floor(tenant: Tenant, page: int) -> dict[str, int]:
    """Requests of the list strategy: subscription pages + site-list pages + one includeSlots list
    (with its pages) per resource group that holds sites."""
    subs = max(1, math.ceil(len(tenant.subscriptions) / page))
    site_pages = rg_pages = 0
    for sub in tenant.subscriptions:
        if sub.state not in ACTIVE_STATES:
            continue
        site_pages += max(1, math.ceil(len(sub.sites) / page))
        for rg in sub.resource_groups:
            items = sub.sites_in_group(rg, include_slots=True) or []
            if any(not s.is_slot for s in items):
                rg_pages += max(1, math.ceil(len(items) / page))
    return {
        "subscriptions": subs,
        "sites_list": site_pages,
        "rg_sites_list": rg_pages,
        "total": subs + site_pages + rg_pages,
    }


def throttle_floor(tenant: Tenant, page: int, capacity: float, refill: float) -> float:
    """Seconds the busiest subscription needs under ARM's per-subscription bucket, however parallel."""
    worst = 0.0
    for sub in tenant.subscriptions:
        if sub.state not in ACTIVE_STATES:
            continue
        n = max(1, math.ceil(len(sub.sites) / page))
        for rg in sub.resource_groups:
            items = sub.sites_in_group(rg, include_slots=True) or []
            if any(not s.is_slot for s in items):
                n += max(1, math.ceil(len(items) / page))
        worst = max(worst, (n - capacity) / refill)
    return max(0.0, worst)


# -- processes ---------------------------------------------------------------------------------------
class ArmProcess:
    """The emulator in its own Python process (its CPU is not the audit's)."""

    def __init__(self, spec: dict[str, Any]) -> None:
        env = {**os.environ, "PYTHONPATH": str(repo_root())}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.armproc", "--spec", json.dumps(spec)],
            cwd=repo_root(),
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("ARM emulator process did not start")
        hello = json.loads(line)
        self.url: str = hello["url"]
        self.env: dict[str, str] = hello["env"]

    def command(self, name: str) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(name + "\n")
        self.proc.stdin.flush()
        return dict(json.loads(self.proc.stdout.readline()))

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.command("quit")
                self.proc.wait(timeout=15)
            except (OSError, ValueError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait(timeout=5)


def run_audit_child(
    env: dict[str, str],
    log_file: Path,
    profile: Path | None,
    memory: Path | None = None,
    census: Path | None = None,
    census_every: float = 0.0,
) -> dict[str, Any]:
    report = log_file.with_suffix(".peak.json")
    argv = [sys.executable, "-m", "bench.child", "--report", str(report)]
    argv += ["--profile", str(profile)] if profile else []
    argv += ["--tracemalloc", str(memory)] if memory else []
    argv += ["--census", str(census)] if census else []
    argv += ["--census-every", str(census_every)] if census and census_every > 0 else []
    parent_rss = own_rss_mb()
    started = time.monotonic()
    with log_file.open("wb") as log:
        proc = subprocess.Popen(argv, cwd=repo_root(), env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    text = log_file.read_text(errors="replace")
    if proc.returncode != 0 and not report.exists():
        raise RuntimeError(f"audit process exited with {proc.returncode}:\n{text[-3000:]}")
    if proc.returncode != 0:  # a failed run (its record says why): its figures are kept, not lost
        print(f"  the audit process exited with {proc.returncode}:\n{text[-1500:]}", flush=True)
    own = json.loads(report.read_text())
    return {
        "exit_code": proc.returncode,
        "log_lines": {name: text.count(marker) for name, marker in LOG_MARKERS.items()},
        "wall_seconds": round(wall, 3),
        "cpu_user_seconds": round(usage.ru_utime, 3),
        "cpu_sys_seconds": round(usage.ru_stime, 3),
        # The audit process's own peak (VmHWM). wait4's ru_maxrss is also kept: Linux starts it at the
        # memory the child was spawned from, so it is never below the bench's own RSS at that moment.
        "peak_rss_mb": own["vm_hwm_mb"],
        "ru_maxrss_wait4_mb": round(usage.ru_maxrss / 1024, 1),
        "bench_rss_at_spawn_mb": parent_rss,
        "held": held_figures(text),
    }


def held_figures(log: str) -> dict[str, int] | None:
    """The run's memory-cap figures from its log (None from an engine without the cap)."""
    match = HELD_LINE.search(log)
    if match is None:
        return None
    most, cap, waits, flushes = (int(g) for g in match.groups())
    return {"most_held": most, "cap": cap, "listing_waits": waits, "stall_flushes": flushes}


def own_rss_mb() -> float:
    """This (the bench's) process's resident set now, in MB (Linux)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def read_run_record(azurite: Azurite, runs_table: str, expected_runs: int) -> dict[str, Any]:
    """The latest run's record (RunIds sort by time)."""
    with TableServiceClient.from_connection_string(azurite.connection_string) as svc:
        rows = [dict(e) for e in svc.get_table_client(runs_table).query_entities("PartitionKey eq 'run'")]
    if len(rows) != expected_runs:
        raise RuntimeError(f"expected {expected_runs} run records, found {len(rows)}")
    return max(rows, key=lambda row: str(row["RowKey"]))


def row_mismatches(azurite: Azurite, results_table: str, run_id: str, oracle: dict[str, Any]) -> dict[str, int]:
    """Every result row of one run against the tenant's oracle, resource by resource: rows missing,
    rows of no resource, rows twice, and rows whose Status or ClientCertMode differ."""
    flt = f"PartitionKey ge '{run_id}_' and PartitionKey lt '{run_id}`'"
    with TableServiceClient.from_connection_string(azurite.connection_string) as svc:
        client = svc.get_table_client(results_table)
        rows = {}
        twice = 0
        for entity in client.query_entities(flt, select=["ResourceId", "Status", "ClientCertMode"]):
            key = str(entity["ResourceId"]).lower()
            twice += key in rows
            rows[key] = (entity["Status"], entity["ClientCertMode"])
    wrong = sum(1 for key, e in oracle.items() if key in rows and rows[key] != (e.status, e.mode))
    return {
        "missing": sum(1 for key in oracle if key not in rows),
        "unknown": sum(1 for key in rows if key not in oracle),
        "twice": twice,
        "wrong": wrong,
    }


def top_profile(path: Path, limit: int = 25) -> list[dict[str, Any]]:
    """The functions with the most own time, merged over all threads."""
    stats = pstats.Stats(str(path))
    entries = []
    for (file, line, name), (_cc, calls, tottime, cumtime, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        entries.append(
            {
                "function": f"{Path(file).name}:{line}({name})",
                "calls": calls,
                "own_seconds": round(tottime, 3),
                "cumulative_seconds": round(cumtime, 3),
            }
        )
    entries.sort(key=lambda e: e["own_seconds"], reverse=True)
    return entries[:limit]


# -- one measured audit ------------------------------------------------------------------------------
def measure_audit(
    source: str,
    args: argparse.Namespace,
    arm: ArmProcess,
    tls: Any,
    workdir: Path,
    expected: Counter[str],
    oracle: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """The first (baseline) run of the audit on a fresh Azurite and, with ``--nightly``, the next
    night's run on the same tables: every subscription's prior state read, every row rewritten."""
    tables = {
        "AUDIT_RESULTS_TABLE": "ClientCertAudit",
        "AUDIT_LATEST_TABLE": "ClientCertAuditLatest",
        "AUDIT_RUNS_TABLE": "ClientCertAuditRuns",
        "AUDIT_EXEMPTIONS_TABLE": "ClientCertAuditExemptions",
    }
    results = []
    with Azurite(workdir / f"azurite-{source}", tls) as azurite, contextlib.ExitStack() as stack:
        table_uri = azurite.table_service_uri
        if args.table_latency > 0:  # a slower store: every Table request waits this long in a proxy first
            proxy = stack.enter_context(FaultProxy(azurite.port, tls))
            proxy.faults.add(FaultRule(Latency(args.table_latency), method="*"))
            table_uri = proxy.url()
        env = {k: v for k, v in os.environ.items() if not k.startswith("AUDIT_") and k != "AZURE_CLIENT_ID"}
        env.update(arm.env)
        env.update(tables)
        env.update(
            {
                "PYTHONPATH": str(repo_root()),
                "AUDIT_TABLE_SERVICE_URI": table_uri,
                "AUDIT_SCHEDULE": "0 0 2 * * *",
                "AUDIT_CONCURRENCY": str(args.concurrency),
                "AUDIT_INVENTORY_SOURCE": source,
                "AUDIT_LEASE_SECONDS": "3600",
            }
        )
        for night in ("baseline", "nightly") if args.nightly else ("baseline",):
            label = source if night == "baseline" else f"{source}+state"
            if night == "nightly":
                print(f"Audit with AUDIT_INVENTORY_SOURCE={source}, the next night (state present) ...", flush=True)
            arm.command("reset")
            profile = workdir / f"profile-{label}.pstats" if args.profile else None
            memory = workdir / f"memory-{label}.txt" if args.tracemalloc else None
            census = workdir / f"census-{label}.txt" if args.census else None
            measured = run_audit_child(env, workdir / f"audit-{label}.log", profile, memory, census, args.census_every)
            stats = arm.command("stats")
            record = read_run_record(azurite, tables["AUDIT_RUNS_TABLE"], len(results) + 1)
            out = _figures(source, label, night, measured, stats, record, expected)
            if oracle is not None:
                out["row_mismatches"] = row_mismatches(azurite, tables["AUDIT_RESULTS_TABLE"], record["RunId"], oracle)
            if profile is not None and profile.exists():
                out["profile_top"] = top_profile(profile)
            if memory is not None:
                out["tracemalloc_report"] = str(memory)
            results.append(out)
    return results


def _figures(
    source: str,
    label: str,
    night: str,
    measured: dict[str, Any],
    stats: dict[str, Any],
    record: dict[str, Any],
    expected: Counter[str],
) -> dict[str, Any]:
    counts = Counter({k[len("Count") :]: int(v) for k, v in record.items() if k.startswith("Count") and v})
    resources = int(record.get("Total") or 0)
    # The run record counts result rows; each audited (non-ERROR) resource also gets a state row,
    # and each retired one a state update.
    result_rows = int(record.get("Rows") or 0)
    state_rows = result_rows - counts.get("ERROR", 0) + int(record.get("Retired") or 0)
    rows, transactions = result_rows + state_rows, int(record.get("Transactions") or 0)
    cpu = measured["cpu_user_seconds"] + measured["cpu_sys_seconds"]
    by_kind = {k: int(stats["by_kind"].get(k, 0)) for k in (*ARM_KINDS, "resourcegraph", "token")}
    arm_requests = sum(by_kind[k] for k in ARM_KINDS) + by_kind["resourcegraph"]
    out: dict[str, Any] = {
        "source": label,
        "inventory_source": source,
        "night": night,
        "outcome": record.get("Outcome"),
        "resources": resources,
        "counts": dict(counts),
        "matches_oracle": counts == expected,
        **measured,
        "engine_duration_seconds": record.get("DurationSeconds"),
        "cpu_seconds": round(cpu, 3),
        "cpu_ms_per_resource": round(1000 * cpu / resources, 4) if resources else None,
        "arm_requests": arm_requests,
        "arm_requests_by_kind": by_kind,
        "arm_requests_per_resource": round(arm_requests / resources, 4) if resources else None,
        "http_429": int(stats.get("throttled", 0)),
        "rows_written": rows,
        "row_breakdown": {"results": result_rows, "state": state_rows},
        "table_transactions": transactions,
        "table_partitions": int(record.get("Partitions") or 0),
        "transactions_per_100_rows": round(100 * transactions / rows, 3) if rows else None,
        "emulator_cpu_seconds": round(float(stats.get("cpu_seconds", 0.0)), 1),
    }
    return out


# -- report ------------------------------------------------------------------------------------------
def evaluate_targets(result: dict[str, Any], figures: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    floor = figures["arm_floor"]["total"]
    ingest_s = figures["raw_ingest"]["wall_seconds"] if figures.get("raw_ingest") else None
    a = floor * args.latency / args.concurrency
    wall_bound = max(a, ingest_s or 0.0)
    resources = result["resources"] or 1
    targets = {
        "arm_requests_le_1.1x_floor": {
            "value": result["arm_requests"],
            "limit": round(1.1 * floor, 1),
            "met": result["arm_requests"] <= 1.1 * floor,
        },
        "cpu_le_0.5ms_per_resource": {
            "value": result["cpu_ms_per_resource"],
            "limit": 0.5,
            "met": (result["cpu_ms_per_resource"] or 0) <= 0.5,
        },
        "wall_le_1.3x_bound": {
            "value": result["wall_seconds"],
            "limit": round(1.3 * wall_bound, 1),
            "bound_a_arm_floor_x_latency_div_concurrency": round(a, 1),
            "bound_b_azurite_raw_ingest": ingest_s,
            "azurite_alone_in_the_audits_partitions": (figures.get("raw_ingest_as_audit") or {}).get("wall_seconds"),
            "met": result["wall_seconds"] <= 1.3 * wall_bound,
        },
        "transactions_le_1.1_per_100_rows": {
            "value": result["transactions_per_100_rows"],
            "limit": 1.1,
            "met": (result["transactions_per_100_rows"] or 99) <= 1.1,
        },
        "peak_rss_le_300mb": {"value": result["peak_rss_mb"], "limit": 300, "met": result["peak_rss_mb"] <= 300},
    }
    if figures.get("baseline"):
        ratio = figures["baseline"]["estimated_wall_seconds"] / max(result["wall_seconds"], 1e-9)
        targets["ge_20x_faster_than_baseline"] = {"value": round(ratio, 1), "limit": 20, "met": ratio >= 20}
    if result["inventory_source"] == "resourcegraph":
        targets.pop("arm_requests_le_1.1x_floor")  # a different floor: see resourcegraph_floor
    del resources
    return targets


def print_report(figures: dict[str, Any]) -> None:
    t = figures["tenant"]
    print()
    print(
        f"Tenant: {t['subscriptions']} subscriptions, {t['resource_groups']} resource groups, "
        f"{t['sites']} sites + {t['slots']} slots; latency {figures['settings']['latency_ms']} ms per ARM call, "
        f"throttle {figures['settings']['throttle']}; AUDIT_CONCURRENCY={figures['settings']['concurrency']}"
    )
    floor = figures["arm_floor"]
    print(
        f"ARM floor of the list strategy: {floor['total']} requests "
        f"({floor['subscriptions']} subscription pages + {floor['sites_list']} site-list pages + "
        f"{floor['rg_sites_list']} includeSlots lists); Resource Graph floor: {figures['resourcegraph_floor']} requests; "
        f"busiest subscription under ARM's bucket needs >= {figures['throttle_floor_seconds']} s"
    )
    for key, what in (("raw_ingest", "spread over partitions"), ("raw_ingest_as_audit", "in the audit's partitions")):
        ri = figures.get(key)
        if ri:
            print(
                f"Azurite raw ingest {what}: {ri['rows']} rows in {ri['transactions']} batches over "
                f"{ri['partitions']} partitions (largest {ri['largest_partition_rows']} rows): "
                f"{ri['wall_seconds']} s ({ri['rows_per_second']} rows/s)"
            )
    runs = figures["runs"]
    labels = [
        ("resources audited", "resources"),
        ("findings match the oracle", "matches_oracle"),
        ("wall time (s)", "wall_seconds"),
        ("ARM requests", "arm_requests"),
        ("  subscriptions", ("arm_requests_by_kind", "subscriptions")),
        ("  sites_list", ("arm_requests_by_kind", "sites_list")),
        ("  rg_sites_list (includeSlots)", ("arm_requests_by_kind", "rg_sites_list")),
        ("  slots_list", ("arm_requests_by_kind", "slots_list")),
        ("  site_get", ("arm_requests_by_kind", "site_get")),
        ("  resourcegraph", ("arm_requests_by_kind", "resourcegraph")),
        ("ARM requests per resource", "arm_requests_per_resource"),
        ("429s received", "http_429"),
        ("table rows written", "rows_written"),
        ("table transactions", "table_transactions"),
        ("table partitions written", "table_partitions"),
        ("transactions per 100 rows", "transactions_per_100_rows"),
        ("CPU user+sys (s)", "cpu_seconds"),
        ("CPU per resource (ms)", "cpu_ms_per_resource"),
        ("peak RSS (MB)", "peak_rss_mb"),
        ("  wait4 ru_maxrss (MB)", "ru_maxrss_wait4_mb"),
        ("  bench's RSS at spawn (MB)", "bench_rss_at_spawn_mb"),
    ]
    width = 32
    print()
    print("".ljust(width) + "".join(r["source"].rjust(16) for r in runs))
    for label, key in labels:
        cells = []
        for r in runs:
            value = r[key[0]][key[1]] if isinstance(key, tuple) else r.get(key)
            cells.append(str(value).rjust(16))
        print(label.ljust(width) + "".join(cells))
    if figures.get("baseline"):
        b = figures["baseline"]
        print()
        print(
            f"Peer-style baseline ({b['strategy']}): {b['sample_requests']} requests on "
            f"{b['sample_subscriptions']} sampled subscriptions in {b['sample_wall_seconds']} s "
            f"-> {b['tenant_requests']} requests for the tenant, about {b['estimated_wall_seconds']} s "
            f"({b['audits']})"
        )
        for r in runs:
            print(
                f"  {r['source']}: {b['estimated_wall_seconds'] / max(r['wall_seconds'], 1e-9):.1f}x faster than the baseline"
            )
    print()
    print("Targets:")
    for r in runs:
        for name, target in r["targets"].items():
            mark = "met" if target["met"] else "NOT MET"
            extra = {k: v for k, v in target.items() if k not in ("value", "limit", "met")}
            print(
                f"  [{r['source']}] {name}: {target['value']} (limit {target['limit']}) {mark} {extra or ''}".rstrip()
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--sites", type=int, default=13000, help="production sites (default 13000; 100000 = full)")
    parser.add_argument("--subscriptions", type=int, help="default: sites / 100 (1,000 at 100k sites)")
    parser.add_argument("--slot-share", type=float, default=0.3, help="slots per site (default 0.3)")
    parser.add_argument(
        "--spread",
        "--shape",
        dest="spread",
        choices=SHAPES,
        default="heavy",
        help="the tenant's shape (bench/shapes.py): heavy-tailed (default; largest ~37k of 130k), flat "
        "(largest ~15k), or zipf (the independent run's tenant: 5%% empty, Zipf 1.1, lists paged by 100)",
    )
    parser.add_argument(
        "--site-shape",
        choices=SITE_SHAPES,
        default="full",
        help="site objects served: full (default; a real list page's, ~3 KB) or compact (~1.7 KB)",
    )
    parser.add_argument("--seed", type=int, default=None, help="tenant seed (default: the shape's)")
    parser.add_argument("--latency", type=float, default=0.05, help="seconds added to every ARM answer")
    parser.add_argument("--page-size", type=int, default=None, help="items per ARM list page (default: the shape's)")
    parser.add_argument(
        "--table-latency",
        type=float,
        default=0.0,
        help="seconds added to every Table request (through a proxy): a store slower than the listing",
    )
    parser.add_argument("--concurrency", type=int, default=8, help="AUDIT_CONCURRENCY of the audit")
    parser.add_argument("--sources", default="arm,resourcegraph", help="inventory sources to measure")
    parser.add_argument("--no-throttle", action="store_true", help="turn ARM's throttling model off")
    parser.add_argument("--baseline-budget", type=int, default=400, help="ARM requests for the baseline sample")
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument("--skip-ingest", action="store_true")
    parser.add_argument(
        "--skip-ingest-as-audit", action="store_true", help="skip the raw ingest in the audit's own partition layout"
    )
    parser.add_argument(
        "--check-rows",
        action="store_true",
        help="compare every result row with the oracle (slow at scale; the counts are always compared)",
    )
    parser.add_argument("--profile", action="store_true", help="cProfile every thread of the audit")
    parser.add_argument(
        "--tracemalloc",
        action="store_true",
        help="trace the audit's allocations and report where memory was at its peak (slow; not for figures)",
    )
    parser.add_argument(
        "--census",
        action="store_true",
        help="write the live objects by kind at the audit's largest live heap (census-*.txt; perturbs the figures)",
    )
    parser.add_argument(
        "--census-every",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="with --census, also a census every SECONDS and one after the run (census-*.txt.NNN, .end; "
        "python -m bench.census compares them)",
    )
    parser.add_argument(
        "--nightly",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also measure the next night's run on the same tables (prior state read, rows rewritten)",
    )
    parser.add_argument(
        "--json", type=Path, default=None, help="where to write the figures (default bench/results-<sites>.json)"
    )
    parser.add_argument("--workdir", type=Path, default=None, help="TLS, Azurite data, logs (default: a temp dir)")
    args = parser.parse_args(argv)
    for name, value in SHAPE_DEFAULTS[args.spread].items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    subscriptions = args.subscriptions or max(1, args.sites // 100)
    workdir = (args.workdir or Path(tempfile.mkdtemp(prefix="clientcert-bench-"))).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    tls = make_tls(workdir / "tls")
    spec = {
        "seed": args.seed,
        "subscriptions": subscriptions,
        "sites": args.sites,
        "slot_share": args.slot_share,
        "spread": args.spread,
        "site_shape": args.site_shape,
        "latency": args.latency,
        "page_size": args.page_size,
        "throttle": not args.no_throttle,
        "throttle_capacity": 250,
        "throttle_refill": 25,
        "tls_dir": str(workdir / "tls"),
    }
    print(f"Building the tenant ({args.sites} sites, {subscriptions} subscriptions) ...", flush=True)
    tenant = build_tenant(spec)
    counts = tenant.counts()
    expected = Counter(e.status for e in tenant.expected().values())
    resources = sum(expected.values())
    floor = arm_floor(tenant, args.page_size)
    shape = shape_statistics(tenant)
    all_rows = sum(1 for s in tenant.subscriptions if s.state != "Deleted" for _ in s.iter_resources())
    figures: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "settings": {
            "latency_ms": round(args.latency * 1000),
            "page_size": args.page_size,
            "concurrency": args.concurrency,
            "throttle": "off" if args.no_throttle else "250 reads/subscription/principal, refill 25/s",
            "seed": args.seed,
            "spread": args.spread,
            "site_shape": args.site_shape,
            "table_latency_ms": round(args.table_latency * 1000),
        },
        "tenant": {
            **counts,
            "resources": resources,
            "largest_subscription_resources": shape["largest_subscription_resources"],
            "shape": shape,
        },
        "arm_floor": floor,
        "resourcegraph_floor": max(1, math.ceil(len(tenant.subscriptions) / args.page_size))
        + max(1, math.ceil(all_rows / RG_PAGE)),
        "throttle_floor_seconds": round(throttle_floor(tenant, args.page_size, 250, 25), 1),
        "runs": [],
    }
    if not args.skip_ingest:
        rows = 2 * resources  # a result row and a state row per resource, in two tables
        token = ArmEmulator(Tenant(), tls).make_token("https://storage.azure.com")
        print(f"Azurite raw ingest of {rows} rows spread over partitions of 1,000 ...", flush=True)
        with Azurite(workdir / "azurite-ingest", tls) as azurite:
            figures["raw_ingest"] = raw_ingest(
                azurite.table_service_uri,
                token,
                str(tls.ca_file),
                spread_jobs(rows, ("IngestResults", "IngestState")),
                concurrency=args.concurrency,
            )
        if not args.skip_ingest_as_audit:
            # The same rows in the partitions the audit uses (shared/core/layout.py): results in run
            # partitions of PARTITION_ROWS; state in a shared bucket per first character of the
            # subscription id, or in the subscription's own shards when it is large.
            jobs = spread_jobs(resources, ("AsAuditResults",), PARTITION_ROWS)
            buckets: Counter[str] = Counter()
            for sub in tenant.subscriptions:
                n = sum(1 for _ in sub.iter_resources()) if sub.state in ACTIVE_STATES else 0
                shards = state_shards(n)
                if n and not shards:
                    buckets[state_bucket(sub.subscription_id)] += n
                for shard in range(shards):
                    share = n // shards + (1 if shard < n % shards else 0)
                    jobs.append([("AsAuditState", f"{sub.subscription_id.lower()}_{shard:04d}", share)])
            jobs += [[("AsAuditState", bucket, n)] for bucket, n in sorted(buckets.items())]
            print(f"Azurite raw ingest of {rows} rows in the audit's partitions ...", flush=True)
            with Azurite(workdir / "azurite-ingest-as-audit", tls) as azurite:
                figures["raw_ingest_as_audit"] = raw_ingest(
                    azurite.table_service_uri, token, str(tls.ca_file), jobs, concurrency=args.concurrency
                )
    arm = ArmProcess(spec)
    try:
        os.environ.update(arm.env)  # the baseline authenticates like the product (managed identity)
        for source in [s.strip() for s in args.sources.split(",") if s.strip()]:
            print(f"Audit with AUDIT_INVENTORY_SOURCE={source} ...", flush=True)
            oracle = tenant.expected() if args.check_rows else None
            figures["runs"].extend(measure_audit(source, args, arm, tls, workdir, expected, oracle))
            partial = workdir / "figures-partial.json"  # a long run's figures so far, in case it is stopped
            partial.write_text(json.dumps(figures, indent=2, default=str) + "\n")
        if not args.skip_baseline:
            print("Peer-style baseline on a sample of subscriptions ...", flush=True)
            arm.command("reset")
            figures["baseline"] = run_baseline(
                tenant, arm.url, args.page_size, args.baseline_budget, counts["sites"], resources
            )
            figures["baseline"]["http_429"] = arm.command("stats").get("throttled", 0)
    finally:
        arm.close()
    for run in figures["runs"]:
        run["targets"] = evaluate_targets(run, figures, args)
    print_report(figures)
    suffix = ("" if args.spread == "heavy" else f"-{args.spread}") + ("" if args.site_shape == "full" else "-compact")
    out = args.json or repo_root() / "bench" / f"results-{args.sites}{suffix}.json"
    out.write_text(json.dumps(figures, indent=2, default=str) + "\n")
    print(f"\nFigures written to {out} (logs and profiles in {workdir})")
    return 0
