"""Estate text is made valid where ARM's JSON becomes a record: no lone surrogate gets past it."""

from __future__ import annotations

import json

import pytest

from shared.azure.sites import site_record
from shared.core.models import InventoryError, SiteRecord, valid_text

SUB = "00000000-0000-0000-0000-0000000000aa"
SITE = f"/subscriptions/{SUB}/resourceGroups/rg-web/providers/Microsoft.Web/sites/shop"
LONE = json.loads('"\\ud800"')  # what json.loads makes of an escape without its pair


@pytest.mark.parametrize(
    ("raw", "valid"),
    [
        ("plain", "plain"),
        ("café リソース 😀", "café リソース 😀"),
        (f"a{LONE}b", "a\ufffdb"),
        ("\udfff", "\ufffd"),
        ("\ud83d\ude00", "😀"),  # a pair spelled as two code points is its character
        ("\ud83d", "\ufffd"),
    ],
)
def test_valid_text(raw: str, valid: str) -> None:
    assert valid_text(raw) == valid
    valid_text(raw).encode("utf-8")  # every encoder takes it


def test_every_string_of_a_site_record_is_valid_text() -> None:
    raw = json.loads(
        json.dumps(
            {
                "id": SITE + "\\ud800",
                "type": "Microsoft.Web/sites",
                "kind": "app\\udc00",
                "location": "West\\ud801",
                "tags": {"owner\\ud802": "pay\\ud803ments", "env": "prod"},
                "properties": {
                    "state": "Running\\ud804",
                    "clientCertEnabled": True,
                    "clientCertMode": "Optional\\ud805",
                    "clientCertExclusionPaths": "/health\\ud806",
                    "publicNetworkAccess": "Enabled\\ud807",
                },
            }
        ).replace("\\\\u", "\\u")
    )
    assert LONE in raw["kind"] or "\udc00" in raw["kind"]
    record = site_record(raw)
    assert isinstance(record, SiteRecord)
    for name in SiteRecord.__slots__:
        value = getattr(record, name)
        texts = [v for pair in value for v in pair] if name == "tags" else [value]
        for text in texts:
            if isinstance(text, str):
                text.encode("utf-8")
    assert record.app_name == "shop\ufffd" and record.owner == ""
    assert dict(record.tags) == {"owner\ufffd": "pay\ufffdments", "env": "prod"}
    assert record.exclusion_paths == "/health\ufffd" and record.client_cert_mode == "Optional\ufffd"


def test_an_inventory_error_holds_valid_text() -> None:
    error = InventoryError(f"/subscriptions/{SUB}/x{LONE}", SUB, f"HTTP 403: denied {LONE}", f"rg{LONE}")
    assert (error.scope_id, error.message, error.resource_group) == (
        f"/subscriptions/{SUB}/x\ufffd",
        "HTTP 403: denied \ufffd",
        "rg\ufffd",
    )
