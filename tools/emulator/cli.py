"""``python -m tools.emulator``: run the workspace emulator in the foreground and print its settings."""

from __future__ import annotations

import argparse
import shlex
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

from tools.emulator.config import EmulatorConfig, parse_faults
from tools.emulator.server import EmulatorServer


def _drops(value: str) -> list[str] | int:
    value = value.strip()
    if value.isdigit():
        return int(value)
    return [part.strip() for part in value.split(",") if part.strip()]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dsr emulator",
        description="Azure ML workspace emulator (ARM, model management, run history, pipelines, managed identity).",
    )
    defaults = EmulatorConfig()
    add = parser.add_argument
    add("--host", default=defaults.host, help="bind address (default %(default)s)")
    add("--port", type=int, default=0, help="port; 0 = a free port (default)")
    add("--seed", type=int, default=defaults.seed, help="data and fault seed (default %(default)s)")
    add("--scale", type=float, default=defaults.scale, help="multiplies item counts (default %(default)s)")
    add("--page-size", type=int, default=defaults.page_size, help="items per page (default %(default)s)")
    add("--latency-ms", type=int, default=0, help="sleep per AML request")
    add("--rate", type=float, default=None, help="token bucket: AML requests per second (default: unlimited)")
    add("--burst", type=int, default=None, help="token bucket size (default: max(1, rate))")
    add("--faults", type=parse_faults, default={}, help="e.g. 429=0.1,503=0.05,drop=0.02")
    add("--retry-after", type=int, default=defaults.retry_after, help="Retry-After of injected 429/503 (s)")
    add("--lro-polls", type=int, default=defaults.lro_polls, help="workspace delete: polls before Succeeded")
    add("--lro-retry-after", type=int, default=defaults.lro_retry_after, help="Retry-After on ARM 202 (s)")
    add("--service-delete-polls", type=int, default=defaults.service_delete_polls, help="service delete polls")
    add("--drop-delete-response", type=_drops, default=[], help="ids (comma separated) or a count")
    add("--v2-lro-polls", type=int, default=defaults.v2_lro_polls, help="v2/compute delete: polls before Succeeded")
    add("--no-arm-counts", action="store_true", help="no x-ms-ratelimit-remaining-* on ARM answers either")
    add("--rate-global", action="store_true", help="one token bucket for all subscriptions (default: one each)")
    add("--tenant-workspaces", type=int, default=0, help="add N workspaces over 3 subscriptions (Resource Graph)")
    add("--rg-quota", type=int, default=defaults.rg_quota, help="Resource Graph queries per caller per window")
    add("--rg-window-seconds", type=float, default=defaults.rg_window_seconds, help="Resource Graph quota window (s)")
    add("--rg-page-size", type=int, default=defaults.rg_page_size, help="Resource Graph rows per page at most")
    add("--token-ttl", type=int, default=defaults.token_ttl, help="access token lifetime (s)")
    add("--identity-header", default=None, help="IDENTITY_HEADER secret (default: random)")
    add("--verbose", action="store_true", help="log every request to stderr")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run until SIGINT/SIGTERM; print ``export NAME=value`` lines on stdout. Returns the exit status."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["--"]:  # `dsr emulator -- --port 0`
        arguments = arguments[1:]
    args = build_parser().parse_args(arguments)
    try:
        config = EmulatorConfig(
            host=args.host,
            port=args.port,
            seed=args.seed,
            scale=args.scale,
            page_size=args.page_size,
            latency_ms=args.latency_ms,
            rate=args.rate,
            burst=args.burst,
            faults=args.faults,
            retry_after=args.retry_after,
            lro_polls=args.lro_polls,
            lro_retry_after=args.lro_retry_after,
            service_delete_polls=args.service_delete_polls,
            drop_delete_response=args.drop_delete_response,
            v2_lro_polls=args.v2_lro_polls,
            arm_headers=not args.no_arm_counts,
            rate_per_subscription=not args.rate_global,
            tenant_workspaces=args.tenant_workspaces,
            rg_quota=args.rg_quota,
            rg_window_seconds=args.rg_window_seconds,
            rg_page_size=args.rg_page_size,
            token_ttl=args.token_ttl,
            identity_header=args.identity_header,
        )
    except ValueError as exc:
        print(f"dsr emulator: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = {}
    if in_main_thread:
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, _on_signal)
    emulator = EmulatorServer(config, verbose=args.verbose).start()
    try:
        for name, value in emulator.settings().items():
            print(f"export {name}={shlex.quote(value)}")
        sys.stdout.flush()
        print(f"# aml-dsr workspace emulator on {emulator.base_url} (Ctrl-C to stop)", file=sys.stderr, flush=True)
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        emulator.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print("# aml-dsr workspace emulator stopped", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
