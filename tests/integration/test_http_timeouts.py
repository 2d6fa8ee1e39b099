"""Every Table and ARM request gives the service ``AUDIT_HTTP_TIMEOUT`` to answer, its TLS handshake
included; only the TCP connect has the short bound of its own (``http.CONNECTION_TIMEOUT_SECONDS``).

Under load the bench's audit failed on ``Read timed out. (read timeout=10)`` from Azurite with
``AUDIT_HTTP_TIMEOUT`` at 60: urllib3 times a new connection's TLS handshake (and the sending of a
request) by the *connection* timeout, 10 s, and words a handshake that outlasts it as a read
timeout. A loaded server accepts a connection at once and answers its handshake late: here a relay
(``tests/emulators/relay.py``) holds the server's first answer on every connection for ``HOLD``
seconds, longer than the connect bound (shrunk to keep the test short) and shorter than the setting.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from azure.core.exceptions import ServiceResponseTimeoutError
from azure.identity import ManagedIdentityCredential

from shared.azure import http
from shared.azure.inventory import ArmInventory
from shared.azure.resourcegraph import ResourceGraphInventory
from shared.azure.store import TableStore
from shared.core.config import load_settings
from shared.core.models import SiteRecord
from tests.emulators.relay import SlowHandshakes
from tests.emulators.tenant import Tenant

CONNECT = 0.5  # the TCP connect's bound, shrunk from 10 s
HOLD = 1.5  # the server's first answer on each connection: past CONNECT, within the setting
SETTING = "4"  # AUDIT_HTTP_TIMEOUT
SUB = "7e1a3b5c-0000-4000-8000-00000000a23e"
REQ = {"client_cert_enabled": True, "client_cert_mode": "Required"}


@pytest.fixture(autouse=True)
def short_connect(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http, "CONNECTION_TIMEOUT_SECONDS", CONNECT)


class AudienceOf:
    """The managed identity, asked for tokens for the emulator behind the relay (the token's audience
    is the endpoint it was asked for, and the relay's port is not the emulator's)."""

    def __init__(self, arm: Any) -> None:
        self._inner = ManagedIdentityCredential()
        self._scope = f"{arm.url}/.default"

    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        return self._inner.get_token(self._scope, **kwargs)


def store_behind(relay: SlowHandshakes, azurite: Any, timeout: str) -> TableStore:
    suffix = uuid.uuid4().hex[:8]
    connection_string = azurite.connection_string.replace(f":{azurite.port}/", f":{relay.port}/")
    settings = load_settings(
        {
            "AUDIT_TABLE_CONNECTION_STRING": connection_string,
            "AUDIT_HTTP_TIMEOUT": timeout,
            "AUDIT_RETRY_TOTAL": "0",
            "AUDIT_RESULTS_TABLE": f"Slow{suffix}",
            "AUDIT_LATEST_TABLE": f"SlowLatest{suffix}",
            "AUDIT_RUNS_TABLE": f"SlowRuns{suffix}",
            "AUDIT_EXEMPTIONS_TABLE": f"SlowEx{suffix}",
        }
    )
    return TableStore(settings, None)


@pytest.fixture
def slow_azurite(azurite: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[SlowHandshakes]:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(azurite.tls.ca_file))
    with SlowHandshakes(azurite.port, HOLD) as relay:
        yield relay


def test_a_table_request_waits_for_a_slow_handshake_up_to_the_setting(slow_azurite: SlowHandshakes, azurite) -> None:
    store = store_behind(slow_azurite, azurite, SETTING)
    try:
        store.ensure_tables()
        store.upsert_many(store.runs, [{"PartitionKey": "p", "RowKey": "r", "Value": 1}])
        assert store.get(store.runs, "p", "r")["Value"] == 1  # type: ignore[index]
    finally:
        store.close()
    assert slow_azurite.connections >= 1


def test_a_handshake_slower_than_the_setting_still_times_out(slow_azurite: SlowHandshakes, azurite) -> None:
    store = store_behind(slow_azurite, azurite, "1")  # AUDIT_HTTP_TIMEOUT below HOLD: bounded all the same
    try:
        with pytest.raises(ServiceResponseTimeoutError):
            store.ensure_tables()
    finally:
        store.close()


def test_arm_and_resource_graph_requests_wait_for_a_slow_handshake_up_to_the_setting(
    make_arm: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    tenant = Tenant()
    site = tenant.add_subscription(SUB, display_name="slow").add_site("rg-a", "app", **REQ)
    arm = make_arm(tenant)
    monkeypatch.delenv("AUDIT_SUBSCRIPTIONS", raising=False)
    with SlowHandshakes(arm.port, HOLD) as relay:
        # ARM behind the relay; the managed-identity endpoint (not an ARM request) answers at once
        env = {**arm.env(), "AUDIT_ARM_ENDPOINT": f"https://127.0.0.1:{relay.port}"}
        for key, value in {**env, "AUDIT_HTTP_TIMEOUT": SETTING, "AUDIT_RETRY_TOTAL": "0"}.items():
            monkeypatch.setenv(key, value)
        settings = load_settings(require_table=False)
        credential = AudienceOf(arm)
        for inventory in (ArmInventory(credential, settings), ResourceGraphInventory(credential, settings)):
            try:
                assert [s.subscription_id for s in inventory.subscriptions()] == [SUB]
                listed = [r for r in inventory.scan(SUB) if isinstance(r, SiteRecord)]
                assert list(dict.fromkeys(r.key for r in listed)) == [site.key], type(inventory).__name__
            finally:
                inventory.close()
        assert relay.connections >= 2
