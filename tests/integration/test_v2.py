"""Today's Azure ML (v2, ARM): export and delete against the emulator's v2 families, compared with its truth
(``expected_ids`` / ``expected_deletables``): archived items, paging, long-running deletes, 409s, secrets,
compute instances and subject scope (UPN and e-mail alias)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from shared.service.processor import handle
from tests.support.bundles import read_bundle
from tools.emulator import JANE_WITH_EMAIL, JOHN, SECRET_MARKER, V2_CONTAINER_KINDS, V2_DELETE_KINDS, V2_KINDS

pytestmark = pytest.mark.integration


def _subject(s: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"objectId": s.object_id, "tenantId": s.tenant_id, "upn": s.upn}
    if getattr(s, "emails", ()):
        body["emails"] = list(s.emails)
    return body


def _bundle_ids(env: dict[str, str], request_id: str) -> tuple[dict[str, list[str]], str]:
    """Per kind, the ids of the bundle's lines (repeats kept), and the whole bundle as text."""
    _manifest, files = read_bundle(env, request_id)
    ids: dict[str, list[str]] = {}
    for name, lines in files.items():
        ids[name.rsplit("/", 1)[1].removesuffix(".jsonl")] = [line["id"] for line in lines]
    return ids, json.dumps(files)


def test_a_workspace_export_holds_every_v2_item_archived_included_once_without_secrets_or_posts(
    services, dsr_env, emulator, make_request
):
    # GIVEN the demo workspace with both families (archived jobs and versions, disabled schedules, paging)
    expected = emulator.expected_ids()
    assert all(expected[kind] for kind in V2_KINDS), [k for k in V2_KINDS if not expected[k]]
    emulator.clear_requests()
    # WHEN every kind is exported (the default: v1 and v2 together)
    body = make_request()
    event = handle(json.dumps(body), services)
    # THEN it completed, each v2 kind holds exactly the truth, by ARM id, each once
    assert event["type"] == "aml.dsr.export.completed", event["data"]["errors"]
    ids, text = _bundle_ids(dsr_env, body["requestId"])
    for kind in V2_KINDS:
        assert sorted(ids[kind]) == sorted(expected[kind]), kind
        assert len(ids[kind]) == len(set(ids[kind])), kind
    assert expected["runs"] and set(ids["runs"]) == expected["runs"]  # the v1 kinds came along
    # AND no secret value is in the bundle, and not one POST left the app (listKeys, listSecrets, token...)
    assert SECRET_MARKER not in text
    assert [r for r in emulator.requests() if r["method"] != "GET"] == []
    v2_lists = [r for r in emulator.requests() if r["path"].rstrip("/").endswith(("/jobs", "/versions", "/schedules"))]
    assert v2_lists and all({k.lower(): v for k, v in r["query"].items()}.get("listviewtype") == "All" for r in v2_lists)


def test_a_delete_of_every_v2_kind_leaves_none_and_touches_no_other_kind(services, dsr_env, emulator, make_request):
    # GIVEN what the v2 delete kinds cover, and the rest of the workspace
    expected = emulator.expected_deletables()
    before = emulator.expected_ids()
    assert expected["computeInstances"] and expected["onlineDeployments"] and expected["modelContainers"]
    # WHEN every v2 delete kind is deleted
    body = make_request(operation="delete", resourceKinds=list(V2_DELETE_KINDS))
    event = handle(json.dumps(body), services)
    # THEN it completed, every planned item is verified gone, and nothing of those kinds is left
    assert event["type"] == "aml.dsr.delete.completed", event["data"]["errors"]
    assert all(i["verified"] for i in event["data"]["items"])
    planned: dict[str, set[str]] = {}
    for item in event["data"]["items"]:
        planned.setdefault(item["kind"], set()).add(item["id"])
    for kind in (*V2_DELETE_KINDS, *V2_CONTAINER_KINDS):
        assert planned.get(kind, set()) == expected[kind], kind
    left = emulator.expected_deletables()
    assert all(not left[kind] for kind in left), {k: v for k, v in left.items() if v}
    # AND no other kind was touched: no cluster, no v1 item, connections and datastores kept
    after = emulator.expected_ids()
    deleted = {r["id"] for r in emulator.resource_deletions()}
    assert all(r["kind"] != "computes" for r in emulator.resource_deletions())
    assert {r.get("underlyingResourceAction") for r in emulator.resource_deletions() if "computeType" in r} == {"Delete"}
    for kind in ("models", "assets", "images", "services", "runs", "connections", "datastores", "computes"):
        assert after[kind] == before[kind] - deleted, kind
    counts = event["data"]["counts"]
    (per_kind,) = counts.values()
    assert per_kind["modelContainers"]["verified"] == len(expected["modelContainers"])


def test_a_subject_export_holds_exactly_the_records_naming_the_subject(services, dsr_env, emulator, make_request):
    # GIVEN Jane, named by her UPN, her object id and an e-mail alias (a look-alike of which is in the data)
    expected = emulator.expected_ids(subject=JANE_WITH_EMAIL)
    assert any(expected[kind] for kind in V2_KINDS)
    # WHEN her records are exported
    body = make_request(scope="subject", subject=_subject(JANE_WITH_EMAIL))
    event = handle(json.dumps(body), services)
    # THEN each v2 kind holds exactly what names her (a parent naming only John is not there), without secrets
    assert event["type"] == "aml.dsr.export.completed", event["data"]["errors"]
    ids, text = _bundle_ids(dsr_env, body["requestId"])
    for kind in V2_KINDS:
        assert sorted(ids.get(kind, [])) == sorted(expected[kind]), kind
    assert SECRET_MARKER not in text


@pytest.mark.parametrize("who", [JANE_WITH_EMAIL, JOHN], ids=["jane", "john"])
def test_a_subject_delete_deletes_exactly_their_deletables_and_lists_mentions_for_review(
    services, dsr_env, emulator, make_request, who
):
    # GIVEN what the subject created or is assigned, and what merely mentions them
    expected = emulator.expected_deletables(subject=who)
    everything = emulator.expected_deletables()
    assert any(expected.values())
    # WHEN their v2 items are deleted
    body = make_request(operation="delete", resourceKinds=list(V2_DELETE_KINDS), scope="subject", subject=_subject(who))
    event = handle(json.dumps(body), services)
    # THEN exactly those went, everyone else's remain, and the mention-only ones are listed for review
    assert event["type"] == "aml.dsr.delete.completed", event["data"]["errors"]
    planned: dict[str, set[str]] = {}
    for item in event["data"]["items"]:
        planned.setdefault(item["kind"], set()).add(item["id"])
    for kind in expected:
        assert planned.get(kind, set()) == expected[kind], kind
    left = emulator.expected_deletables()
    for kind in expected:
        assert left[kind] == everything[kind] - expected[kind], kind
    assert all(r["matchedBy"] in ("identity", "mention") for r in event["data"]["review"])
