"""Delete requests end to end: plan, dry run, exact deletion with read-back proof, audit, workspace purge."""

from __future__ import annotations

import json
from typing import Any

import pytest

from shared.domain.contract import DELETE_KINDS
from shared.service.processor import handle
from tests.support.bundles import DEMO_TARGET, audit_lines

pytestmark = pytest.mark.integration
RESOURCE_ID = (
    "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroup}/providers/"
    "Microsoft.MachineLearningServices/workspaces/{workspace}"
).format(**DEMO_TARGET)


def _deletes(emulator: Any) -> list[dict[str, Any]]:
    return [r for r in emulator.requests() if r["method"] == "DELETE"]


def test_dry_run_names_every_planned_item_and_deletes_nothing(services, dsr_env, emulator, make_request):
    before = emulator.expected_ids()
    body = make_request(operation="delete", dryRun=True)
    event = handle(json.dumps(body), services)
    assert event["type"] == "aml.dsr.delete.completed"
    assert _deletes(emulator) == []
    planned = {(p["kind"], p["id"]) for p in event["data"]["plan"]}
    v1 = [k for k in DELETE_KINDS if k in ("models", "assets", "images", "services")]
    v2 = emulator.expected_deletables()  # the v2 delete kinds and the containers that go with their versions
    assert planned == {(k, i) for k in v1 for i in before[k]} | {(k, i) for k, ids in v2.items() for i in ids}
    assert emulator.expected_ids() == before
    assert event["data"]["counts"][RESOURCE_ID]["models"]["planned"] == len(before["models"])


def test_delete_removes_exactly_the_plan_and_proves_it(services, dsr_env, emulator, make_request):
    before = emulator.expected_ids()
    body = make_request(operation="delete", resourceKinds=["models", "services"])
    event = handle(json.dumps(body), services)
    assert event["type"] == "aml.dsr.delete.completed", event["data"]["errors"]
    after = emulator.expected_ids()
    # exactly the requested kinds are gone; everything else is untouched
    assert after["models"] == set() and after["services"] == set()
    for kind in before:
        if kind not in ("models", "services"):
            assert after[kind] == before[kind], kind
    deleted_paths = {r["path"].rsplit("/", 1)[1] for r in _deletes(emulator)}
    assert deleted_paths == before["models"] | before["services"]
    counts = event["data"]["counts"][RESOURCE_ID]
    assert counts["models"] == {
        "planned": len(before["models"]),
        "deleted": len(before["models"]),
        "absent": 0,
        "failed": 0,
        "verified": len(before["models"]),
    }
    assert counts["services"]["verified"] == len(before["services"])
    assert all(i["verified"] for i in event["data"]["items"])
    # the read-back happened: a GET of each deleted item after its DELETE
    gets = [r for r in emulator.requests() if r["method"] == "GET" and r["status"] == 404]
    assert len(gets) >= len(before["models"]) + len(before["services"])


def test_a_lost_delete_response_is_absent_on_retry_and_still_verified(services, dsr_env, emulator, make_request):
    victim = sorted(emulator.expected_ids()["models"])[0]
    emulator.configure(drop_delete_response=[victim])
    event = handle(json.dumps(make_request(operation="delete", resourceKinds=["models"])), services)
    assert event["data"]["status"] == "completed", event["data"]["errors"]
    [item] = [i for i in event["data"]["items"] if i["id"] == victim]
    assert item["result"] == "absent" and item["verified"] is True
    assert emulator.expected_ids()["models"] == set()


def test_a_redelivered_delete_request_repeats_its_outcome_and_no_call(services, dsr_env, emulator, make_request, publisher):
    body = make_request(operation="delete", resourceKinds=["assets"])
    first = handle(json.dumps(body), services)
    emulator.clear_requests()
    second = handle(json.dumps(body), services)
    assert second == first and second["data"]["status"] == "completed"
    assert [e["id"] for e in publisher.events] == [first["id"], first["id"]]
    assert emulator.requests() == [], "a finished request makes no Azure ML call"
    lines = audit_lines(dsr_env, body["requestId"])
    planned = first["data"]["counts"][RESOURCE_ID]["assets"]["planned"]
    assert planned > 0
    assert len([line for line in lines if line["method"] == "DELETE"]) == planned
    assert all("Bearer" not in json.dumps(line) for line in lines)


def test_the_audit_blob_is_only_ever_appended_to(services, dsr_env, emulator, make_request):
    body = make_request(operation="delete", resourceKinds=["images"], dryRun=True)
    handle(json.dumps(body), services)
    first = audit_lines(dsr_env, body["requestId"])
    services.audit().append(body["requestId"], [{"note": "appended later"}])
    second = audit_lines(dsr_env, body["requestId"])
    assert second[: len(first)] == first and second[-1] == {"note": "appended later"}


def test_audit_has_one_line_per_action(services, dsr_env, emulator, make_request):
    emulator_before = emulator.expected_ids()["images"]
    body = make_request(operation="delete", resourceKinds=["images"])
    handle(json.dumps(body), services)
    lines = audit_lines(dsr_env, body["requestId"])
    images = {line["id"] for line in lines if line["method"] == "PLAN"}
    assert images == emulator_before
    for method in ("PLAN", "DELETE", "GET"):
        assert {line["id"] for line in lines if line["method"] == method} == images, method
    line = next(line for line in lines if line["method"] == "DELETE")
    assert {"time", "requestId", "kind", "id", "method", "url", "status", "result"} <= set(line)
    assert line["status"] == 200 and line["result"] == "deleted"


def test_unconfirmed_workspace_delete_is_rejected_without_a_call(services, dsr_env, emulator, make_request):
    event = handle(json.dumps(make_request(operation="delete", deleteWorkspace=True, confirmWorkspace="ws-other")), services)
    assert event["type"] == "aml.dsr.delete.rejected"
    assert event["data"]["errors"][0]["code"] == "workspace_delete_unconfirmed"
    assert emulator.requests() == []


def test_confirmed_workspace_delete_purges_and_follows_the_operation(services, dsr_env, emulator, make_request):
    emulator.configure(lro_polls=2)
    body = make_request(operation="delete", deleteWorkspace=True, confirmWorkspace=DEMO_TARGET["workspace"])
    event = handle(json.dumps(body), services)
    assert event["type"] == "aml.dsr.delete.completed", event["data"]["errors"]
    [deletion] = emulator.workspace_deletions()
    assert deletion["forceToPurge"] is True
    assert event["data"]["workspaceDeletes"][RESOURCE_ID] == {"result": "deleted", "verified": True, "purge": True}
    polls = [r for r in emulator.requests() if "operationsStatus" in r["path"] or "Status" in r["path"]]
    assert len(polls) >= 2
    assert emulator.expected_ids()["workspace"] == set()
