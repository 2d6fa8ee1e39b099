"""Raw ingest: how fast Azurite alone takes N rows in 100-entity batches spread over partitions.

This is the write floor the audit is compared with: the same number of rows, shaped like result
rows, sent as entity-group transactions of 100 (one partition each) by ``concurrency`` threads,
with bodies built by a few string joins so the client's CPU stays out of the figure.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import requests

BATCH = 100


def sample_entity(i: int, partition: str, now: str) -> dict[str, Any]:
    """A row with the properties (and roughly the size) of a results-table row."""
    rid = f"/subscriptions/00000000-0000-4000-8000-{i % 997:012d}/resourceGroups/rg-bench-{i % 311:03d}/providers/Microsoft.Web/sites/app-bench-{i:07d}"
    return {
        "PartitionKey": partition,
        "RowKey": rid.lower().replace("/", "|"),
        "RunId": "20250101T020000000000Z-bench",
        "ResourceId": rid,
        "ResourceType": "site",
        "SubscriptionId": f"00000000-0000-4000-8000-{i % 997:012d}",
        "ResourceGroup": f"rg-bench-{i % 311:03d}",
        "AppName": f"app-bench-{i:07d}",
        "Slot": "",
        "Kind": "app,linux",
        "State": "Running",
        "Location": "West Europe",
        "ClientCertEnabled": True,
        "ClientCertMode": "Optional",
        "ExclusionPaths": "",
        "Status": "FAIL",
        "Reason": "Client certificates are optional (Allow): requests without one are accepted.",
        "Remediation": "Portal: App Service > Configuration > General settings > Incoming client certificates: "
        f"set 'Client certificate mode' to Require. az webapp update --name app-bench-{i:07d} "
        f"--resource-group rg-bench-{i % 311:03d} --set clientCertEnabled=true clientCertMode=Required",
        "Exemption": "",
        "ExemptionRequest": "",
        "HttpsOnly": True,
        "PublicNetworkAccess": "Enabled",
        "NewFailure": False,
        "PreviousStatus": "",
        "FirstFailedAt": "",
        "AuditedAt": now,
        "AuditedAt@odata.type": "Edm.DateTime",
    }


def batch_body(table_url: str, entities: list[dict[str, Any]]) -> tuple[str, bytes]:
    batch, changeset = f"batch_{uuid.uuid4()}", f"changeset_{uuid.uuid4()}"
    parts = [f"--{batch}\r\nContent-Type: multipart/mixed; boundary={changeset}\r\n\r\n"]
    for n, entity in enumerate(entities):
        body = json.dumps(entity)
        pk = quote(str(entity["PartitionKey"]).replace("'", "''"))
        rk = quote(str(entity["RowKey"]).replace("'", "''"))
        parts.append(
            f"--{changeset}\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n"
            f"Content-ID: {n}\r\n\r\nPUT {table_url}(PartitionKey='{pk}',RowKey='{rk}') HTTP/1.1\r\n"
            "Content-Type: application/json\r\nAccept: application/json\r\nDataServiceVersion: 3.0\r\n"
            f"Content-Length: {len(body.encode())}\r\n\r\n{body}\r\n"
        )
    parts.append(f"--{changeset}--\r\n\r\n--{batch}--\r\n")
    return batch, "".join(parts).encode()


Step = tuple[str, str, int]  # (table, partition key, rows)


def spread_jobs(rows: int, tables: tuple[str, ...], partition_rows: int = 1000) -> list[list[Step]]:
    """``rows`` rows split evenly over ``tables``, in partitions of at most ``partition_rows``."""
    jobs: list[list[Step]] = []
    for n, table in enumerate(tables):
        share = rows // len(tables) + (1 if n < rows % len(tables) else 0)
        for k in range(0, share, partition_rows):
            jobs.append([(table, f"p{k // partition_rows:05d}", min(partition_rows, share - k))])
    return jobs


def raw_ingest(
    service_uri: str,
    token: str,
    ca_file: str,
    jobs: list[list[Step]],
    *,
    concurrency: int = 8,
) -> dict[str, Any]:
    """Write every job: ``concurrency`` threads take jobs in order; a job is a list of
    ``(table, partition, rows)`` steps written one after another as consecutive 100-entity
    transactions (as the audit writes one subscription: its result rows, then its state rows)."""
    headers = {"Authorization": f"Bearer {token}", "x-ms-version": "2019-02-02", "Accept": "application/json"}
    with requests.Session() as session:
        for table in sorted({step[0] for job in jobs for step in job}):
            created = session.post(
                f"{service_uri}/Tables",
                json={"TableName": table},
                headers={**headers, "Content-Type": "application/json", "DataServiceVersion": "3.0"},
                verify=ca_file,
                timeout=60,
            )
            created.raise_for_status()
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    next_job = [0]
    lock = threading.Lock()
    errors: list[str] = []
    batches = [0]

    def worker() -> None:
        with requests.Session() as session:
            while not errors:
                with lock:
                    index = next_job[0]
                    next_job[0] += 1
                if index >= len(jobs):
                    return
                for table, partition, count in jobs[index]:
                    if not write(session, index, table, partition, count):
                        return

    def write(session: requests.Session, index: int, table: str, partition: str, count: int) -> bool:
        for first in range(0, count, BATCH):
            entities = [
                sample_entity(index * 1_000_000 + i, partition, now) for i in range(first, min(count, first + BATCH))
            ]
            boundary, body = batch_body(f"{service_uri}/{table}", entities)
            response = session.post(
                f"{service_uri}/$batch",
                data=body,
                headers={
                    **headers,
                    "Content-Type": f"multipart/mixed; boundary={boundary}",
                    "DataServiceVersion": "3.0",
                    "MaxDataServiceVersion": "3.0;NetFx",
                },
                verify=ca_file,
                timeout=600,
            )
            text = response.text
            with lock:
                batches[0] += 1
            if response.status_code != 202 or text.count("HTTP/1.1 204") != len(entities):
                errors.append(f"{table}/{partition}: HTTP {response.status_code} {text[:300]!r}")
                return False
        return True

    steps = [step for job in jobs for step in job]
    rows = sum(step[2] for step in steps)
    started = time.monotonic()
    threads = [threading.Thread(target=worker, name=f"ingest-{n}") for n in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.monotonic() - started
    if errors:
        raise RuntimeError(f"raw ingest failed: {errors[0]}")
    sizes = sorted((step[2] for step in steps), reverse=True)
    return {
        "rows": rows,
        "tables": len({step[0] for step in steps}),
        "transactions": batches[0],
        "partitions": len(steps),
        "largest_partition_rows": sizes[0] if sizes else 0,
        "concurrency": concurrency,
        "wall_seconds": round(wall, 3),
        "rows_per_second": round(rows / wall, 1) if wall else None,
    }
