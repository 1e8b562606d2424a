"""A paced or throttled service holds only its own lane: it never starves the calls to another service."""

from __future__ import annotations

import json
import re
import threading
from typing import Any

import pytest

from shared.domain.contract import parse_request
from shared.ports import ApiResponse
from shared.service.export import ExportTraversal
from shared.service.listing import Endpoints

pytestmark = pytest.mark.integration
_BELOW_WORKSPACE = re.compile(r"/workspaces/[^/?]+/")


class ArmHeldUntilRunHistoryMoves:
    """The real HTTP seam, except that every ARM call waits (as behind a paced limiter) until the run-history
    service has answered ``needed`` calls, or ``patience`` seconds passed."""

    def __init__(self, inner: Any, *, needed: int, patience: float = 10.0) -> None:
        self.inner = inner
        self.needed = needed
        self.patience = patience
        self.run_history_calls = 0
        self.released = threading.Event()
        self.released_by_run_history = False
        self.gave_up = False  # an ARM call waited its whole patience: run history was starved
        self._lock = threading.Lock()

    def get(self, url: str) -> ApiResponse:
        if "/arm/" in url and _BELOW_WORKSPACE.search(url):  # the workspace's own GET starts everything
            if not self.released.wait(self.patience):
                self.gave_up = True
            return self.inner.get(url)
        response = self.inner.get(url)
        if "/exp/" in url:
            with self._lock:
                self.run_history_calls += 1
                if self.run_history_calls >= self.needed and not self.released.is_set():
                    self.released_by_run_history = True
                    self.released.set()
        return response


def arm_first(catalog: Any) -> Any:
    """The catalog with its ARM kinds first. The workspace's lists start in the catalog's order and their
    children before the lists after them (depth-first pre-order), so with ARM first and no lanes, ARM would
    take every slot before run history's first list started."""
    kinds = dict(sorted(catalog.kinds.items(), key=lambda item: item[1].family != "arm"))
    return catalog.model_copy(update={"kinds": kinds})


def test_a_held_arm_lane_does_not_starve_run_history(services, emulator, make_request):
    # GIVEN an export of ARM kinds and run-history kinds, ARM's lists first in order, with two calls in flight
    # per lane, where every ARM call below the workspace is held until run history has answered 20 calls (ARM
    # kinds far outnumber the two slots)
    kinds = ["jobs", "modelContainers", "modelVersions", "schedules", "computes", "experiments", "runs", "metrics"]
    request = parse_request(json.dumps(make_request(resourceKinds=kinds)).encode())
    gate = ArmHeldUntilRunHistoryMoves(services.aml(), needed=20)
    traversal = ExportTraversal(
        request,
        catalog=arm_first(services.catalog),
        endpoints=Endpoints(services.settings.endpoints),
        aml=gate,
        store=services.bundles(),
        concurrency=2,
    )
    # WHEN it runs
    result = traversal.run()
    # THEN run history went on while ARM was held (the gate opened because of it, not after its patience ran
    # out), and the export still finished whole
    assert gate.released_by_run_history and not gate.gave_up, f"run history starved ({gate.run_history_calls} calls)"
    assert not result.errors
    counts = {k: v for t in result.targets for k, v in t.counts.items()}
    assert counts["runs"] > 0 and counts["jobs"] > 0
