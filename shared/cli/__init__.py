"""The ``dsr`` command (docs/contract.md, section 5); ``tools/dsr.py`` adds the developer command ``emulator``.

    dsr process FILE|-      one request through the pipeline; the outcome event as one JSON line on stdout
    dsr dlq list|replay     the request queue's dead letters
    dsr status ID           where a request is (one JSON document)
    dsr cancel ID           stop a request at its next checkpoint
    dsr link ID             a fresh download URL of a finished export's zip

Exit codes of ``process``: 0 completed, 3 partially completed, 1 failed, 2 rejected, 4 cancelled.
``status``/``cancel``/``link``: 0 found (cancel: accepted), 1 not_found, 2 an id that cannot be one, 5 a
refused cancel (``conflict``: the request had already finished).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from typing import Any

from shared.bootstrap import build_services, flush_telemetry
from shared.cli import dlq
from shared.domain.errors import ConfigurationError, DsrError
from shared.domain.outcome import EXIT_CODES, failed_event, utc_now
from shared.logs import configure_logging
from shared.service.delivery import request_identity
from shared.service.processor import handle
from shared.service.state import RequestBusy
from shared.service.status import cancel_request, fresh_link, request_status
from shared.settings import load_settings

log = logging.getLogger("dsr.cli")


def _read_input(path: str) -> bytes:
    if path == "-":
        return sys.stdin.buffer.read()
    with open(path, "rb") as handle:
        return handle.read()


def _failed_event(body: bytes, code: str, message: str, started_at: str) -> dict[str, Any]:
    request_id, operation = request_identity(body)  # the queue's rule: an unreadable body gets its digest id
    return failed_event(request_id, operation, code, message, started_at=started_at)


class _BestEffort:
    """At the CLI the outcome is printed whatever happens; a publisher that fails is reported, not fatal.
    Running the same request again publishes the stored outcome again."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def publish(self, event: dict[str, Any]) -> None:
        try:
            self.inner.publish(event)
        except Exception as exc:  # noqa: BLE001
            log.error(
                "the outcome could not be published; run the same request again to republish it",
                extra={"publisher": type(self.inner).__name__, "error": type(exc).__name__},
            )


def _process_waiting(body: bytes, settings: Any, wait_seconds: float) -> dict[str, Any]:
    """Run the request; while another worker holds its lease, wait (saying so) and try again."""
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
            log.info("another worker holds this request; waiting for its lease to lapse", extra={"waitSeconds": round(pause, 1)})
            time.sleep(min(pause, 30.0))


def cmd_process(args: argparse.Namespace) -> int:
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
    flush_telemetry()
    return EXIT_CODES[event["data"]["status"]]


_FOLLOW_EXIT = {200: 0, 202: 0, 400: 2, 404: 1, 409: 5}


def cmd_follow(args: argparse.Namespace) -> int:
    """``status``, ``cancel`` and ``link``: one JSON document on stdout, the exit code from its answer."""
    try:
        settings = load_settings()
        configure_logging(settings.log_level)
        services = build_services(settings, publishers=[])
        state = services.state()
        if args.command == "status":
            code, body = request_status(state, args.request_id)
        elif args.command == "cancel":
            code, body = cancel_request(state, args.request_id)
        else:
            code, body = fresh_link(state, services.bundles(), args.request_id, hours=settings.download_hours)
    except ConfigurationError as exc:
        print(f"dsr: configuration error: {exc.message}", file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 - the CLI reports, never prints a traceback
        log.error("the request state could not be read", extra={"error": type(exc).__name__})
        return 1
    sys.stdout.write(json.dumps(body, ensure_ascii=False) + "\n")
    sys.stdout.flush()
    return _FOLLOW_EXIT.get(code, 1)


def cmd_dlq(args: argparse.Namespace) -> int:
    return dlq.main(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dsr", description="GDPR data-subject requests for Azure Machine Learning")
    sub = parser.add_subparsers(dest="command", required=True)
    process = sub.add_parser("process", help="run one request message through the pipeline")
    process.add_argument("file", help="the request message (JSON); - reads standard input")
    process.add_argument(
        "--wait-seconds", type=float, default=900.0, help="how long to wait while another worker holds the request (default 900)"
    )
    process.set_defaults(func=cmd_process)
    for name, text in (
        ("status", "where a request is: status, progress, deadline, outcome"),
        ("cancel", "cancel a request (it stops at its next checkpoint)"),
        ("link", "a fresh read-only download URL of a finished export's zip"),
    ):
        follow = sub.add_parser(name, help=text)
        follow.add_argument("request_id", metavar="REQUEST_ID")
        follow.set_defaults(func=cmd_follow)
    dead = sub.add_parser("dlq", help="inspect and replay the request queue's dead letters")
    dlq.add_arguments(dead)
    dead.set_defaults(func=cmd_dlq)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
