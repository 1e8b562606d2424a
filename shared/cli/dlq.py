"""``dsr dlq``: inspect and replay the request queue's dead letters (an ops tool).

    dsr dlq list                       each dead letter: requestId, reason, description, deliveries, enqueued time
    dsr dlq replay SELECTOR [--execute]   resend selected dead letters to the request queue

``list`` only peeks: it never locks or settles a message. ``replay`` is a dry run unless ``--execute`` is
given; it resends each selected message **first**, then completes the dead letter, so a crash in between
leaves a duplicate (processed idempotently on its requestId), never a loss. The resent message gets the
id ``<original>:replay:<n>`` (duplicate detection must not swallow it, and a second attempt of the same
replay reuses the same id) and application properties recording the replay; a message already replayed
``--max-replays`` times is refused. The selection, the plan and the output are pure functions here; the
Service Bus I/O is ``shared.adapters.servicebus.ServiceBusDeadLetters``.

Exit codes: 0 done (or, in a dry run, would be done), 1 error, 2 usage, 3 some selected messages were
refused, vanished or could not be replayed.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TextIO

from shared.bootstrap import build_dead_letters
from shared.domain.deadletter import (
    DEFAULT_MAX_REPLAYS,
    DeadLetter,
    ReplayResult,
    Selection,
    iso,
    plan_replays,
)
from shared.domain.errors import ConfigurationError, DsrError
from shared.logs import configure_logging, redact
from shared.ports import DeadLetterStore
from shared.settings import load_settings

DEFAULT_LIMIT = 1000
EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_PARTIAL = 0, 1, 2, 3

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_DURATION = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_duration(text: str) -> timedelta:
    """``90s``, ``30m``, ``2h``, ``7d``."""
    match = _DURATION.match(text.strip().lower())
    if not match:
        raise argparse.ArgumentTypeError(f"expected a duration like 30m, 2h or 7d, got {text!r}")
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


# -- output --------------------------------------------------------------------------------------------


def _cell(value: Any, width: int) -> str:
    text = "-" if value is None or value == "" else _CONTROL.sub("?", str(value))
    return text if len(text) <= width else text[: width - 1] + "…"


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]], widths: Sequence[int]) -> str:
    cells = [[_cell(v, w) for v, w in zip(row, widths, strict=True)] for row in rows]
    sizes = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(sizes[i]) for i, h in enumerate(headers)).rstrip()]
    lines += ["  ".join(c.ljust(sizes[i]) for i, c in enumerate(r)).rstrip() for r in cells]
    return "\n".join(lines)


def render_list(letters: Sequence[DeadLetter]) -> str:
    if not letters:
        return "the dead-letter queue is empty"
    rows = [
        (
            d.sequence_number,
            d.message_id,
            d.request_id,
            d.reason,
            d.delivery_count,
            iso(d.enqueued_time),
            d.replay_count,
            d.description,
        )
        for d in letters
    ]
    return (
        _table(
            ("SEQ", "MESSAGE ID", "REQUEST ID", "REASON", "DELIVERIES", "ENQUEUED (UTC)", "REPLAYS", "DESCRIPTION"),
            rows,
            (20, 48, 64, 40, 10, 20, 7, 80),
        )
        + f"\n{len(letters)} dead letter(s)"
    )


def render_replay(results: Sequence[ReplayResult], *, dry_run: bool) -> str:
    if not results:
        return "no dead letter matches the selection"
    rows = [
        (
            r.status.replace("_", " "),
            r.plan.letter.message_id,
            r.plan.new_message_id,
            r.plan.letter.request_id,
            r.plan.letter.reason,
            r.note or r.plan.note,
        )
        for r in results
    ]
    text = _table(("ACTION", "MESSAGE ID", "NEW MESSAGE ID", "REQUEST ID", "REASON", "NOTE"), rows, (20, 48, 64, 64, 40, 80))
    counts: dict[str, int] = {}
    for r in results:
        counts[r.status] = counts.get(r.status, 0) + 1
    summary = ", ".join(f"{n} {status.replace('_', ' ')}" for status, n in counts.items())
    if dry_run:
        summary += "; dry run: nothing was sent or settled (add --execute to replay)"
    return f"{text}\n{summary}"


# -- the command -------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--namespace", help="Service Bus namespace (default: ServiceBusConnection__fullyQualifiedNamespace)")
    common.add_argument("--queue", help="the request queue whose dead letters to use (default: DSR_REQUEST_QUEUE)")
    common.add_argument(
        "--limit", type=int, default=DEFAULT_LIMIT, help=f"read at most this many dead letters (default {DEFAULT_LIMIT})"
    )
    common.add_argument("--json", action="store_true", help="print JSON instead of a table")
    sub = parser.add_subparsers(dest="dlq_command", required=True, metavar="{list,replay}")
    sub.add_parser("list", parents=[common], help="show the dead letters (peek only: nothing is locked or settled)")
    replay = sub.add_parser("replay", parents=[common], help="resend selected dead letters to the request queue")
    pick = replay.add_argument_group("selection (criteria combine; at least one, or --all)")
    pick.add_argument("--message-id", action="append", default=[], metavar="ID", help="a dead letter's message id (repeatable)")
    pick.add_argument("--request-id", action="append", default=[], metavar="ID", help="a requestId (repeatable)")
    pick.add_argument("--reason", help="the dead-letter reason, e.g. MaxDeliveryCountExceeded")
    pick.add_argument("--older-than", type=parse_duration, metavar="AGE", help="enqueued longer ago than AGE (30m, 2h, 7d)")
    pick.add_argument("--all", action="store_true", dest="everything", help="every dead letter")
    mode = replay.add_mutually_exclusive_group()
    mode.add_argument("--dry-run", action="store_false", dest="execute", help="show what would happen (the default)")
    mode.add_argument("--execute", action="store_true", dest="execute", help="really resend and complete")
    replay.add_argument(
        "--max-replays",
        type=int,
        default=DEFAULT_MAX_REPLAYS,
        help=f"refuse a message already replayed this many times (default {DEFAULT_MAX_REPLAYS})",
    )
    replay.set_defaults(execute=False)


def selection_of(args: argparse.Namespace) -> Selection:
    return Selection(
        message_ids=frozenset(args.message_id),
        request_ids=frozenset(args.request_id),
        reason=args.reason,
        older_than=args.older_than,
        everything=args.everything,
    )


def main(
    args: argparse.Namespace, store: DeadLetterStore | None = None, *, now: datetime | None = None, out: TextIO | None = None
) -> int:
    out = out or sys.stdout
    if args.limit < 1 or (args.dlq_command == "replay" and args.max_replays < 0):
        print("dsr dlq: --limit must be at least 1 and --max-replays at least 0", file=sys.stderr)
        return EXIT_USAGE
    selection = selection_of(args) if args.dlq_command == "replay" else Selection()
    if args.dlq_command == "replay":
        if selection.empty:
            print(
                "dsr dlq replay: choose what to replay (--message-id, --request-id, --reason, --older-than) or pass --all",
                file=sys.stderr,
            )
            return EXIT_USAGE
    try:
        store = store or _connect(args)
    except DsrError as exc:
        print(f"dsr dlq: {exc.message}", file=sys.stderr)
        return EXIT_ERROR
    try:
        letters = store.peek(args.limit)
        if args.dlq_command == "list":
            _emit(out, args.json, [d.as_dict() for d in letters], render_list(letters))
            if len(letters) >= args.limit:
                print(f"dsr dlq: showing the first {args.limit} dead letters (--limit)", file=sys.stderr)
            return EXIT_OK
        return _replay(args, store, letters, selection, now or datetime.now(UTC), out)
    except Exception as exc:  # noqa: BLE001 - an ops tool reports a coded line, never a traceback
        print(f"dsr dlq: Service Bus failed ({type(exc).__name__}: {redact(str(exc))[:300]})", file=sys.stderr)
        return EXIT_ERROR
    finally:
        store.close()


def _replay(
    args: argparse.Namespace, store: DeadLetterStore, letters: list[DeadLetter], selection: Selection, now: datetime, out: TextIO
) -> int:
    plans = plan_replays(letters, selection, max_replays=args.max_replays, now=now)
    refused = [ReplayResult(p, "refused") for p in plans if p.action == "refuse"]
    chosen = [p for p in plans if p.action == "replay"]
    if not args.execute:
        done = [ReplayResult(p, "would_replay") for p in chosen]
    else:
        done = store.replay(chosen) if chosen else []
    results = sorted(done + refused, key=lambda r: r.plan.letter.sequence_number)
    _emit(
        out,
        args.json,
        {"dryRun": not args.execute, "results": [r.as_dict() for r in results]},
        render_replay(results, dry_run=not args.execute),
    )
    return EXIT_OK if all(r.status in ("replayed", "would_replay") for r in results) else EXIT_PARTIAL


def _emit(out: TextIO, as_json: bool, document: Any, table: str) -> None:
    out.write((json.dumps(document, ensure_ascii=False, indent=2) if as_json else table) + "\n")
    out.flush()


def _connect(args: argparse.Namespace) -> DeadLetterStore:
    settings = load_settings()
    configure_logging(settings.log_level)
    namespace = args.namespace or settings.servicebus_namespace
    if not namespace:
        raise ConfigurationError(
            "no Service Bus namespace: set ServiceBusConnection__fullyQualifiedNamespace or pass --namespace"
        )
    return build_dead_letters(settings, namespace, args.queue or settings.request_queue)
