"""`make bench`, discovery scenario (issue 14.7, contract 6.2): a discovered export over many workspaces.

The emulator's many-workspace tenant (N - 2 + the 2 demo workspaces over 4 subscriptions) at 20 ms per
call; one subject-scoped ``discover`` export through ``dsr process`` (a subprocess, spawn to exit), with the
workspaces in parallel (``DSR_WORKSPACE_CONCURRENCY``, default) against the same workspaces one after another
(``DSR_WORKSPACE_CONCURRENCY=1``), run in turns (``--repeat``; medians; one warm-up run first), at 50
workspaces (target: parallel <= 0.25 x one after another) and at a dozen (issue 14's Done-when: well under).
A last row runs the 50 under an ARM rate limit per subscription (the emulator's token bucket per
subscription for ARM calls, as the governor keys ARM), against its ideal: the longer of the unlimited run
and the busiest subscription's admitted ARM calls, less the burst, at the rate. CPU seconds of the `dsr`
process and of Azurite, and the load average, come with the figures: on a shared 2-core machine the
parallel run is bound by CPU, not by the emulated latency.

Writes ``bench-results/discovery.{md,json}``. Nothing here is asserted by `make test`.

    python -m tools.bench_discovery [--workspaces 50] [--dozen 12] [--latency-ms 20] [--repeat 2] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tools.azurite import ROOT, Azurite
from tools.bench import with_bytecode_cache
from tools.emulator import DEMO_SUBSCRIPTION, JANE, TENANT_SUBSCRIPTIONS, EmulatorConfig, EmulatorServer

TARGET_RATIO = 0.25
KINDS = ["workspace", "computes", "datastores", "models", "experiments", "runs"]
RATE, BURST = 40.0, 10  # ARM calls per second and burst, per subscription


@dataclass
class Run:
    label: str
    wall: float
    status: str | None
    workspaces: int
    calls: int
    throttled: int
    dsr_cpu: float  # user + system seconds of the dsr process
    azurite_cpu: float
    emulator_cpu: float  # user + system seconds of this process (the emulator's threads) meanwhile
    busiest_arm: int = 0  # admitted ARM calls of the busiest subscription
    arm_span: float = 0.0  # first to last ARM answer (s)


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


def _cpu_of(pid: int | None) -> float:
    """User + system CPU seconds of a process and its direct children (Azurite is node behind a launcher)."""
    if pid is None:
        return 0.0
    total = 0.0
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        children = []
    for each in [pid, *map(int, children)]:
        try:
            fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            pass
    return total


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def run(label: str, env: dict[str, str], emulator: EmulatorServer, azurite: Azurite, *, concurrency: int | None) -> Run:
    env = dict(env)
    if concurrency is not None:
        env["DSR_WORKSPACE_CONCURRENCY"] = str(concurrency)
    emulator.clear_requests()
    azurite_pid = azurite.process.pid if azurite.process else None
    cpu0, az0 = resource.getrusage(resource.RUSAGE_CHILDREN), _cpu_of(azurite_pid)
    own0 = resource.getrusage(resource.RUSAGE_SELF)
    started = time.monotonic()
    proc = subprocess.run(
        [_dsr(), "process", "-"], input=json.dumps(_request()).encode(), env=env, capture_output=True, check=False, cwd=ROOT
    )
    wall = time.monotonic() - started
    cpu1, az1 = resource.getrusage(resource.RUSAGE_CHILDREN), _cpu_of(azurite_pid)
    own1 = resource.getrusage(resource.RUSAGE_SELF)
    status, workspaces = None, 0
    try:
        data = json.loads(proc.stdout.decode().strip().splitlines()[-1])["data"]
        status, workspaces = data["status"], len(data.get("workspaces") or [])
    except (ValueError, IndexError, KeyError, TypeError):
        sys.stderr.write(proc.stderr.decode(errors="replace")[-2000:])
    log = [r for r in emulator.requests() if r.get("family") != "msi"]
    per_sub: Counter[str] = Counter()
    arm_times = []
    for r in log:
        parts = str(r.get("path", "")).split("/")
        if r.get("family") == "arm" and r.get("status") != 429 and "subscriptions" in parts:
            per_sub[parts[parts.index("subscriptions") + 1].lower()] += 1
            arm_times.append(float(r["time"]))
    return Run(
        label=label,
        wall=wall,
        status=status,
        workspaces=workspaces,
        calls=len(log),
        throttled=sum(1 for r in log if r.get("status") == 429),
        dsr_cpu=cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime,
        azurite_cpu=az1 - az0,
        emulator_cpu=own1.ru_utime + own1.ru_stime - own0.ru_utime - own0.ru_stime,
        busiest_arm=max(per_sub.values(), default=0),
        arm_span=(max(arm_times) - min(arm_times)) if arm_times else 0.0,
    )


def pair(size: int, latency_ms: int, repeat: int, env: dict[str, str], azurite: Azurite, *, limited: bool) -> dict[str, Any]:
    """Parallel and one-after-another runs in turns over ``size`` workspaces; medians and their ratio."""
    with EmulatorServer(EmulatorConfig(tenant_workspaces=max(0, size - 2), latency_ms=latency_ms)) as emulator:
        settings = {**env, **emulator.settings()}
        run("warm-up", settings, emulator, azurite, concurrency=None)  # the first run of a tenant is slower: not counted
        parallel: list[Run] = []
        serial: list[Run] = []
        for _ in range(repeat):
            parallel.append(run(f"{size} workspaces, parallel (default)", settings, emulator, azurite, concurrency=None))
            serial.append(run(f"{size} workspaces, one after another", settings, emulator, azurite, concurrency=1))
        rate: Run | None = None
        if limited:
            emulator.configure(rate=RATE, burst=BURST, rate_per_subscription=True, rate_families=["arm"])
            rate = run(
                f"{size} workspaces, parallel, ARM {RATE:g}/s per subscription", settings, emulator, azurite, concurrency=None
            )
    ratios = [p.wall / s.wall for p, s in zip(parallel, serial, strict=True) if s.wall]
    return {
        "workspaces": size,
        "parallel": [asdict(r) for r in parallel],
        "serial": [asdict(r) for r in serial],
        "parallel_wall": statistics.median(r.wall for r in parallel),
        "serial_wall": statistics.median(r.wall for r in serial),
        "ratio": statistics.median(ratios) if ratios else None,
        "completed": all(r.status == "completed" and r.workspaces == size for r in parallel + serial),
        "rate_limited": asdict(rate) if rate else None,
        "rate_ideal": max(0.0, (rate.busiest_arm - BURST) / RATE) if rate else None,
    }


def discovery_bench(workspaces: int = 50, dozen: int = 12, latency_ms: int = 20, repeat: int = 2) -> dict[str, Any]:
    """The scenario's measurements (wall times in seconds) and its verdict against the target."""
    load_before = load_average()
    with Azurite() as azurite:
        env = with_bytecode_cache(
            {
                **{k: v for k, v in os.environ.items() if not k.startswith("DSR_")},
                "DSR_STORAGE": azurite.connection_string,
                "DSR_LOG_LEVEL": "WARNING",
            }
        )
        env.pop("ServiceBusConnection__fullyQualifiedNamespace", None)
        sizes = [pair(workspaces, latency_ms, repeat, env, azurite, limited=True)]
        if dozen:
            sizes.append(pair(dozen, latency_ms, repeat, env, azurite, limited=False))
    main = sizes[0]
    return {
        "latency_ms": latency_ms,
        "repeat": repeat,
        "sizes": sizes,
        "target_ratio": TARGET_RATIO,
        "ok": main["ratio"] is not None and main["ratio"] <= TARGET_RATIO and main["completed"],
        "load_average": {"before": load_before, "after": load_average()},
    }


def render(result: dict[str, Any]) -> str:
    lines = [
        f"### Discovered export ({result['latency_ms']} ms per call; `dsr process`, spawn to exit; "
        f"median of {result['repeat']} runs in turns; load average {result['load_average']['before']} before, "
        f"{result['load_average']['after']} after)",
        "",
        "| run | wall (s) | ratio | dsr CPU (s) | Azurite CPU (s) | emulator CPU (s) | calls | 429s | status |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for size in result["sizes"]:
        for key in ("parallel", "serial"):
            runs = size[key]
            median = statistics.median
            ratio = f"{size['ratio']:.2f}x" if key == "parallel" and size["ratio"] is not None else ""
            statuses = ", ".join(sorted({f"{r['status']} ({r['workspaces']})" for r in runs}))
            lines.append(
                f"| {runs[0]['label']} | {size[f'{key}_wall']:.2f} | {ratio} | {median(r['dsr_cpu'] for r in runs):.2f} "
                f"| {median(r['azurite_cpu'] for r in runs):.2f} | {median(r['emulator_cpu'] for r in runs):.2f} "
                f"| {runs[0]['calls']} | {runs[0]['throttled']} | {statuses} |"
            )
        rate = size["rate_limited"]
        if rate:
            lines.append(
                f"| {rate['label']} | {rate['wall']:.2f} | | {rate['dsr_cpu']:.2f} | {rate['azurite_cpu']:.2f} "
                f"| {rate['emulator_cpu']:.2f} | {rate['calls']} "
                f"| {rate['throttled']} | {rate['status']} ({rate['workspaces']}) |"
            )
    main = result["sizes"][0]
    lines.append("")
    if main["ratio"] is not None:
        verdict = "PASS" if result["ok"] else "MISS"
        lines.append(
            f"{main['workspaces']} workspaces: parallel / one after another = {main['ratio']:.2f}x "
            f"(target <= {result['target_ratio']}x): {verdict}."
        )
        runs = main["parallel"]
        cpu = statistics.median(r["dsr_cpu"] + r["azurite_cpu"] + r["emulator_cpu"] for r in runs)
        cores = os.cpu_count() or 1
        lines.append(
            f"CPU floor of the parallel run: dsr + Azurite + emulator = {cpu:.2f} CPU-s over {cores} cores = "
            f"{cpu / cores:.2f} s of wall at the least, against {result['target_ratio'] * main['serial_wall']:.2f} s "
            f"for the target."
        )
    for size in result["sizes"][1:]:
        if size["ratio"] is not None:
            lines.append(f"{size['workspaces']} workspaces: parallel / one after another = {size['ratio']:.2f}x.")
    rate = main["rate_limited"]
    if rate:
        ideal = max(main["parallel_wall"], main["rate_ideal"], 1e-9)
        lines.append(
            f"ARM-limited: wall {rate['wall']:.2f} s ({rate['throttled']} x 429) against {main['parallel_wall']:.2f} s "
            f"unlimited; the busiest subscription's {rate['busiest_arm']} ARM calls alone need {main['rate_ideal']:.2f} s "
            f"at {RATE:g}/s after a burst of {BURST}, so the ideal is the longer, {ideal:.2f} s ({rate['wall'] / ideal:.2f}x)."
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench_discovery", description=__doc__.splitlines()[0])
    parser.add_argument("--workspaces", type=int, default=50)
    parser.add_argument("--dozen", type=int, default=12, help="a second, smaller size (0: none)")
    parser.add_argument("--latency-ms", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--out", default=str(ROOT / "bench-results"), help="output directory")
    args = parser.parse_args(argv)
    result = discovery_bench(args.workspaces, args.dozen, args.latency_ms, max(1, args.repeat))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "discovery.json").write_text(json.dumps(result, indent=2) + "\n")
    report = render(result)
    (out / "discovery.md").write_text(report)
    print(report)
    print(f"written {out / 'discovery.json'} and {out / 'discovery.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
