"""Settings: defaults, and a clear error naming the setting for every malformed value."""

from __future__ import annotations

import pytest

from shared.config import InventorySource, load_settings
from shared.errors import ConfigError

URI = {"AUDIT_TABLE_SERVICE_URI": "https://acct.table.core.windows.net/"}


def test_defaults() -> None:
    s = load_settings(URI)
    assert s.schedule == "0 0 2 * * *"
    assert s.arm_endpoint == "https://management.azure.com"
    assert s.arm_scope == "https://management.azure.com/.default"
    assert s.table_service_uri == "https://acct.table.core.windows.net"
    assert s.results_table == "ClientCertAudit"
    assert s.subscriptions == ()
    assert s.retention_days == 400
    assert s.inventory_source is InventorySource.ARM


def test_subscriptions_are_parsed_and_deduplicated() -> None:
    s = load_settings({**URI, "AUDIT_SUBSCRIPTIONS": " 11111111-1111-1111-1111-111111111111,11111111-1111-1111-1111-111111111111;"})
    assert s.subscriptions == ("11111111-1111-1111-1111-111111111111",)


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({}, "AUDIT_TABLE_SERVICE_URI"),
        ({**URI, "AUDIT_TABLE_CONNECTION_STRING": "AccountName=a;TableEndpoint=https://x"}, "AUDIT_TABLE_CONNECTION_STRING"),
        ({"AUDIT_TABLE_SERVICE_URI": "http://acct.table.core.windows.net"}, "AUDIT_TABLE_SERVICE_URI"),
        ({"AUDIT_TABLE_SERVICE_URI": "not a url"}, "AUDIT_TABLE_SERVICE_URI"),
        ({**URI, "AUDIT_ARM_ENDPOINT": "management.azure.com"}, "AUDIT_ARM_ENDPOINT"),
        ({**URI, "AUDIT_RESULTS_TABLE": "bad-name!"}, "AUDIT_RESULTS_TABLE"),
        ({**URI, "AUDIT_LATEST_TABLE": "1abc"}, "AUDIT_LATEST_TABLE"),
        ({**URI, "AUDIT_SCHEDULE": "every night"}, "AUDIT_SCHEDULE"),
        ({**URI, "AUDIT_SCHEDULE": "0 2 * * *"}, "AUDIT_SCHEDULE"),
        ({**URI, "AUDIT_SUBSCRIPTIONS": "prod"}, "AUDIT_SUBSCRIPTIONS"),
        ({**URI, "AUDIT_RETENTION_DAYS": "forever"}, "AUDIT_RETENTION_DAYS"),
        ({**URI, "AUDIT_CONCURRENCY": "0"}, "AUDIT_CONCURRENCY"),
        ({**URI, "AUDIT_INVENTORY_SOURCE": "graph"}, "AUDIT_INVENTORY_SOURCE"),
    ],
)
def test_bad_settings_name_the_setting(env: dict[str, str], names: str) -> None:
    with pytest.raises(ConfigError, match=names):
        load_settings(env)


@pytest.mark.parametrize("schedule", ["0 0 2 * * *", "0 */30 * * * *", "0 0 2 * * Mon-Fri", "0 15 1,13 * * 1-5"])
def test_valid_schedules(schedule: str) -> None:
    assert load_settings({**URI, "AUDIT_SCHEDULE": schedule}).schedule == schedule
