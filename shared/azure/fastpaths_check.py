"""The self-checks behind :mod:`shared.azure.fastpaths`: one per shortcut, run once per process, local.

Each is handed the module whose functions it drives (``fastpaths``), so the checks import nothing of
it: the two modules do not import each other.

Each returns ``None`` when the SDK internal its shortcut uses is what the shortcut expects, or a
short description of what is not. None touches the network: the table check drives a table client
built here through its real pipeline against canned answers (a ``requests`` adapter), which costs a
few milliseconds once.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Callable
from datetime import UTC, datetime
from types import ModuleType
from typing import Any

import requests
import requests.adapters
import urllib3
from azure.core.credentials import AzureNamedKeyCredential
from azure.core.pipeline.transport import RequestsTransport
from azure.data.tables import EdmType, EntityProperty, TableClient

#: A made-up key: the canned answers below never check a signature.
_KEY = base64.b64encode(bytes(64)).decode("ascii")
_HOST = "https://127.0.0.1:9"  # discard: never dialled, the adapter answers first
_TABLE = "selfcheck"
_ETAG = "W/\"datetime'2025-03-04T05%3A06%3A07.123456Z'\""
#: Every type the fast $batch writer serialises itself, keys that need escaping, a non-BMP character.
SAMPLE: dict[str, Any] = {
    "PartitionKey": "run_00001'q",
    "RowKey": "|subscriptions|s|resourcegroups|rg-café-(x) %27|sites|a😀",
    "Text": "it's é ü リソース 😀",
    "Empty": "",
    "Flag": True,
    "Small": -(2**31),
    "Big": 2**40,
    "Ratio": 0.1,
    "At": datetime(2025, 3, 4, 5, 6, 7, 123456, tzinfo=UTC),
    "Nothing": None,
}


class _Canned(requests.adapters.BaseAdapter):
    """A ``requests`` adapter that answers from ``answer`` and records what was sent."""

    def __init__(self, answer: Callable[[requests.PreparedRequest], tuple[int, dict[str, str], bytes]]) -> None:
        super().__init__()
        self.answer = answer
        self.sent: list[requests.PreparedRequest] = []

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> requests.Response:
        self.sent.append(request)
        status, headers, body = self.answer(request)
        raw = urllib3.HTTPResponse(
            body=io.BytesIO(body), headers=headers, status=status, preload_content=False, decode_content=False
        )
        return requests.adapters.HTTPAdapter().build_response(request, raw)

    def close(self) -> None:
        """Nothing to release."""


def _table_answer(request: requests.PreparedRequest) -> tuple[int, dict[str, str], bytes]:
    """Two pages of one entity each for a query, a two-part success for a ``$batch``."""
    url = str(request.url)
    if request.method == "POST" and url.endswith("/$batch"):
        part = (
            "--changesetresponse_x\r\nContent-Type: application/http\r\n\r\nHTTP/1.1 204 No Content\r\n"
            f"ETag: {_ETAG}\r\n\r\n"
        )
        body = f"--batchresponse_x\r\n{part}{part}--changesetresponse_x--\r\n--batchresponse_x--\r\n"
        return 202, {"Content-Type": "multipart/mixed; boundary=batchresponse_x"}, body.encode()
    more = "NextRowKey" not in url
    headers = {"Content-Type": "application/json;odata=nometadata"}
    if more:
        headers["x-ms-continuation-NextPartitionKey"] = "p"
        headers["x-ms-continuation-NextRowKey"] = "r2"
    value = [{"PartitionKey": "p", "RowKey": "r1" if more else "r2"}]
    return 200, headers, json.dumps({"value": value}).encode()


def check_table_request(fast: ModuleType) -> str | None:
    """``TableClient._client.send_request`` exists and sends our requests through the client's
    own pipeline (signed, versioned), and our query and ``$batch`` code reads its answers."""
    adapter = _Canned(_table_answer)
    session = requests.Session()
    session.mount("https://", adapter)
    transport = RequestsTransport(session=session, session_owner=False)
    credential = AzureNamedKeyCredential("selfcheck", _KEY)
    with TableClient(endpoint=_HOST, table_name=_TABLE, credential=credential, transport=transport) as table:
        if not callable(getattr(getattr(table, "_client", None), "send_request", None)):
            return "TableClient has no _client.send_request"
        rows = list(fast.query_json_fast(table, "PartitionKey eq 'p'"))
        if [row.get("RowKey") for row in rows] != ["r1", "r2"]:
            return f"a query through it read {rows!r} instead of two pages"
        entities = [dict(SAMPLE), dict(SAMPLE, RowKey="second")]
        bodies = [fast.odata_entity(e) or "" for e in entities]
        fast.send_upsert_batch(table, entities, bodies)
        etags = fast.send_conditional_batch(table, entities, bodies, [_ETAG, None])
        if etags != [_ETAG, _ETAG]:
            return f"a conditional $batch read back the ETags {etags!r}"
        expected_version = table.api_version
    if len(adapter.sent) != 4:
        return f"sent {len(adapter.sent)} requests for a two-page query and two $batch"
    for sent in adapter.sent:
        if not str(sent.headers.get("Authorization", "")).startswith("SharedKey "):
            return "a request it sent was not signed by the client's pipeline"
        if sent.headers.get("x-ms-version") != expected_version:
            return "a request it sent lost its x-ms-version header"
    return None


def check_batch_body(fast: ModuleType) -> str | None:
    """Our entity JSON is what azure-data-tables' serializer makes of the same entity (less the
    ``Edm.String`` annotations it adds, which JSON strings imply; an int beyond 32 bits given to it
    as Int64, which it refuses otherwise). Without that serializer there is nothing to compare."""
    try:
        from azure.data.tables._serialize import _add_entity_properties
    except ImportError:
        return None
    ours = json.loads(fast.odata_entity(SAMPLE) or "null")
    typed = {k: EntityProperty(v, EdmType.INT64) if k == "Big" else v for k, v in SAMPLE.items()}
    theirs = {
        key: value
        for key, value in _add_entity_properties(typed).items()
        if not (key.endswith("@odata.type") and value == EdmType.STRING.value)
    }
    if ours != theirs:
        differ = sorted(k for k in set(ours) | set(theirs) if ours.get(k) != theirs.get(k))
        return f"odata_entity and the SDK's serializer differ on {', '.join(differ)}"
    return None
