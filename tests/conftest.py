"""Shared fixtures: TLS material, Azurite and ARM emulators (see ``tests/emulators``).

Session-scoped fixtures are per pytest-xdist worker (each worker is its own session), so every
worker gets its own CA, Azurite process and ports; nothing is shared between workers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.emulators.arm import ArmEmulator
from tests.emulators.azurite import Azurite
from tests.emulators.tenant import Tenant
from tests.emulators.tls import TlsMaterial, make_tls
from tests.harness import AuditHarness


@pytest.fixture(scope="session")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsMaterial:
    """A throwaway CA and a loopback server certificate, shared by every emulator of the session."""
    return make_tls(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory, tls: TlsMaterial) -> Iterator[Azurite]:
    """One in-memory Azurite (Table, HTTPS, ``--oauth basic``) per session; tests use unique table names."""
    with Azurite(tmp_path_factory.mktemp("azurite"), tls) as instance:
        yield instance


MakeArm = Callable[..., ArmEmulator]


@pytest.fixture
def make_arm(tls: TlsMaterial) -> Iterator[MakeArm]:
    """Factory ``make_arm(tenant, **options) -> ArmEmulator`` (started); all are stopped at teardown.

    Function-scoped because tests configure faults, paging and throttling per emulator.
    """
    started: list[ArmEmulator] = []

    def factory(tenant: Tenant, **options: Any) -> ArmEmulator:
        emulator = ArmEmulator(tenant, tls, **options).start()
        started.append(emulator)
        return emulator

    yield factory
    for emulator in started:
        emulator.stop()


MakeHarness = Callable[[ArmEmulator], AuditHarness]


@pytest.fixture
def harness_factory(
    azurite: Azurite, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> Iterator[MakeHarness]:
    """Factory ``harness_factory(arm) -> AuditHarness`` on the shared Azurite; its host log handler is removed at teardown."""
    made: list[AuditHarness] = []

    def make(arm: ArmEmulator) -> AuditHarness:
        harness = AuditHarness(arm, azurite, monkeypatch, caplog)
        logging.getLogger().addHandler(harness.host)
        made.append(harness)
        return harness

    yield make
    for harness in made:
        logging.getLogger().removeHandler(harness.host)
        harness.close()
