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


def raw_ingest(
    service_uri: str,
    table: str,
    token: str,
    ca_file: str,
    rows: int,
    *,
    concurrency: int = 8,
    partition_rows: int = 1000,
) -> dict[str, Any]:
    """Create ``table`` and write ``rows`` rows into it; returns the figures."""
    headers = {"Authorization": f"Bearer {token}", "x-ms-version": "2019-02-02", "Accept": "application/json"}
    with requests.Session() as session:
        created = session.post(
            f"{service_uri}/Tables",
            json={"TableName": table},
            headers={**headers, "Content-Type": "application/json", "DataServiceVersion": "3.0"},
            verify=ca_file,
            timeout=60,
        )
        created.raise_for_status()
    batches = (rows + BATCH - 1) // BATCH
    partitions = max(1, (rows + partition_rows - 1) // partition_rows)
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    table_url = f"{service_uri}/{table}"
    next_batch = [0]
    lock = threading.Lock()
    errors: list[str] = []

    def worker() -> None:
        with requests.Session() as session:
            while True:
                with lock:
                    index = next_batch[0]
                    next_batch[0] += 1
                if index >= batches or errors:
                    return
                partition = f"p{index % partitions:05d}"
                first = index * BATCH
                entities = [sample_entity(i, partition, now) for i in range(first, min(rows, first + BATCH))]
                boundary, body = batch_body(table_url, entities)
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
                    timeout=120,
                )
                text = response.text
                if response.status_code != 202 or text.count("HTTP/1.1 204") != len(entities):
                    errors.append(f"batch {index}: HTTP {response.status_code} {text[:300]!r}")

    started = time.monotonic()
    threads = [threading.Thread(target=worker, name=f"ingest-{n}") for n in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.monotonic() - started
    if errors:
        raise RuntimeError(f"raw ingest failed: {errors[0]}")
    return {
        "rows": rows,
        "transactions": batches,
        "partitions": partitions,
        "concurrency": concurrency,
        "wall_seconds": round(wall, 3),
        "rows_per_second": round(rows / wall, 1) if wall else None,
    }
