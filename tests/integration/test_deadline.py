"""The deadline: ``dueBy`` (given, or 30 days after first receipt) kept in the state, shown by the status,
carried by the outcome; one ``aml.dsr.request.due_soon`` event per unfinished request within 72 hours of it."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import pytest

from shared.domain.contract import parse_request
from shared.domain.errors import RequestRejected
from shared.service.processor import handle
from shared.service.state import StateStore
from shared.service.status import request_status
from shared.service.watchdog import notify_due_soon

pytestmark = pytest.mark.integration


def rfc3339(delta: timedelta) -> str:
    return (datetime.now(UTC) + delta).strftime("%Y-%m-%dT%H:%M:%SZ")


def claim_and_vanish(services, body) -> None:
    """A worker took the request and is still on it (or vanished): the request is unfinished."""
    request = parse_request(json.dumps(body))
    StateStore(services.state().backend, lease_seconds=60, owner="busy").claim(request.requestId, request.model_dump(mode="json"))


def test_a_given_due_by_is_kept_shown_and_carried_by_the_outcome(services, make_request) -> None:
    # GIVEN a request with its own deadline, in another time zone
    body = make_request(resourceKinds=["models"], dueBy="2027-01-15T09:30:00+01:00")
    # WHEN it runs
    outcome = handle(json.dumps(body), services)
    # THEN the outcome and the status carry it, in UTC
    assert outcome["data"]["dueBy"] == "2027-01-15T08:30:00Z"
    assert request_status(services.state(), body["requestId"])[1]["dueBy"] == "2027-01-15T08:30:00Z"


@pytest.mark.parametrize("bad", ["2027-01-15", "2027-01-15T09:30:00", "tomorrow", "2027-02-30T00:00:00Z", 20270115])
def test_a_due_by_that_is_not_rfc3339_with_a_zone_is_rejected_naming_the_field(bad) -> None:
    body = {"schemaVersion": "1", "requestId": "TCK-DUE-1", "operation": "export", "dueBy": bad}
    body["targets"] = [
        {
            "subscriptionId": "00000000-1111-2222-3333-444444444444",
            "resourceGroup": "rg",
            "workspace": "ws-1",
            "location": "westeurope",
        }
    ]
    with pytest.raises(RequestRejected) as caught:
        parse_request(json.dumps(body))
    assert [v.field for v in caught.value.violations] == ["dueBy"]


def test_one_due_soon_event_per_unfinished_request_near_its_deadline(services, make_request, publisher) -> None:
    # GIVEN an unfinished request due in 48 hours, one due in 10 days, and a finished one due in 1 hour
    near = make_request(resourceKinds=["models"], dueBy=rfc3339(timedelta(hours=48)))
    far = make_request(resourceKinds=["models"], dueBy=rfc3339(timedelta(days=10)))
    done = make_request(resourceKinds=["models"], dueBy=rfc3339(timedelta(hours=1)))
    claim_and_vanish(services, near)
    claim_and_vanish(services, far)
    handle(json.dumps(done), services)
    publisher.events.clear()
    # WHEN the watchdog looks, twice
    first = notify_due_soon(services)
    second = notify_due_soon(services)
    # THEN exactly one reminder went out, for the near one, with its id, type and deadline; the second look sent none
    assert (first, second) == (1, 0)
    (event,) = publisher.events
    assert event["id"] == f"{near['requestId']}:due_soon"
    assert event["type"] == "aml.dsr.request.due_soon"
    assert event["data"]["dueBy"] == near["dueBy"]
    assert event["data"]["status"] == "in_progress"
    # AND the reminder is recorded in the request's state
    found = services.state().read(near["requestId"])
    assert found is not None and found[0]["dueSoonNotifiedAt"]


def test_the_default_deadline_is_thirty_days_after_first_receipt(services, make_request) -> None:
    body = make_request(resourceKinds=["models"])
    before = time.time()
    handle(json.dumps(body), services)
    view = request_status(services.state(), body["requestId"])[1]
    due = datetime.strptime(view["dueBy"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
    assert abs(due - (before + 30 * 86400)) < 120
    # AND a redelivery keeps the first receipt's deadline
    handle(json.dumps(body), services)
    assert request_status(services.state(), body["requestId"])[1]["dueBy"] == view["dueBy"]


def test_a_failed_publish_leaves_the_reminder_for_the_next_sweep(services, make_request, publisher) -> None:
    # GIVEN an unfinished request near its deadline, and an outcome queue that fails once
    body = make_request(resourceKinds=["models"], dueBy=rfc3339(timedelta(hours=2)))
    claim_and_vanish(services, body)

    class FailingOnce:
        calls = 0

        def publish(self, event):
            FailingOnce.calls += 1
            if FailingOnce.calls == 1:
                raise ConnectionError("queue down")
            publisher.publish(event)

    services.publishers = [FailingOnce()]
    # WHEN the first sweep fails to publish
    with pytest.raises(ConnectionError):
        notify_due_soon(services)
    # THEN the next sweep sends the reminder
    assert notify_due_soon(services) == 1
    assert [e["id"] for e in publisher.events] == [f"{body['requestId']}:due_soon"]
