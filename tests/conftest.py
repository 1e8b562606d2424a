"""Shared fixtures: Azurite (real blob storage) and the workspace emulator (real HTTP, real token protocol).

Both start once per test session on free loopback ports; each test gets the emulator reset and its own
export/audit containers, and the process environment pointing the app at both.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.bundles import DEMO_TARGET, RecordingPublisher, app_services
from tools.azurite import Azurite
from tools.emulator import EmulatorServer

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="session")
def azurite() -> Iterator[Azurite]:
    with Azurite() as server:
        yield server


@pytest.fixture(scope="session")
def emulator_server() -> Iterator[EmulatorServer]:
    with EmulatorServer() as server:
        yield server


@pytest.fixture
def emulator(emulator_server: EmulatorServer) -> Iterator[EmulatorServer]:
    emulator_server.configure(
        faults={},
        latency_ms=0,
        rate=None,
        burst=None,
        drop_delete_response=[],
        retry_after=0,
        lro_polls=1,
        service_delete_polls=1,
        scale=1.0,
        seed=1,
        page_size=2,
    )
    emulator_server.reset()
    yield emulator_server


@pytest.fixture
def dsr_env(emulator: EmulatorServer, azurite: Azurite, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, str]:
    """The app's settings (environment) pointing at Azurite and the emulator; no local.settings.json."""
    suffix = uuid.uuid4().hex[:10]
    env = {
        **emulator.settings(),
        "DSR_STORAGE": azurite.connection_string,
        "DSR_EXPORT_CONTAINER": f"exp-{suffix}",
        "DSR_STATE_CONTAINER": f"state-{suffix}",
        "DSR_AUDIT_CONTAINER": f"audit-{suffix}",
        "DSR_MAX_RETRY_AFTER_SECONDS": "2",
        "DSR_LRO_DEADLINE_SECONDS": "30",
    }
    for name in (
        "ServiceBusConnection__fullyQualifiedNamespace",
        "DSR_AUTH",
        "DSR_MANAGED_IDENTITY_CLIENT_ID",
        "MSI_ENDPOINT",
        "MSI_SECRET",
        "IDENTITY_SERVER_THUMBPRINT",
        "IMDS_ENDPOINT",
    ):
        monkeypatch.delenv(name, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)
    return env


@pytest.fixture
def publisher() -> RecordingPublisher:
    return RecordingPublisher()


@pytest.fixture
def services(dsr_env: dict[str, str], publisher: RecordingPublisher) -> Any:
    return app_services(publisher)


@pytest.fixture
def make_request() -> Callable[..., dict[str, Any]]:
    def make(**overrides: Any) -> dict[str, Any]:
        body: dict[str, Any] = {
            "schemaVersion": "1",
            "requestId": f"TCK-{uuid.uuid4().hex[:12]}",
            "operation": "export",
            "targets": [dict(DEMO_TARGET)],
            "requestedBy": "pytest",
        }
        body.update(overrides)
        return body

    return make
