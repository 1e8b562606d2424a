"""The ticket's HTTP triggers, called as the worker calls them: the indexed app's functions with real
``azure.functions.HttpRequest`` objects, answering real ``HttpResponse`` objects (Azurite and the emulator behind)."""

from __future__ import annotations

import json
from typing import Any

import azure.functions as func
import pytest

from shared.service.processor import handle
from tests.handlers.conftest import indexed

pytestmark = pytest.mark.integration


def call(function: str, request_id: str, method: str) -> tuple[int, dict[str, Any], func.HttpResponse]:
    suffix = "/cancel" if function == "dsr_cancel" else ""
    request = func.HttpRequest(
        method=method, url=f"http://localhost/api/requests/{request_id}{suffix}", body=b"", route_params={"requestId": request_id}
    )
    response = indexed()[function].get_user_function()(request)
    assert isinstance(response, func.HttpResponse)
    return response.status_code, json.loads(response.get_body()), response


def test_the_http_triggers_need_a_function_key_and_have_their_routes() -> None:
    # GIVEN the app indexed as the worker does
    bindings = {name: json.loads(indexed()[name].get_function_json())["bindings"] for name in ("dsr_status", "dsr_cancel")}
    # THEN status is a GET and cancel a POST, each on its route, each behind a function key
    assert bindings["dsr_status"][0] | {} == {
        "direction": "IN",
        "type": "httpTrigger",
        "name": "req",
        "methods": ["GET"],
        "authLevel": "FUNCTION",
        "route": "requests/{requestId}",
    }
    assert bindings["dsr_cancel"][0]["methods"] == ["POST"]
    assert bindings["dsr_cancel"][0]["route"] == "requests/{requestId}/cancel"
    assert bindings["dsr_cancel"][0]["authLevel"] == "FUNCTION"


def test_status_of_an_unknown_request_is_a_coded_404(app_env) -> None:
    # WHEN a ticket asks for a request the app never saw
    status, body, response = call("dsr_status", "TCK-NEVER-SEEN", "GET")
    # THEN it gets 404 with a coded error, as JSON that no cache keeps
    assert status == 404
    assert body["error"]["code"] == "not_found"
    assert response.mimetype == "application/json"
    assert response.headers["Cache-Control"] == "no-store"


@pytest.mark.parametrize("bad", ["-starts-with-dash", "a" * 65, "has space", "../etc", "semi;colon"])
def test_status_of_an_id_that_cannot_be_one_is_a_400_naming_the_field(app_env, bad) -> None:
    status, body, _ = call("dsr_status", bad, "GET")
    assert status == 400
    assert body["error"]["code"] == "invalid_format"
    assert body["error"]["field"] == "requestId"


def test_status_of_a_finished_subject_export_shows_its_outcome_and_deadline_but_no_request_body(
    app_env, services, make_request
) -> None:
    # GIVEN a subject-scoped export that finished (the request names the subject)
    from tools.emulator import JANE, TENANT_ID

    subject = {"objectId": JANE.object_id, "tenantId": TENANT_ID, "upn": JANE.upn}
    body = make_request(scope="subject", subject=subject)
    outcome = handle(json.dumps(body), services)
    assert outcome["data"]["status"] == "completed", outcome["data"]["errors"]
    # WHEN the ticket asks for it
    status, answer, _ = call("dsr_status", body["requestId"], "GET")
    # THEN it gets the status, the deadline (30 days after receipt by default), the per-workspace counts and the outcome
    assert status == 200
    assert set(answer) == {"requestId", "operation", "status", "dueBy", "receivedAt", "updatedAt", "workspaces", "outcome"}
    assert (answer["requestId"], answer["operation"], answer["status"]) == (body["requestId"], "export", "completed")
    assert answer["outcome"] == outcome
    assert answer["dueBy"] == outcome["data"]["dueBy"]
    from datetime import datetime

    received = datetime.fromisoformat(answer["receivedAt"].replace("Z", "+00:00"))
    due = datetime.fromisoformat(answer["dueBy"].replace("Z", "+00:00"))
    assert (due - received).days == 30
    (workspace,) = answer["workspaces"]
    assert workspace["status"] == "completed"
    assert workspace["counts"] == next(iter(outcome["data"]["counts"].values()))
    # AND nothing beyond the outcome: not the subject's UPN or object id (which only the request holds), no lease owner
    text = json.dumps({k: v for k, v in answer.items() if k != "outcome"})
    assert JANE.upn not in json.dumps(answer)
    assert JANE.object_id not in json.dumps(answer)
    assert "owner" not in text and "checkpoint" not in text and "fingerprint" not in text


def test_cancel_of_a_finished_request_is_409_and_changes_nothing(app_env, services, make_request) -> None:
    # GIVEN a finished export
    body = make_request(resourceKinds=["models"])
    handle(json.dumps(body), services)
    _, before, _ = call("dsr_status", body["requestId"], "GET")
    # WHEN a ticket asks to cancel it
    status, answer, _ = call("dsr_cancel", body["requestId"], "POST")
    # THEN it is refused with a coded conflict, and the request's state is untouched
    assert status == 409
    assert answer["error"]["code"] == "conflict"
    assert answer["error"]["status"] == "completed"
    _, after, _ = call("dsr_status", body["requestId"], "GET")
    assert after == before


def test_cancel_before_the_request_arrives_leaves_a_tombstone_that_cancels_its_delivery(
    app_env, services, make_request, publisher
) -> None:
    # GIVEN a cancel of a request the app has not received yet
    body = make_request(operation="delete", resourceKinds=["models"])
    status, answer, _ = call("dsr_cancel", body["requestId"], "POST")
    assert (status, answer["status"]) == (202, "cancelled")
    _, seen, _ = call("dsr_status", body["requestId"], "GET")
    assert seen["status"] == "cancelled" and seen["outcome"] is None
    # AND asking again is accepted again (a ticket system retrying its POST)
    assert call("dsr_cancel", body["requestId"], "POST")[0] == 202
    # WHEN the request is delivered afterwards, and again
    first = handle(json.dumps(body), services)
    second = handle(json.dumps(body), services)
    # THEN it is cancelled at once with its own operation's outcome, nothing is deleted, and it stays cancelled
    assert first["type"] == "aml.dsr.delete.cancelled"
    assert first["data"]["status"] == "cancelled"
    assert second == first
    assert all(c["deleted"] == 0 for ws in first["data"]["counts"].values() for c in ws.values())
    _, final, _ = call("dsr_status", body["requestId"], "GET")
    assert final["status"] == "cancelled" and final["outcome"] == first and final["operation"] == "delete"


def test_a_request_cancelled_over_http_is_answered_cancelled_by_the_queue_trigger(app_env, servicebus, make_request) -> None:
    # GIVEN a ticket that cancelled a request, over HTTP, before its message was delivered
    from tests.handlers.test_request_trigger import deliver, trigger_message

    body = make_request(resourceKinds=["models"])
    assert call("dsr_cancel", body["requestId"], "POST")[0] == 202
    # WHEN the Service Bus trigger receives the request
    deliver(trigger_message(json.dumps(body).encode()))
    # THEN the outcome queue gets the cancelled outcome (status property "cancelled"), and the status shows it
    (event,) = servicebus.events()
    assert event["type"] == "aml.dsr.export.cancelled"
    (message,) = servicebus.messages()
    assert message.application_properties["status"] == "cancelled"
    _, seen, _ = call("dsr_status", body["requestId"], "GET")
    assert seen["status"] == "cancelled" and seen["outcome"] == event
