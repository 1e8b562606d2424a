"""Dead letters of the request queue and how a replay is planned: pure data and functions.

A replay resends a dead letter with the id ``<original>:replay:<n>`` (duplicate detection must not swallow
it, and a second attempt of the same replay reuses the same id) and application properties recording the
replay; a message already replayed ``max_replays`` times is refused. The Service Bus I/O is
``shared.adapters.servicebus.ServiceBusDeadLetters``; the command is ``shared.cli.dlq``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from shared.domain.contract import request_identity

REPLAY_COUNT = "dsrReplayCount"
REPLAYED_AT = "dsrReplayedAt"
REPLAY_ORIGINAL_ID = "dsrReplayOriginalMessageId"
REPLAY_PREVIOUS_ID = "dsrReplayPreviousMessageId"
REPLAY_REASON = "dsrReplayDeadLetterReason"
REPLAY_DESCRIPTION = "dsrReplayDeadLetterDescription"

MAX_MESSAGE_ID = 128  # Service Bus limit
DEFAULT_MAX_REPLAYS = 3


@dataclass(frozen=True)
class DeadLetter:
    """One message of the dead-letter queue, as peeked (properties with ``str`` keys and values)."""

    sequence_number: int
    message_id: str | None
    request_id: str | None
    reason: str | None
    description: str | None
    delivery_count: int | None
    enqueued_time: datetime | None
    properties: Mapping[str, Any] = field(default_factory=dict)

    @property
    def replay_count(self) -> int:
        value = self.properties.get(REPLAY_COUNT)
        try:
            return max(0, int(value)) if value is not None and not isinstance(value, bool) else 0
        except (TypeError, ValueError):
            return 0

    @property
    def original_message_id(self) -> str:
        original = self.properties.get(REPLAY_ORIGINAL_ID)
        if isinstance(original, str) and original:
            return original
        return self.message_id or f"seq-{self.sequence_number}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "sequenceNumber": self.sequence_number,
            "messageId": self.message_id,
            "requestId": self.request_id,
            "reason": self.reason,
            "description": self.description,
            "deliveryCount": self.delivery_count,
            "enqueuedTime": iso(self.enqueued_time),
            "replayCount": self.replay_count,
        }


@dataclass(frozen=True)
class ReplayPlan:
    letter: DeadLetter
    action: Literal["replay", "refuse"]
    new_message_id: str | None = None
    properties: Mapping[str, Any] = field(default_factory=dict)
    note: str = ""


ReplayStatus = Literal["would_replay", "replayed", "refused", "not_found", "failed", "resent_not_completed"]


@dataclass(frozen=True)
class ReplayResult:
    plan: ReplayPlan
    status: ReplayStatus
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        letter = self.plan.letter
        return {
            "status": self.status,
            "sequenceNumber": letter.sequence_number,
            "messageId": letter.message_id,
            "newMessageId": self.plan.new_message_id,
            "requestId": letter.request_id,
            "reason": letter.reason,
            "replayCount": letter.replay_count,
            "note": self.note or self.plan.note,
        }


# -- selection and planning (pure) -----------------------------------------------------------------


@dataclass(frozen=True)
class Selection:
    """Which dead letters to replay: every given criterion must hold (``everything`` = no criterion)."""

    message_ids: frozenset[str] = frozenset()
    request_ids: frozenset[str] = frozenset()
    reason: str | None = None
    older_than: timedelta | None = None
    everything: bool = False

    @property
    def empty(self) -> bool:
        return not (self.message_ids or self.request_ids or self.reason or self.older_than is not None or self.everything)

    def matches(self, letter: DeadLetter, now: datetime) -> bool:
        if self.message_ids and letter.message_id not in self.message_ids:
            return False
        if self.request_ids and letter.request_id not in self.request_ids:
            return False
        if self.reason is not None and (letter.reason or "").casefold() != self.reason.casefold():
            return False
        if self.older_than is not None:
            enqueued = aware(letter.enqueued_time)
            if enqueued is None or now - enqueued < self.older_than:
                return False
        return True


def derived_message_id(letter: DeadLetter) -> str:
    """``<original>:replay:<n>``: stable for the same dead letter, new for each replay generation."""
    n = letter.replay_count + 1
    original = letter.original_message_id
    candidate = f"{original}:replay:{n}"
    if len(candidate) <= MAX_MESSAGE_ID:
        return candidate
    return f"sha256-{hashlib.sha256(original.encode()).hexdigest()[:40]}:replay:{n}"


def replay_properties(letter: DeadLetter, now: datetime) -> dict[str, Any]:
    return {
        REPLAY_COUNT: letter.replay_count + 1,
        REPLAYED_AT: iso(now),
        REPLAY_ORIGINAL_ID: letter.original_message_id,
        REPLAY_PREVIOUS_ID: letter.message_id or "",
        REPLAY_REASON: (letter.reason or "")[:256],
        REPLAY_DESCRIPTION: (letter.description or "")[:512],
    }


def plan_replays(letters: Iterable[DeadLetter], selection: Selection, *, max_replays: int, now: datetime) -> list[ReplayPlan]:
    plans: list[ReplayPlan] = []
    for letter in letters:
        if not selection.matches(letter, now):
            continue
        if letter.replay_count >= max_replays:
            plans.append(
                ReplayPlan(
                    letter,
                    "refuse",
                    note=f"already replayed {letter.replay_count} time(s); the limit is {max_replays} (--max-replays)",
                )
            )
            continue
        plans.append(ReplayPlan(letter, "replay", derived_message_id(letter), replay_properties(letter, now)))
    return plans


# -- helpers shared with the adapter ------------------------------------------------------------------


def request_id_of(body: bytes) -> str | None:
    """The requestId a dead letter carries (through an Event Grid envelope too), when it can be read."""
    return request_identity(body)[0]


def text_properties(raw: Mapping[Any, Any] | None) -> dict[str, Any]:
    """Application properties with ``str`` keys and ``str`` text values (received ones come as bytes)."""
    out: dict[str, Any] = {}
    for key, value in (raw or {}).items():
        name = key.decode("utf-8", "replace") if isinstance(key, bytes) else str(key)
        out[name] = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    return out


def aware(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def iso(moment: datetime | None) -> str | None:
    moment = aware(moment)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if moment else None
