"""The ``dsr`` command (contract §5).

    dsr process FILE|-      one request through the pipeline; the outcome event as one JSON line on stdout
    dsr emulator [...]      the workspace emulator in the foreground (a developer tool)
    dsr dlq list|replay     the request queue's dead letters

Exit codes of ``process``: 0 completed, 3 partially completed, 1 failed, 2 rejected.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any

from shared.errors import ConfigurationError, DsrError
from shared.logs import configure_logging
from shared.outcome import EXIT_CODES, outcome_event, utc_now

log = logging.getLogger("dsr.cli")


def _read_input(path: str) -> bytes:
    if path == "-":
        return sys.stdin.buffer.read()
    with open(path, "rb") as handle:
        return handle.read()


def _failed_event(body: bytes, code: str, message: str, started_at: str) -> dict[str, Any]:
    from shared.contract import _salvage, decode_json

    try:
        request_id, operation = _salvage(decode_json(body))
    except DsrError:
        request_id, operation = None, None
    return outcome_event(request_id or "unknown", operation, "failed", {
        "counts": {}, "errors": [{"code": code, "message": message, "kind": None, "target": None}],
        "startedAt": started_at, "completedAt": utc_now()})


class _BestEffort:
    """At the CLI the outcome is printed whatever happens; a publisher that fails is reported, not fatal.
    Running the same request again publishes the stored outcome again."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def publish(self, event: dict[str, Any]) -> None:
        try:
            self.inner.publish(event)
        except Exception as exc:  # noqa: BLE001
            log.error("the outcome could not be published; run the same request again to republish it",
                      extra={"publisher": type(self.inner).__name__, "error": type(exc).__name__})


def _process_waiting(body: bytes, settings: Any, wait_seconds: float) -> dict[str, Any]:
    """Run the request; while another worker holds its lease, wait (saying so) and try again."""
    import time

    from shared.bootstrap import build_services
    from shared.processor import handle
    from shared.state import RequestBusy

    services = build_services(settings)
    services.publishers = [_BestEffort(p) for p in services.publishers]
    give_up = time.monotonic() + wait_seconds
    while True:
        try:
            return handle(body, services)
        except RequestBusy as busy:
            pause = max(0.5, busy.lease_until - time.time() + 0.5)
            if time.monotonic() + pause > give_up:
                raise
            log.info("another worker holds this request; waiting for its lease to lapse",
                     extra={"waitSeconds": round(pause, 1)})
            time.sleep(min(pause, 30.0))


def cmd_process(args: argparse.Namespace) -> int:
    from shared.settings import load_settings

    try:
        settings = load_settings()
    except ConfigurationError as exc:
        configure_logging("INFO")
        print(f"dsr: configuration error: {exc.message}", file=sys.stderr)
        return 1
    configure_logging(settings.log_level)
    try:
        body = _read_input(args.file)
    except OSError as exc:
        print(f"dsr: cannot read {args.file}: {exc.strerror}", file=sys.stderr)
        return 1
    started_at = utc_now()
    try:
        event = _process_waiting(body, settings, args.wait_seconds)
    except ConfigurationError as exc:
        print(f"dsr: configuration error: {exc.message}", file=sys.stderr)
        return 1
    except DsrError as exc:
        log.error("request failed", extra={"code": exc.code})
        event = _failed_event(body, exc.code, exc.message, started_at)
    except Exception as exc:  # noqa: BLE001 - the CLI reports, never prints a traceback
        log.error("request failed unexpectedly", extra={"error": type(exc).__name__})
        event = _failed_event(body, "internal_error", f"unexpected {type(exc).__name__}; see the logs", started_at)
    sys.stdout.write(json.dumps(event, ensure_ascii=False) + "\n")
    sys.stdout.flush()
    return EXIT_CODES[event["data"]["status"]]


def cmd_emulator(args: argparse.Namespace) -> int:
    try:
        from tools.emulator.__main__ import main as emulator_main
    except ImportError:
        print("dsr: the workspace emulator is a developer tool; run from a checkout of the repository",
              file=sys.stderr)
        return 1
    return int(emulator_main(args.emulator_args) or 0)


def cmd_dlq(args: argparse.Namespace) -> int:
    from shared.dlq import main as dlq_main

    return dlq_main(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dsr", description="GDPR data-subject requests for Azure Machine Learning")
    sub = parser.add_subparsers(dest="command", required=True)
    process = sub.add_parser("process", help="run one request message through the pipeline")
    process.add_argument("file", help="the request message (JSON); - reads standard input")
    process.add_argument("--wait-seconds", type=float, default=900.0,
                         help="how long to wait while another worker holds the request (default 900)")
    process.set_defaults(func=cmd_process)
    emulator = sub.add_parser("emulator", help="run the workspace emulator in the foreground", add_help=False)
    emulator.add_argument("emulator_args", nargs=argparse.REMAINDER)
    emulator.set_defaults(func=cmd_emulator)
    try:
        from shared.dlq import add_arguments
    except ImportError:
        pass
    else:
        dlq = sub.add_parser("dlq", help="inspect and replay the request queue's dead letters")
        add_arguments(dlq)
        dlq.set_defaults(func=cmd_dlq)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["emulator"]:  # the emulator parses its own flags
        return cmd_emulator(argparse.Namespace(emulator_args=argv[1:]))
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
