"""`make bench`: whole-process measurements of `dsr process` against Azurite and the workspace emulator.

One run reports these measurements with their targets (issues 7 and 11), as a terminal table, as
``bench-results/latest.json`` and as ``bench-results/latest.md`` (the README carries the latter):

* sporadic faults: about one call in eleven answered 429 or 503 (Retry-After: 1) or cut, no rate limit;
  the default concurrency against concurrency 1, with the same retry policy;
* two limiters: ARM behind its own bucket (3 calls/s), run history unlimited; run history's span (first
  to last call) against the same export with no limit at all;

* latency-bound: 20 ms per call, no rate limit, ~1,000 calls; wall time at concurrency 1, 8, 16, 32 and
  the default, the speedup of the default over 1, and the lower bounds (the critical path, the longest
  chain of dependent calls, measured by walking the export in-process; and calls x latency / concurrency);
* rate-bound: the emulator's token bucket (150 calls/s, burst 30) at ~500 and ~2,000 calls, with
  ``x-ms-ratelimit-remaining-*`` on every answer, on ARM's only (the emulator's default, like Azure), or on none;
  the service's span (first to last call) against the ideal (admitted calls - burst) / rate, and the
  429s received (from the emulator's log);
* memory and state: peak RSS of the `dsr process` process (``/usr/bin/time -v``, else getrusage of a
  wrapper) and the largest checkpoint it saved, at two scales 10x apart;
* cold start: `import function_app` in a fresh interpreter, and the end-to-end time of a one-kind request.

Every figure is a `dsr process` subprocess (what an operator runs), timed from spawn to exit. Benchmarks
are not tests: nothing here is asserted in `make test`.

    python -m tools.bench [--quick] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tools.azurite import ROOT, Azurite
from tools.emulator import (
    DEMO_LOCATION,
    DEMO_RESOURCE_GROUP,
    DEMO_SUBSCRIPTION,
    DEMO_WORKSPACE,
    EmulatorConfig,
    EmulatorServer,
)

TARGET = {
    "subscriptionId": DEMO_SUBSCRIPTION,
    "resourceGroup": DEMO_RESOURCE_GROUP,
    "workspace": DEMO_WORKSPACE,
    "location": DEMO_LOCATION,
}
TIME_V = "/usr/bin/time"
LATENCY_MS = 20
LATENCY_SCALE = 5.0  # ~1,000 calls at page size 2
RATE, BURST = 150.0, 30
RATE_SCALES = (3.5, 7.0)  # ~500 and ~1,900 calls
COUNTS = {"every": "on every answer", "arm": "on ARM answers only", "none": "on no answer"}  # x-ms-ratelimit-remaining-*
SPORADIC_SCALE = 2.5  # ~300 calls
SPORADIC_FAULTS = {"429": 0.03, "503": 0.03, "drop": 0.03}  # one call in eleven, Retry-After: 1
TWO_LIMITERS_SCALE, ARM_RATE = 5.0, 3.0
MEMORY_SCALES = (3.0, 30.0)
SCENARIOS = ("latency", "rate", "sporadic", "two-limiters", "memory", "cold")  # --only picks some, in this order
TARGETS: dict[str, Any] = {
    "speedup": 10.0,
    "sporadic": 5.0,
    "rate_ratio": {3.5: 1.35, 7.0: 1.15},
    "throttled_share": 0.01,
    "two_limiters": 1.10,
    "rss_growth_mb": 50.0,
    "state_growth_kb": 8.0,
    "import_s": 0.5,
}
# a memory wrapper for systems without /usr/bin/time: run argv, then print the child's peak RSS (KiB)
_RSS_WRAPPER = (
    "import resource, subprocess, sys; code = subprocess.call(sys.argv[1:]); "
    "sys.stderr.write('Maximum resident set size (kbytes): %d\\n' % "
    "resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(code)"
)


@dataclass
class Run:
    """One `dsr process` subprocess."""

    label: str
    wall: float
    exit_code: int
    status: str | None
    calls: int  # AML requests answered (every status)
    admitted: int  # AML requests answered with anything but 429
    throttled: int  # 429s
    rss_mb: float | None
    export_seconds: float | None  # the export phase, from the app's own log
    first_call: float | None  # seconds from spawn to the first AML request
    connections: int | None = None  # TCP connections the emulator accepted (AML and token endpoint)
    governor: dict[str, Any] | None = None
    span: float | None = None  # first to last AML request, as the service saw them
    spans: dict[str, float] = field(default_factory=dict)  # the same, per emulator family
    state_peak: int | None = None  # bytes of the largest checkpoint saved
    notes: list[str] = field(default_factory=list)


# -- running `dsr process` ---------------------------------------------------------------------------------------------


def with_bytecode_cache(env: dict[str, str]) -> dict[str, str]:
    """The environment of the measured processes, with their compiled modules kept between runs, as an
    installed app has them (pip compiles what it installs; Python caches the rest on first import). Where
    ``PYTHONDONTWRITEBYTECODE`` is set (CI images, this machine), every `dsr process` would otherwise compile
    the app's own modules again: ~0.15-0.2 CPU-s of each start on top of the imports. The cache sits in
    ``bench-results/.pycache`` (ignored by git), never next to the sources."""
    kept = {k: v for k, v in env.items() if k != "PYTHONDONTWRITEBYTECODE"}
    return {**kept, "PYTHONPYCACHEPREFIX": str(ROOT / "bench-results" / ".pycache")}


def _dsr() -> str:
    candidate = Path(sys.executable).with_name("dsr")
    return str(candidate) if candidate.exists() else "dsr"


def _measure_prefix() -> list[str]:
    if Path(TIME_V).exists():
        return [TIME_V, "-v"]
    return [sys.executable, "-c", _RSS_WRAPPER]


def _request(label: str, **extra: Any) -> dict[str, Any]:
    return {
        "schemaVersion": "1",
        "requestId": f"BENCH-{label}-{uuid.uuid4().hex[:10]}",
        "operation": "export",
        "targets": [TARGET],
        "requestedBy": "make bench",
        **extra,
    }


def run_dsr(
    label: str,
    base_env: dict[str, str],
    emulator: EmulatorServer,
    *,
    concurrency: int | None = None,
    request: dict[str, Any] | None = None,
    log_dir: Path,
    extra_env: dict[str, str] | None = None,
) -> Run:
    env = {**base_env, **(extra_env or {})}
    if concurrency is not None:
        env["DSR_CONCURRENCY"] = str(concurrency)
    body = json.dumps(request or _request(label)).encode()
    emulator.clear_requests()
    accepted = _count_connections(emulator)
    spawned_wall = time.time()
    started = time.monotonic()
    proc = subprocess.run(
        [*_measure_prefix(), _dsr(), "process", "-"], input=body, env=env, capture_output=True, check=False, cwd=ROOT
    )
    wall = time.monotonic() - started
    stderr = proc.stderr.decode(errors="replace")
    (log_dir / f"{label}.log").write_text(stderr)
    log = [r for r in emulator.requests() if r.get("family") != "msi"]
    throttled = sum(1 for r in log if r.get("status") == 429)
    status = None
    try:
        status = json.loads(proc.stdout.decode().strip().splitlines()[-1])["data"]["status"]
    except (ValueError, IndexError, KeyError, TypeError):
        pass
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", stderr)
    export_seconds, governor, state_peak = None, None, None
    for line in stderr.splitlines():
        if not line.startswith("{"):
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("message") == "export written":
            export_seconds = entry.get("seconds")
        elif entry.get("message") == "checkpoint saved":
            state_peak = max(state_peak or 0, int(entry.get("bytes") or 0))
        elif str(entry.get("message", "")).startswith("throttled: shared"):
            governor = {k: entry.get(k) for k in ("pace", "throttled", "sharedEvents")}
    spans: dict[str, float] = {}
    for family in {r.get("family") for r in log}:
        times = [r["time"] for r in log if r.get("family") == family]
        spans[str(family)] = max(times) - min(times)
    return Run(
        label=label,
        wall=wall,
        exit_code=proc.returncode,
        status=status,
        calls=len(log),
        admitted=len(log) - throttled,
        throttled=throttled,
        rss_mb=int(rss.group(1)) / 1024 if rss else None,
        export_seconds=export_seconds,
        first_call=(log[0]["time"] - spawned_wall) if log else None,
        governor=governor,
        connections=accepted(),
        span=(log[-1]["time"] - log[0]["time"]) if log else None,
        spans=spans,
        state_peak=state_peak,
    )


def _count_connections(emulator: EmulatorServer) -> Any:
    """Count the connections the emulator accepts from now on (connection reuse, seen from the server)."""
    try:
        httpd = emulator._bind()
        original = type(httpd).process_request
    except AttributeError:
        return lambda: None
    count = [0]

    def process_request(request: Any, client_address: Any) -> None:
        count[0] += 1
        original(httpd, request, client_address)

    httpd.process_request = process_request  # type: ignore[method-assign]
    return lambda: count[0]


def median_run(runs: list[Run], key: Any = None, unit: str = "s") -> Run:
    """The run with the median figure (wall time unless ``key`` says otherwise), noting all of them."""
    figure = key or (lambda r: r.wall)
    chosen = sorted(runs, key=figure)[len(runs) // 2]
    chosen.notes.append(f"median of {len(runs)}: " + ", ".join(f"{figure(r):.2f}" for r in runs) + f" {unit}")
    return chosen


# -- the critical path -------------------------------------------------------------------------------------------------


class _MemoryBlob:
    def __init__(self) -> None:
        self.blocks: dict[str, bytes] = {}
        self.data = b""

    def stage(self, block_id: str, data: bytes) -> None:
        self.blocks[block_id] = data

    def commit(self, block_ids: list[str]) -> None:
        self.data = b"".join(self.blocks[b] for b in block_ids)

    def upload(self, data: bytes) -> None:
        self.data = data

    def digest(self) -> tuple[str, int]:
        import hashlib

        return hashlib.sha256(self.data).hexdigest(), len(self.data)


class _MemoryStore:
    def __init__(self) -> None:
        self.blobs: dict[str, Any] = {}

    def block_blob(self, name: str) -> _MemoryBlob:
        blob: _MemoryBlob = self.blobs.setdefault(name, _MemoryBlob())
        return blob

    def put_json(self, name: str, document: Any) -> None:
        self.blobs[name] = document

    def delete(self, name: str) -> None:
        self.blobs.pop(name, None)

    def read(self, name: str) -> bytes | None:
        return None

    def list_names(self, prefix: str) -> list[str]:
        return [n for n in self.blobs if n.startswith(prefix)]


def critical_path(emulator: EmulatorServer, env: dict[str, str]) -> dict[str, Any]:
    """Walk the export in-process (no latency) and measure the longest chain of dependent calls: a call's
    depth is its parent's (the call whose answer made it possible) plus one."""
    try:
        from shared.adapters.aml_http import AzureMLHttp
        from shared.domain.catalog import load_catalog
        from shared.domain.contract import parse_request
        from shared.domain.urls import UrlPolicy
        from shared.service.export import ExportTraversal
        from shared.service.listing import Endpoints
        from shared.settings import load_settings

        settings = load_settings(environ=env, directory=ROOT / "bench-results")

        class Credential:
            def get_token(self, *scopes: str) -> Any:
                return type("Token", (), {"token": emulator.issue_token(), "expires_on": 2_000_000_000})()

        aml = AzureMLHttp(Credential(), scope=settings.token_scope, policy=UrlPolicy(settings.endpoints))
        request = parse_request(json.dumps(_request("critical-path")).encode())
        traversal = ExportTraversal(
            request, catalog=load_catalog(), endpoints=Endpoints(settings.endpoints), aml=aml, store=_MemoryStore(), concurrency=1
        )
        depth: dict[int, int] = {}
        lock = threading.Lock()
        deepest = 0
        run_step = traversal._run_step

        def traced(step: Any) -> Any:
            nonlocal deepest
            with lock:
                mine = depth.pop(id(step), 1)
                deepest = max(deepest, mine)
            children = run_step(step)
            with lock:
                for child in children:
                    depth[id(child)] = mine + 1
            return children

        traversal._run_step = traced  # type: ignore[method-assign]
        result = traversal.run()
        aml.close()
        return {"depth": deepest, "calls": result.calls}
    except Exception as exc:  # noqa: BLE001 - a bench must still report the rest
        return {"depth": None, "calls": None, "error": f"{type(exc).__name__}: {exc}"}


# -- cold start --------------------------------------------------------------------------------------------------------


def import_seconds(module: str, repeats: int = 5) -> tuple[float, float]:
    """Median time to import ``module`` in a fresh interpreter, and the median whole-process wall time."""
    code = f"import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
    inside, whole = [], []
    for _ in range(repeats):
        started = time.monotonic()
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, check=True, cwd=ROOT)
        whole.append(time.monotonic() - started)
        inside.append(float(out.stdout.decode().strip().splitlines()[-1]))
    return statistics.median(inside), statistics.median(whole)


# -- report ------------------------------------------------------------------------------------------------------------


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("PASS" if ok else "MISS")


def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    commit = ""
    try:
        commit = (
            subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, check=True, cwd=ROOT)
            .stdout.decode()
            .strip()
        )
        dirty = subprocess.run(["git", "status", "--porcelain"], capture_output=True, check=True, cwd=ROOT).stdout.strip()
        commit += "+dirty" if dirty else ""
    except (OSError, subprocess.CalledProcessError):
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu": model,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "commit": commit,
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def render(results: dict[str, Any]) -> str:
    lines: list[str] = []
    m = results["machine"]
    lines.append(f"# aml-dsr bench ({m['date']}, commit {m['commit'] or '?'})")
    lines.append("")
    lines.append(
        f"Machine: {m['cpus']} CPUs ({m['cpu'] or 'unknown CPU'}), Python {m['python']}, {m['platform']}. "
        "Every figure is a whole `dsr process` subprocess (spawn to exit) against Azurite and the "
        "workspace emulator, both on loopback on the same machine."
    )
    lines.append("")
    lines.append("| measurement | figure | target | verdict |")
    lines.append("|---|---|---|---|")
    for row in results["summary"]:
        lines.append(f"| {row['measurement']} | {row['figure']} | {row['target']} | {row['verdict']} |")
    if results["latency"]:
        lat = results["latency"]
        lines.append("")
        lines.append(f"## Wall time vs concurrency (latency-bound: {LATENCY_MS} ms per call, no limit, {lat['calls']} calls)")
        lines.append("")
        lines.append("| concurrency | wall (s) | speedup | export phase (s) | lower bound (s) | connections | |")
        lines.append("|---:|---:|---:|---:|---:|---:|---|")
        base = lat["runs"][0]["wall"]
        widest = max(r["wall"] for r in lat["runs"])
        for r in lat["runs"]:
            bar = "#" * max(1, round(40 * r["wall"] / widest))
            bound = r.get("lower_bound")
            lines.append(
                f"| {r['concurrency']}{' (default)' if r['concurrency'] == lat['default'] else ''} | "
                f"{r['wall']:.2f} | {base / r['wall']:.1f}x | {_fmt(r.get('export_seconds'))} | "
                f"{_fmt(bound)} | {r.get('connections') if r.get('connections') is not None else '-'} | `{bar}` |"
            )
        cp = lat["critical_path"]
        lines.append("")
        if cp.get("depth"):
            lines.append(
                f"Critical path: {cp['depth']} dependent calls x {LATENCY_MS} ms = "
                f"{cp['depth'] * LATENCY_MS / 1000:.2f} s. Lower bound at concurrency c: "
                f"max(critical path, calls x {LATENCY_MS} ms / c), plus the process's fixed cost "
                f"(start to first call {_fmt(lat.get('first_call'))} s)."
            )
        else:
            lines.append(f"Critical path: not measured ({cp.get('error')}).")
    if results["rate"]:
        rate = results["rate"]
        lines.append("")
        lines.append(f"## Rate-bound ({RATE:g} calls/s, burst {BURST}, {LATENCY_MS} ms per call, default concurrency)")
        lines.append("")
        lines.append(
            "| remaining counts | calls admitted | 429s | service span (s) | ideal (s) | ratio | wall, spawn to exit (s) | "
            "first call (s) |"
        )
        lines.append("|---|---:|---:|---:|---:|---:|---:|---:|")
        for r in rate["runs"]:
            lines.append(
                f"| {COUNTS[r['counts']]} | {r['admitted']} | {r['throttled']} "
                f"({100 * r['throttled'] / max(1, r['admitted']):.1f}%) | {_fmt(r.get('span'))} | {r['ideal']:.2f} | "
                f"{(r.get('span') or 0) / r['ideal']:.2f}x | {r['wall']:.2f} | {_fmt(r.get('first_call'))} |"
            )
        lines.append("")
        lines.append(
            "One bucket for the subscription, all services alike. The ideal is (admitted calls - burst) / rate; the "
            "span is the service's view, first to last call (the process's own start and exit are the cold start "
            "below). Where not every answer tells the count, the first calls empty the bucket before any answer can "
            "say so: that first wave of 429s (up to 2 x concurrency - 1 calls in flight) is most of the 429s, and its "
            "calls, often a list's first page that other calls wait for, wait a whole-second Retry-After."
        )
    if results["sporadic"]:
        spor = results["sporadic"]
        lines.append("")
        lines.append(f"## Sporadic faults ({SPORADIC_FAULTS}, Retry-After: 1, no rate limit, {LATENCY_MS} ms per call)")
        lines.append("")
        lines.append("| concurrency | wall (s) | calls | faults | status |")
        lines.append("|---:|---:|---:|---:|---|")
        for r in spor["runs"]:
            lines.append(f"| {r['concurrency']} | {r['wall']:.2f} | {r['calls']} | {r['faults']} | {r['status']} |")
    if results["two_limiters"]:
        two = results["two_limiters"]
        lines.append("")
        lines.append(f"## Two limiters (ARM: {ARM_RATE:g} calls/s in its own bucket; run history unlimited)")
        lines.append("")
        lines.append("| run | run history span (s) | ARM span (s) | 429s | wall (s) |")
        lines.append("|---|---:|---:|---:|---:|")
        for r in two["runs"]:
            lines.append(
                f"| {r['label']} | {r['spans'].get('exp', 0):.2f} | {r['spans'].get('arm', 0):.2f} | {r['throttled']} | "
                f"{r['wall']:.2f} |"
            )
    if results["memory"]:
        mem = results["memory"]
        lines.append("")
        lines.append(f"## Memory and state (no latency, no limit, default concurrency; median of {mem['repeats']} runs)")
        lines.append("")
        lines.append("| scale | calls | peak RSS (MB) | peak checkpoint (bytes) | wall (s) |")
        lines.append("|---:|---:|---:|---:|---:|")
        for r in mem["runs"]:
            lines.append(
                f"| {r['scale']:g} | {r['calls']} | {_fmt(r.get('rss_mb'), 1)} | {r.get('state_peak')} | {r['wall']:.2f} |"
            )
    if results["cold_start"]:
        cold = results["cold_start"]
        lines.append("")
        lines.append("## Cold start")
        lines.append("")
        lines.append(
            f"- `import {cold['module']}` in a fresh interpreter: {cold['import_s']:.3f} s "
            f"(interpreter start + import: {cold['process_s']:.3f} s){cold.get('note', '')}"
        )
        lines.append(
            f"- one-kind request (`models`, {LATENCY_MS} ms per call, {cold['one_kind']['calls']} calls): "
            f"{cold['one_kind']['wall']:.2f} s end to end, first call after {_fmt(cold['one_kind']['first_call'])} s"
        )
    if results.get("notes"):
        lines.append("")
        lines.append("## Notes")
        lines.append("")
        lines.extend(f"- {n}" for n in results["notes"])
    return "\n".join(lines) + "\n"


def _fmt(value: Any, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


# -- the scenarios -----------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(ROOT / "bench-results"), help="output directory")
    parser.add_argument("--quick", action="store_true", help="one run per point, smaller memory scale (a smoke run)")
    parser.add_argument(
        "--only",
        default="",
        metavar="NAME[,NAME]",
        help=f"run only these scenarios ({', '.join(SCENARIOS)}); written to only-NAME[-NAME].{{md,json}}",
    )
    args = parser.parse_args(argv)
    only = [name.strip() for name in args.only.split(",") if name.strip()] or list(SCENARIOS)
    unknown = sorted(set(only) - set(SCENARIOS))
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}")
    stem = "latest" if not args.only else "only-" + "-".join(only)
    out = Path(args.out)
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    repeats = 1 if args.quick else 3
    from shared.settings import Settings

    default_concurrency = Settings().concurrency
    notes: list[str] = []
    say = print
    lat_runs: list[dict[str, Any]] = []
    rate_runs: list[dict[str, Any]] = []
    sporadic_runs: list[dict[str, Any]] = []
    two_runs: list[dict[str, Any]] = []
    mem_runs: list[dict[str, Any]] = []
    latency: dict[str, Any] = {}
    rate: dict[str, Any] = {}
    sporadic: dict[str, Any] = {}
    two: dict[str, Any] = {}
    memory: dict[str, Any] = {}
    cold: dict[str, Any] = {}
    started = time.monotonic()
    with Azurite() as azurite, EmulatorServer(EmulatorConfig()) as emulator:
        # PYTHONPATH: the subprocesses run this tree's code whatever the venv's editable install points at
        env = with_bytecode_cache(
            {
                **os.environ,
                **emulator.settings(),
                "DSR_STORAGE": azurite.connection_string,
                "DSR_LOG_LEVEL": "INFO",
                "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
            }
        )
        for name in ("ServiceBusConnection__fullyQualifiedNamespace", "DSR_CONCURRENCY"):
            env.pop(name, None)
        say(
            f"bench: Azurite on {azurite.blob_endpoint}, emulator on {emulator.base_url}; "
            f"default concurrency {default_concurrency}"
        )

        # 1. latency-bound -----------------------------------------------------------------------------------
        if "latency" in only:
            emulator.configure(latency_ms=0, rate=None, burst=None, scale=LATENCY_SCALE, faults={})
            cp = critical_path(emulator, env)
            emulator.configure(latency_ms=LATENCY_MS)
            levels = sorted({1, 8, 16, 32, default_concurrency})
            for level in levels:
                n = 1 if level == 1 else repeats
                runs = [
                    run_dsr(
                        f"latency-c{level}-{i}",
                        env,
                        emulator,
                        log_dir=logs,
                        concurrency=None if level == default_concurrency else level,
                    )
                    for i in range(n)
                ]
                run = median_run(runs)
                entry = {"concurrency": level, **asdict(run)}
                if cp.get("depth"):
                    entry["lower_bound"] = max(cp["depth"], run.admitted / level) * LATENCY_MS / 1000
                lat_runs.append(entry)
                say(f"  latency-bound  c={level:<3} {run.wall:6.2f} s  {run.calls} calls  ({run.notes[-1]})")
            base = lat_runs[0]["wall"]
            default_run = next(r for r in lat_runs if r["concurrency"] == default_concurrency)
            speedup = base / default_run["wall"]
            latency = {
                "latency_ms": LATENCY_MS,
                "scale": LATENCY_SCALE,
                "calls": default_run["admitted"],
                "default": default_concurrency,
                "critical_path": cp,
                "runs": lat_runs,
                "speedup": speedup,
                "first_call": statistics.median(r["first_call"] for r in lat_runs if r["first_call"] is not None),
            }

        # 2. rate-bound, with and without the remaining count on the answers -------------------------------
        if "rate" in only:
            for counts in COUNTS:
                for scale in RATE_SCALES:
                    emulator.configure(
                        latency_ms=LATENCY_MS,
                        scale=scale,
                        rate=RATE,
                        burst=BURST,
                        rate_headers=counts == "every",
                        arm_headers=counts != "none",
                    )
                    time.sleep(0.3)  # a full bucket
                    run = run_dsr(f"rate-s{scale:g}-counts-{counts}", env, emulator, log_dir=logs)
                    ideal = (run.admitted - BURST) / RATE
                    rate_runs.append({"scale": scale, "counts": counts, "ideal": ideal, **asdict(run)})
                    say(
                        f"  rate-bound     scale={scale:<4g} counts={counts:<5} span {run.span or 0:6.2f} s  "
                        f"ideal {ideal:.2f} s  {run.throttled} x 429 of {run.admitted} calls  wall {run.wall:.2f} s"
                    )
            emulator.configure(rate=None, burst=None, rate_headers=True, arm_headers=True)
            rate = {"rate": RATE, "burst": BURST, "runs": rate_runs}

        # 3. sporadic faults, no rate limit: default concurrency against 1, the same retry policy ----------
        if "sporadic" in only:
            emulator.configure(latency_ms=LATENCY_MS, scale=SPORADIC_SCALE, faults=SPORADIC_FAULTS, retry_after=1)
            for level in (1, default_concurrency):
                emulator.reset()  # the same fault draws for both
                run = run_dsr(
                    f"sporadic-c{level}", env, emulator, log_dir=logs, concurrency=None if level == default_concurrency else level
                )
                faults = sum(1 for r in emulator.requests() if r.get("fault"))
                sporadic_runs.append({"concurrency": level, "faults": faults, **asdict(run)})
                say(f"  sporadic       c={level:<3} {run.wall:6.2f} s  {run.calls} calls, {faults} faults  status {run.status}")
            emulator.configure(faults={}, retry_after=0)
            sporadic = {"runs": sporadic_runs, "speedup": sporadic_runs[0]["wall"] / sporadic_runs[1]["wall"]}

        # 4. two limiters: ARM throttled, run history not -----------------------------------------------------
        if "two-limiters" in only:
            emulator.configure(latency_ms=LATENCY_MS, scale=TWO_LIMITERS_SCALE)
            for label, knobs in (
                ("unlimited", {"rate": None, "burst": None, "rate_families": None}),
                ("arm-limited", {"rate": ARM_RATE, "burst": int(ARM_RATE), "rate_families": ["arm"]}),
            ):
                emulator.configure(**knobs)
                time.sleep(0.3)
                run = run_dsr(f"two-limiters-{label}", env, emulator, log_dir=logs)
                two_runs.append({"label": label, **asdict(run)})
                say(
                    f"  two limiters   {label:<12} run history span {run.spans.get('exp', 0):.2f} s, ARM span "
                    f"{run.spans.get('arm', 0):.2f} s, {run.throttled} x 429  wall {run.wall:.2f} s"
                )
            emulator.configure(rate=None, burst=None, rate_families=None)
            two = {
                "runs": two_runs,
                "ratio": two_runs[1]["spans"].get("exp", 0) / max(1e-9, two_runs[0]["spans"].get("exp", 0)),
            }

        # 5. memory and state --------------------------------------------------------------------------------
        if "memory" in only:
            scales = (MEMORY_SCALES[0], MEMORY_SCALES[0] * 10) if not args.quick else (1.0, 10.0)
            for scale in scales:
                emulator.configure(latency_ms=0, scale=scale)
                runs = [
                    run_dsr(f"memory-s{scale:g}-{i}", env, emulator, log_dir=logs, extra_env={"DSR_CHECKPOINT_SECONDS": "0.5"})
                    for i in range(repeats)
                ]
                run = median_run(runs, key=lambda r: r.rss_mb or 0.0, unit="MB")
                peak_state = max((r.state_peak or 0) for r in runs)
                mem_runs.append({"scale": scale, **asdict(run), "state_peak": peak_state})
                say(
                    f"  memory         scale={scale:<4g} {_fmt(run.rss_mb, 1)} MB peak RSS  state {peak_state} B  "
                    f"{run.calls} calls  {run.wall:.2f} s  ({run.notes[-1]})"
                )
            small, large = mem_runs
            growth = None if small["rss_mb"] is None or large["rss_mb"] is None else large["rss_mb"] - small["rss_mb"]
            memory = {
                "runs": mem_runs,
                "growth_mb": growth,
                "state_growth_kb": (large["state_peak"] - small["state_peak"]) / 1024,
                "repeats": repeats,
                "method": "/usr/bin/time -v" if Path(TIME_V).exists() else "getrusage(RUSAGE_CHILDREN)",
            }

        # 6. cold start --------------------------------------------------------------------------------------
        if "cold" in only:
            module = "function_app" if (ROOT / "function_app.py").exists() else "shared.service.processor"
            imp, whole = import_seconds(module)
            cold = {"module": module, "import_s": imp, "process_s": whole}
            if module != "function_app":
                cold["note"] = " (function_app.py does not exist yet: shared.service.processor imported instead)"
            emulator.configure(latency_ms=LATENCY_MS, scale=1.0)
            one = median_run(
                [
                    run_dsr(f"one-kind-{i}", env, emulator, log_dir=logs, request=_request("one-kind", resourceKinds=["models"]))
                    for i in range(repeats)
                ]
            )
            cold["one_kind"] = asdict(one)
            say(f"  cold start     import {module} {imp:.3f} s; one-kind request {one.wall:.2f} s ({one.calls} calls)")

    ran = [*lat_runs, *rate_runs, *sporadic_runs, *two_runs, *mem_runs, *([cold["one_kind"]] if cold else [])]
    failed = [r for r in ran if r["status"] != "completed"]
    for r in failed:
        notes.append(
            f"run {r['label']} ended with exit code {r['exit_code']} and status {r['status']} "
            f"(log: {logs / (r['label'] + '.log')})"
        )
    summary: list[dict[str, Any]] = []
    if sporadic_runs:
        one_c, many_c = sporadic_runs
        summary.append(
            {
                "measurement": f"sporadic faults ({one_c['faults']} of {one_c['calls']} calls at c=1): concurrency "
                f"{default_concurrency} over 1",
                "figure": f"{sporadic['speedup']:.1f}x ({one_c['wall']:.2f} s -> {many_c['wall']:.2f} s)",
                "target": f">= {TARGETS['sporadic']:g}x",
                "verdict": verdict(sporadic["speedup"] >= TARGETS["sporadic"]),
            }
        )
    if lat_runs:
        summary.append(
            {
                "measurement": f"latency-bound speedup, concurrency {default_concurrency} (default) over 1",
                "figure": f"{speedup:.1f}x ({base:.2f} s -> {default_run['wall']:.2f} s)",
                "target": f">= {TARGETS['speedup']:g}x",
                "verdict": verdict(speedup >= TARGETS["speedup"]),
            }
        )
    for r in rate_runs:
        ratio = (r["span"] or 0) / r["ideal"]
        share = r["throttled"] / max(1, r["admitted"])
        limit = TARGETS["rate_ratio"][r["scale"]]
        summary.append(
            {
                "measurement": f"rate-bound span / ideal, {r['admitted']} calls, " + f"remaining counts: {COUNTS[r['counts']]}",
                "figure": f"{ratio:.2f}x ({r['span'] or 0:.2f} s vs {r['ideal']:.2f} s), {r['throttled']} x 429 "
                f"({100 * share:.1f}%)",
                "target": f"<= {limit:g}x, < {100 * TARGETS['throttled_share']:g}% 429s",
                "verdict": verdict(ratio <= limit and share < TARGETS["throttled_share"]),
            }
        )
    if two_runs:
        summary.append(
            {
                "measurement": "two limiters: run history span, ARM throttled / nothing throttled",
                "figure": f"{two['ratio']:.2f}x ({two_runs[0]['spans'].get('exp', 0):.2f} s -> "
                f"{two_runs[1]['spans'].get('exp', 0):.2f} s; {two_runs[1]['throttled']} x 429 on ARM)",
                "target": f"<= {TARGETS['two_limiters']:g}x",
                "verdict": verdict(two["ratio"] <= TARGETS["two_limiters"]),
            }
        )
    if mem_runs:
        small, large = mem_runs
        summary += [
            {
                "measurement": f"peak checkpoint size, scale {small['scale']:g} -> {large['scale']:g} "
                f"({small['calls']} -> {large['calls']} calls)",
                "figure": f"{small['state_peak'] / 1024:.1f} KB -> {large['state_peak'] / 1024:.1f} KB",
                "target": f"growth <= {TARGETS['state_growth_kb']:g} KB",
                "verdict": verdict(memory["state_growth_kb"] <= TARGETS["state_growth_kb"]),
            },
            {
                "measurement": f"peak RSS growth, scale {small['scale']:g} -> {large['scale']:g}",
                "figure": "-" if growth is None else f"{growth:.1f} MB ({small['rss_mb']:.1f} -> {large['rss_mb']:.1f} MB)",
                "target": f"<= {TARGETS['rss_growth_mb']:g} MB",
                "verdict": verdict(None if growth is None else growth <= TARGETS["rss_growth_mb"]),
            },
        ]
    if cold:
        summary += [
            {
                "measurement": f"`import {cold['module']}`, fresh interpreter",
                "figure": f"{cold['import_s']:.3f} s",
                "target": f"<= {TARGETS['import_s']:g} s",
                "verdict": verdict(cold["import_s"] <= TARGETS["import_s"]),
            },
            {
                "measurement": "one-kind request, end to end",
                "figure": f"{cold['one_kind']['wall']:.2f} s",
                "target": "-",
                "verdict": "n/a",
            },
        ]
    results = {
        "machine": machine(),
        "summary": summary,
        "latency": latency,
        "rate": rate,
        "sporadic": sporadic,
        "two_limiters": two,
        "memory": memory,
        "cold_start": cold,
        "notes": notes,
        "targets": TARGETS,
        "bench_seconds": round(time.monotonic() - started, 1),
    }
    (out / f"{stem}.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    report = render(results)
    (out / f"{stem}.md").write_text(report)
    print()
    print(report)
    print(f"bench: {results['bench_seconds']} s; written {out / (stem + '.json')} and {out / (stem + '.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
