"""Fixtures of the emulator's own tests: a fresh emulator per test (cheap: in-memory data, a free port)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tools.emulator import EmulatorConfig, EmulatorServer

from ._client import AmlClient


@pytest.fixture
def emu() -> Iterator[EmulatorServer]:
    with EmulatorServer(EmulatorConfig(page_size=2, seed=1)) as server:
        yield server


@pytest.fixture
def aml(emu: EmulatorServer) -> Iterator[AmlClient]:
    """A client holding a token obtained through the emulator's managed-identity endpoint."""
    client = AmlClient(emu)
    yield client
    client.close()
