"""Fixtures of the security tests: an attacker that records what reaches it, and a tampering reverse proxy."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.loopback import LoopbackServer, Reply, Seen, forward


@pytest.fixture
def attacker() -> Iterator[LoopbackServer]:
    """A server on another loopback port: any request it records is a token sent where it must not go."""
    with LoopbackServer() as server:
        yield server


@pytest.fixture
def proxy(emulator: Any, dsr_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[LoopbackServer]:
    """A reverse proxy in front of the workspace emulator; the app's endpoint settings point at it.

    Set ``proxy.intercept = lambda seen: Reply(...) or None`` to answer in the emulator's place, and
    ``proxy.tamper = lambda seen, reply: reply`` to rewrite a response on its way to the app (the emulator
    builds its links from the Host header, so untouched responses point back at the proxy).
    """
    upstream = emulator.base_url.removeprefix("http://")

    def route(seen: Seen, server: LoopbackServer) -> Reply:
        early = server.intercept(seen) if server.intercept else None
        if early is not None:
            return early  # answered by the proxy: the emulator never sees the request
        reply = forward(upstream, seen, server.netloc)
        return server.tamper(seen, reply) if server.tamper else reply

    with LoopbackServer(route) as server:
        for name, value in emulator.settings().items():
            if name.startswith("DSR_") and name.endswith("_ENDPOINT"):
                monkeypatch.setenv(name, value.replace(emulator.base_url, server.base_url))
        yield server
