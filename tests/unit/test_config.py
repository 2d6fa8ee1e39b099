"""Settings: defaults, and a clear error naming the setting for every malformed value."""

from __future__ import annotations

import pytest

from shared.core.config import InventorySource, load_settings
from shared.core.errors import ConfigError

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


def test_an_unset_setting_takes_the_settings_default() -> None:
    """One source of defaults: what load_settings gives for an empty environment is the dataclass's."""
    from dataclasses import fields

    from shared.core.config import DEFAULTS

    loaded = load_settings(URI)
    differ = {f.name for f in fields(loaded) if getattr(loaded, f.name) != getattr(DEFAULTS, f.name)}
    assert differ == {"table_service_uri"}


def test_one_subscription_id_rule_for_settings_options_and_scopes() -> None:
    """AUDIT_SUBSCRIPTIONS, --subscription and an exemption's scope accept and refuse the same ids."""
    import argparse

    from shared.azure.exemptions import validate_scope
    from shared.commands.common import UnknownSubscription, resolve_subscription, subscription_arg
    from shared.core.errors import ExemptionError

    good = " 1A2B3C4D-0000-4000-8000-00000000000F "
    assert load_settings({**URI, "AUDIT_SUBSCRIPTIONS": good}).subscriptions == (good.strip().lower(),)
    assert subscription_arg(good) == good.strip().lower()
    assert validate_scope(f"/subscriptions/{good.strip()}") == f"/subscriptions/{good.strip()}"
    for bad in ("-" * 36, "1a2b3c4d00004000800000000000000f", "{1a2b3c4d-0000-4000-8000-00000000000f}", "prod"):
        with pytest.raises(ConfigError, match="AUDIT_SUBSCRIPTIONS"):
            load_settings({**URI, "AUDIT_SUBSCRIPTIONS": bad})
        assert subscription_arg(bad) == bad  # not an id: a name (or its start), looked up once the tables are open
        with pytest.raises(UnknownSubscription, match="No subscription the audit has read"):
            resolve_subscription(bad, {})
    with pytest.raises(argparse.ArgumentTypeError):
        subscription_arg("  ")
        with pytest.raises(ExemptionError):
            validate_scope(f"/subscriptions/{bad}")
