"""`make bench`, discovery scenario (contract 6.2): a discovered export over 50 workspaces.

The emulator's many-workspace tenant (48 + the 2 demo workspaces over 4 subscriptions) at 20 ms per call;
one subject-scoped ``discover`` export through ``dsr process`` (a subprocess, spawn to exit), with the
workspaces in parallel (``DSR_WORKSPACE_CONCURRENCY``, default) against the same workspaces one after another
(``DSR_WORKSPACE_CONCURRENCY=1``). Target: parallel <= 0.25 x one after another. A third row runs under a
per-subscription ARM rate limit (the emulator's token bucket per subscription), against its ideal: the
busiest subscription's admitted calls at that rate. Nothing here is asserted by `make test`.

    python -m tools.bench_discovery [--workspaces 50] [--latency-ms 20]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tools.azurite import ROOT, Azurite
from tools.emulator import DEMO_SUBSCRIPTION, JANE, TENANT_SUBSCRIPTIONS, EmulatorConfig, EmulatorServer

TARGET_RATIO = 0.25
KINDS = ["workspace", "computes", "datastores", "models", "experiments", "runs"]
RATE, BURST = 40.0, 10  # per subscription


@dataclass
class Row:
    label: str
    wall: float
    status: str | None
    workspaces: int
    calls: int
    throttled: int
    busiest: int  # admitted ARM calls of the busiest subscription


def _dsr() -> str:
    candidate = Path(sys.executable).with_name("dsr")
    return str(candidate) if candidate.exists() else "dsr"


def _request() -> dict[str, Any]:
    return {
        "schemaVersion": "1",
        "requestId": f"BENCH-DISCOVER-{uuid.uuid4().hex[:10]}",
        "operation": "export",
        "discover": {"subscriptions": [DEMO_SUBSCRIPTION, *TENANT_SUBSCRIPTIONS]},
        "scope": "subject",
        "subject": {"objectId": JANE.object_id, "upn": JANE.upn},
        "resourceKinds": KINDS,
        "requestedBy": "make bench",
    }


def run(label: str, env: dict[str, str], emulator: EmulatorServer, *, workspace_concurrency: int | None) -> Row:
    env = dict(env)
    if workspace_concurrency is not None:
        env["DSR_WORKSPACE_CONCURRENCY"] = str(workspace_concurrency)
    emulator.clear_requests()
    started = time.monotonic()
    proc = subprocess.run(
        [_dsr(), "process", "-"], input=json.dumps(_request()).encode(), env=env, capture_output=True, check=False, cwd=ROOT
    )
    wall = time.monotonic() - started
    status, workspaces = None, 0
    try:
        data = json.loads(proc.stdout.decode().strip().splitlines()[-1])["data"]
        status, workspaces = data["status"], len(data.get("workspaces") or [])
    except (ValueError, IndexError, KeyError, TypeError):
        sys.stderr.write(proc.stderr.decode(errors="replace")[-2000:])
    log = [r for r in emulator.requests() if r.get("family") != "msi"]
    per_sub: Counter[str] = Counter()
    for r in log:
        parts = str(r.get("path", "")).split("/")
        if r.get("status") != 429 and "subscriptions" in parts:
            per_sub[parts[parts.index("subscriptions") + 1].lower()] += 1
    return Row(
        label,
        wall,
        status,
        workspaces,
        len(log),
        sum(1 for r in log if r.get("status") == 429),
        max(per_sub.values(), default=0),
    )


def discovery_bench(workspaces: int = 50, latency_ms: int = 20) -> dict[str, Any]:
    """The scenario's measurements (wall times in seconds) and its verdict against the target."""
    config = EmulatorConfig(tenant_workspaces=max(0, workspaces - 2), latency_ms=latency_ms)
    with Azurite() as azurite, EmulatorServer(config) as emulator:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("DSR_")},
            **emulator.settings(),
            "DSR_STORAGE": azurite.connection_string,
            "DSR_LOG_LEVEL": "WARNING",
        }
        env.pop("ServiceBusConnection__fullyQualifiedNamespace", None)
        parallel = run("parallel (default)", env, emulator, workspace_concurrency=None)
        serial = run("one after another", env, emulator, workspace_concurrency=1)
        emulator.configure(rate=RATE, burst=BURST, rate_per_subscription=True)
        limited = run(f"parallel, ARM {RATE:g}/s per subscription", env, emulator, workspace_concurrency=None)
    ratio = parallel.wall / serial.wall if serial.wall else None
    ideal = max(0.0, (limited.busiest - BURST) / RATE)
    return {
        "rows": [parallel, serial, limited],
        "ratio": ratio,
        "ok": ratio is not None and ratio <= TARGET_RATIO and parallel.status == "completed",
        "rate_ideal": ideal,
    }


def render(result: dict[str, Any], workspaces: int, latency_ms: int) -> str:
    lines = [
        f"Discovered export: {workspaces} workspaces, {latency_ms} ms per call (dsr process, spawn to exit)",
        f"{'run':<38} {'wall s':>8} {'status':<20} {'workspaces':>10} {'calls':>7} {'429s':>5}",
    ]
    for row in result["rows"]:
        lines.append(
            f"{row.label:<38} {row.wall:>8.2f} {row.status or '-':<20} {row.workspaces:>10} {row.calls:>7} {row.throttled:>5}"
        )
    ratio = result["ratio"]
    lines.append(
        f"parallel / one after another = {ratio:.2f} (target <= {TARGET_RATIO}): {'OK' if result['ok'] else 'MISSED'}"
        if ratio is not None
        else "ratio: n/a"
    )
    limited = result["rows"][2]
    lines.append(
        f"rate-limited: {limited.wall:.2f} s vs the busiest subscription's ideal {result['rate_ideal']:.2f} s "
        f"({limited.busiest} admitted calls at {RATE:g}/s after a burst of {BURST})"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench_discovery", description=__doc__.splitlines()[0])
    parser.add_argument("--workspaces", type=int, default=50)
    parser.add_argument("--latency-ms", type=int, default=20)
    args = parser.parse_args(argv)
    result = discovery_bench(args.workspaces, args.latency_ms)
    print(render(result, args.workspaces, args.latency_ms))
    return 0


if __name__ == "__main__":
    sys.exit(main())
