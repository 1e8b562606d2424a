"""``dsr dlq list`` / ``dsr dlq replay`` through the CLI parser, the real adapter and a fake Service Bus."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from shared.adapters.servicebus import ServiceBusDeadLetters
from shared.cli import build_parser, dlq
from shared.cli.dlq import parse_duration
from shared.domain.deadletter import DeadLetter, derived_message_id
from tests.support.servicebus_fakes import FakeReceivedMessage, FakeServiceBusClient, received_properties

MESSAGES = Path(__file__).resolve().parents[1] / "fixtures" / "messages"
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
QUEUE = "dsr-requests"


def dead_letter(
    name: str,
    message_id: str,
    *,
    reason: str = "MaxDeliveryCountExceeded",
    age: timedelta = timedelta(hours=1),
    properties: dict[str, Any] | None = None,
) -> FakeReceivedMessage:
    return FakeReceivedMessage(
        body_bytes=(MESSAGES / name).read_bytes(),
        message_id=message_id,
        dead_letter_reason=reason,
        dead_letter_error_description="Message could not be consumed after 10 delivery attempts.",
        delivery_count=10,
        enqueued_time_utc=NOW - age,
        correlation_id=None,
        subject="dsr.request",
        application_properties=received_properties({"source": "servicenow", **(properties or {})}),
    )


@pytest.fixture
def client() -> FakeServiceBusClient:
    fake = FakeServiceBusClient("ns.servicebus.windows.net", credential=None)
    fake.dead_letters[QUEUE] = [
        dead_letter("export-request.json", "m-123", age=timedelta(days=3)),
        dead_letter("export-request.eventgrid.json", "m-125", reason="ProcessingFailed"),
        dead_letter(
            "delete-request.dry-run.json",
            "m-126:replay:2",
            properties={"dsrReplayCount": 2, "dsrReplayOriginalMessageId": "m-126"},
        ),
        dead_letter(
            "export-request.cloudevent.json",
            "m-124:replay:3",
            properties={"dsrReplayCount": 3, "dsrReplayOriginalMessageId": "m-124"},
        ),
    ]
    return fake


def run(client: FakeServiceBusClient, *argv: str) -> tuple[int, str]:
    args = build_parser().parse_args(["dlq", *argv])
    out = io.StringIO()
    store = ServiceBusDeadLetters("ns.servicebus.windows.net", QUEUE, client_factory=lambda: client, max_wait_time=0.01)
    code = dlq.main(args, store, now=NOW, out=out)
    return code, out.getvalue()


def sequence_of(client: FakeServiceBusClient, message_id: str) -> int:
    return next(m.sequence_number for m in client.dead_letters[QUEUE] if m.message_id == message_id)


def test_list_shows_each_dead_letter_and_never_settles(client: FakeServiceBusClient) -> None:
    # WHEN ops list the dead letters
    code, out = run(client, "list")
    # THEN each one's requestId (unwrapped from an Event Grid envelope too), reason, description,
    # delivery count, enqueued time and replay count are shown
    assert code == 0
    for expected in (
        "TCK-2026-000123",
        "TCK-2026-000125",
        "MaxDeliveryCountExceeded",
        "ProcessingFailed",
        "Message could not be consumed",
        "2026-11-24T12:00:00Z",
        "4 dead letter(s)",
    ):
        assert expected in out
    # AND nothing was received, completed or abandoned: only peeked
    assert {name for name, _ in client.actions()} == {"peek"}
    assert len(client.dead_letters[QUEUE]) == 4


def test_list_json_is_for_machines(client: FakeServiceBusClient) -> None:
    code, out = run(client, "list", "--json")
    letters = json.loads(out)
    assert code == 0
    assert [d["requestId"] for d in letters] == ["TCK-2026-000123", "TCK-2026-000125", "TCK-2026-000126", "TCK-2026-000124"]
    assert letters[0] == {
        "sequenceNumber": letters[0]["sequenceNumber"],
        "messageId": "m-123",
        "requestId": "TCK-2026-000123",
        "reason": "MaxDeliveryCountExceeded",
        "description": "Message could not be consumed after 10 delivery attempts.",
        "deliveryCount": 10,
        "enqueuedTime": "2026-11-24T12:00:00Z",
        "replayCount": 0,
    }
    assert letters[2]["replayCount"] == 2


def test_list_reads_past_one_peek_page(client: FakeServiceBusClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("shared.adapters.servicebus.PEEK_BATCH", 1)
    code, out = run(client, "list", "--json")
    assert code == 0 and len(json.loads(out)) == 4
    code, out = run(client, "list", "--json", "--limit", "2")
    assert len(json.loads(out)) == 2


def test_replay_is_a_dry_run_by_default(client: FakeServiceBusClient) -> None:
    # WHEN ops replay everything without --execute
    code, out = run(client, "replay", "--all")
    # THEN the plan is shown (three would be replayed, one refused) and nothing was sent or settled
    assert code == 3
    rows = out.splitlines()[1:-1]
    assert [row.split("  ")[0] for row in rows] == ["would replay", "would replay", "would replay", "refused"]
    assert out.splitlines()[-1].endswith("dry run: nothing was sent or settled (add --execute to replay)")
    assert "m-123:replay:1" in out
    assert client.sent == {} and {name for name, _ in client.actions()} == {"peek"}


def test_replay_sends_first_then_completes_with_a_derived_id_and_recorded_properties(client: FakeServiceBusClient) -> None:
    # WHEN ops replay one request for real
    seq = sequence_of(client, "m-123")
    code, out = run(client, "replay", "--request-id", "TCK-2026-000123", "--execute")
    # THEN the copy went to the request queue before the dead letter was completed
    assert code == 0 and "replayed" in out
    settled = [(name, detail) for name, detail in client.actions("send", "complete")]
    assert [name for name, _ in settled] == ["send", "complete"]
    assert settled[1][1] == seq
    # AND the copy has the original body, a derived id and properties recording the replay
    (copy,) = client.sent[QUEUE]
    assert b"".join(copy.body) == (MESSAGES / "export-request.json").read_bytes()
    assert copy.message_id == "m-123:replay:1"
    assert copy.content_type == "application/json" and copy.subject == "dsr.request"
    assert copy.application_properties == {
        "source": "servicenow",
        "dsrReplayCount": 1,
        "dsrReplayedAt": "2026-11-27T12:00:00Z",
        "dsrReplayOriginalMessageId": "m-123",
        "dsrReplayPreviousMessageId": "m-123",
        "dsrReplayDeadLetterReason": "MaxDeliveryCountExceeded",
        "dsrReplayDeadLetterDescription": "Message could not be consumed after 10 delivery attempts.",
    }
    # AND the other dead letters are still there, unlocked (those received on the way were abandoned)
    assert sorted(str(m.message_id) for m in client.dead_letters[QUEUE]) == ["m-124:replay:3", "m-125", "m-126:replay:2"]
    assert client.locked == set()


def test_a_replayed_message_keeps_its_original_id_and_counts_on(client: FakeServiceBusClient) -> None:
    code, _ = run(client, "replay", "--message-id", "m-126:replay:2", "--execute")
    (copy,) = client.sent[QUEUE]
    assert code == 0
    assert copy.message_id == "m-126:replay:3"
    assert copy.application_properties["dsrReplayCount"] == 3
    assert copy.application_properties["dsrReplayOriginalMessageId"] == "m-126"
    assert copy.application_properties["dsrReplayPreviousMessageId"] == "m-126:replay:2"


def test_replay_refuses_a_message_replayed_max_replays_times(client: FakeServiceBusClient) -> None:
    # GIVEN a dead letter already replayed 3 times (the default limit)
    # WHEN ops try to replay it
    code, out = run(client, "replay", "--message-id", "m-124:replay:3", "--execute", "--json")
    # THEN it is refused, nothing is sent, and it stays in the dead-letter queue
    result = json.loads(out)
    assert code == 3
    assert [r["status"] for r in result["results"]] == ["refused"]
    assert "--max-replays" in result["results"][0]["note"]
    assert client.sent == {} and len(client.dead_letters[QUEUE]) == 4
    # WHEN the limit is raised on purpose
    code, _ = run(client, "replay", "--message-id", "m-124:replay:3", "--execute", "--max-replays", "5")
    # THEN it goes
    assert code == 0 and [m.message_id for m in client.sent[QUEUE]] == ["m-124:replay:4"]


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        (["--message-id", "m-125"], ["m-125"]),
        (["--message-id", "m-125", "--message-id", "m-123"], ["m-123", "m-125"]),
        (["--request-id", "TCK-2026-000125"], ["m-125"]),
        (["--reason", "processingfailed"], ["m-125"]),
        (["--older-than", "2d"], ["m-123"]),
        (["--older-than", "30m", "--reason", "MaxDeliveryCountExceeded"], ["m-123", "m-126:replay:2"]),
        (["--all"], ["m-123", "m-125", "m-126:replay:2"]),
        (["--request-id", "TCK-nope"], []),
    ],
)
def test_replay_selects_by_message_id_request_id_reason_and_age(
    client: FakeServiceBusClient, selector: list[str], expected: list[str]
) -> None:
    code, out = run(client, "replay", *selector, "--json")
    planned = sorted(r["messageId"] for r in json.loads(out)["results"] if r["status"] == "would_replay")
    assert planned == expected
    assert code == 0 or "refused" in out


def test_replay_needs_a_selector(client: FakeServiceBusClient, capsys: pytest.CaptureFixture[str]) -> None:
    code, _ = run(client, "replay", "--execute")
    assert code == 2
    assert "--all" in capsys.readouterr().err
    assert client.actions() == []


def test_a_failed_send_keeps_the_dead_letter(client: FakeServiceBusClient) -> None:
    client.send_failures = 1
    code, out = run(client, "replay", "--message-id", "m-123", "--execute", "--json")
    assert code == 3
    assert [r["status"] for r in json.loads(out)["results"]] == ["failed"]
    assert not client.actions("complete") and len(client.dead_letters[QUEUE]) == 4 and client.locked == set()


def test_a_failed_complete_after_the_send_is_reported_and_a_second_replay_reuses_the_id(client: FakeServiceBusClient) -> None:
    # GIVEN completing the dead letter fails once (its lock was lost) after the copy was sent
    client.complete_failures = 1
    code, out = run(client, "replay", "--message-id", "m-123", "--execute", "--json")
    assert code == 3
    assert [r["status"] for r in json.loads(out)["results"]] == ["resent_not_completed"]
    # WHEN ops replay it again
    code, _ = run(client, "replay", "--message-id", "m-123", "--execute")
    # THEN the second copy has the same message id: duplicate detection on the queue drops it
    assert code == 0
    assert [m.message_id for m in client.sent[QUEUE]] == ["m-123:replay:1", "m-123:replay:1"]


def test_a_dead_letter_that_vanished_before_the_replay_is_reported(
    client: FakeServiceBusClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN someone else settles the dead letter between the peek and the receive
    real_peek = ServiceBusDeadLetters.peek

    def peek_then_vanish(self: ServiceBusDeadLetters, limit: int) -> list[DeadLetter]:
        letters = real_peek(self, limit)
        client.dead_letters[QUEUE] = [m for m in client.dead_letters[QUEUE] if m.message_id != "m-123"]
        return letters

    monkeypatch.setattr(ServiceBusDeadLetters, "peek", peek_then_vanish)
    code, out = run(client, "replay", "--message-id", "m-123", "--execute", "--json")
    assert code == 3
    assert [r["status"] for r in json.loads(out)["results"]] == ["not_found"]
    assert client.sent == {}


def test_the_dsr_command_reaches_service_bus_with_the_app_settings(
    client: FakeServiceBusClient, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN the app's settings name the namespace, and connect() is the fake
    from shared.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ServiceBusConnection__fullyQualifiedNamespace", "ns.servicebus.windows.net")
    monkeypatch.setenv("DSR_REQUEST_QUEUE", QUEUE)
    monkeypatch.setenv("DSR_AUTH", "default")
    made: list[str] = []

    def connect(namespace: str, credential: Any) -> FakeServiceBusClient:
        made.append(namespace)
        return client

    monkeypatch.setattr("shared.adapters.servicebus.connect", connect)
    # WHEN ops run `dsr dlq list --json`
    code = main(["dlq", "list", "--json"])
    # THEN the request queue's dead letters of that namespace are listed, and the client is closed
    assert code == 0 and made == ["ns.servicebus.windows.net"]
    assert len(json.loads(capsys.readouterr().out)) == 4
    assert client.closed


def test_the_dsr_command_names_a_missing_namespace(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from shared.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ServiceBusConnection__fullyQualifiedNamespace", raising=False)
    assert main(["dlq", "list"]) == 1
    assert "ServiceBusConnection__fullyQualifiedNamespace" in capsys.readouterr().err


def test_a_derived_id_stays_within_the_service_bus_limit() -> None:
    letter = DeadLetter(1, "x" * 128, None, None, None, None, None, {})
    derived = derived_message_id(letter)
    assert len(derived) <= 128 and derived.endswith(":replay:1")
    assert derived == derived_message_id(letter)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("90s", timedelta(seconds=90)), ("30m", timedelta(minutes=30)), ("2h", timedelta(hours=2)), ("7d", timedelta(days=7))],
)
def test_ages_are_written_like_30m_2h_7d(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


def test_a_hostile_description_cannot_drive_the_terminal() -> None:
    letter = DeadLetter(1, "m", "TCK-1", "x\x1b[2Jy", "line\nbreak\x07", 1, NOW, {})
    table = dlq.render_list([letter])
    assert "\x1b" not in table and "\x07" not in table and "line?break" in table
