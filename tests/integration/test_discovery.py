"""Contract 6.2 against the emulator's Resource Graph and many-workspace tenant (real HTTP, Azurite):
``dsr process``'s path (``handle``) finds every workspace of the scope — all kinds, across pages, under the
quota and through a 429 — exports only the subject's records of each, and publishes one outcome listing
each workspace."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

from shared.service.processor import handle
from tests.support.bundles import read_bundle
from tools.emulator import (
    DEFAULT_MANAGEMENT_GROUPS,
    DEMO_SUBSCRIPTION,
    JANE,
    TENANT_SUBSCRIPTIONS,
    EmulatorServer,
)

pytestmark = pytest.mark.integration

TENANT = 12
KINDS = ["models", "computes", "datastores", "experiments", "runs"]
RG_PATH = "/providers/microsoft.resourcegraph/resources"


@pytest.fixture
def tenant(emulator: EmulatorServer) -> Iterator[EmulatorServer]:
    emulator.configure(tenant_workspaces=TENANT, rg_page_size=4, rg_quota=15, rg_window_seconds=5.0)
    emulator.reset()
    yield emulator
    emulator.configure(tenant_workspaces=0, rg_page_size=1000, rg_quota=15, rg_window_seconds=5.0)
    emulator.reset()


def _subject() -> dict[str, Any]:
    return {"objectId": JANE.object_id, "tenantId": JANE.tenant_id, "upn": JANE.upn}


def _in_scope(emulator: EmulatorServer, subscriptions: list[str]) -> list[str]:
    wanted = {s.lower() for s in subscriptions}
    return sorted((ws.arm["id"] for ws in emulator.core.workspaces.values() if ws.subscription.lower() in wanted), key=str.lower)


def _rg_calls(emulator: EmulatorServer) -> list[dict[str, Any]]:
    return [r for r in emulator.requests() if r["path"].lower().endswith(RG_PATH)]


def _discover(make_request: Callable[..., dict[str, Any]], scope: dict[str, Any]) -> dict[str, Any]:
    body = make_request(scope="subject", subject=_subject(), resourceKinds=KINDS, discover=scope)
    del body["targets"]
    return body


def test_every_workspace_of_the_subscriptions_is_found_and_exported_once(services, dsr_env, tenant, make_request, publisher):
    # GIVEN 14 workspaces (plain, hubs, projects) over 4 subscriptions, Resource Graph answering 4 rows a page
    subscriptions = [DEMO_SUBSCRIPTION, *TENANT_SUBSCRIPTIONS]
    body = _discover(make_request, {"subscriptions": subscriptions})
    # WHEN the request runs as dsr process runs it
    event = handle(json.dumps(body), services)
    # THEN one outcome, listing every workspace of the scope once, each completed
    assert publisher.events == [event]
    data = event["data"]
    expected = _in_scope(tenant, subscriptions)
    assert data["status"] == "completed", data["errors"]
    assert data["discovered"] == len(expected) == TENANT + 2
    assert [w["workspace"] for w in data["workspaces"]] == expected
    assert all(w["status"] == "completed" and w["errors"] == [] for w in data["workspaces"])
    assert {ws.arm.get("kind", "Default") for ws in tenant.core.workspaces.values()} >= {"Default", "Hub", "Project"}
    # AND Resource Graph was paged (4 rows a page) with one query per page
    assert len(_rg_calls(tenant)) == -(-len(expected) // 4)
    # AND the one bundle holds each workspace's records of Jane, and only under that workspace's folder
    manifest, files = read_bundle(dsr_env, body["requestId"])
    assert manifest["status"] == "completed" and len(manifest["workspaces"]) == len(expected)
    for ws in tenant.core.workspaces.values():
        want = tenant.expected_ids(ws.subscription, ws.resource_group, ws.name, subject=JANE)
        prefix = f"{body['requestId']}/{ws.subscription}/{ws.resource_group}/{ws.name}/"
        for kind in KINDS:
            got = {line["id"] for name, lines in files.items() if name == f"{prefix}{kind}.jsonl" for line in lines}
            assert want.get(kind, set()) <= got, (ws.name, kind)


def test_a_management_group_scope_finds_only_its_subscriptions(services, dsr_env, tenant, make_request):
    body = _discover(make_request, {"managementGroups": ["mg-production"]})
    event = handle(json.dumps(body), services)
    expected = _in_scope(tenant, DEFAULT_MANAGEMENT_GROUPS["mg-production"])
    assert event["data"]["status"] == "completed", event["data"]["errors"]
    assert [w["workspace"] for w in event["data"]["workspaces"]] == expected and expected


def test_the_quota_and_a_429_are_respected(services, dsr_env, tenant, make_request):
    # GIVEN a quota of one query a second, already used up by the same identity
    tenant.configure(rg_quota=1, rg_window_seconds=1.0)
    token = tenant.issue_token()
    url = f"{dsr_env['DSR_ARM_ENDPOINT']}/providers/Microsoft.ResourceGraph/resources?api-version=2024-04-01"
    query = {
        "subscriptions": [DEMO_SUBSCRIPTION],
        "query": "resources | where type =~ 'microsoft.machinelearningservices/workspaces'",
    }
    assert requests.post(url, json=query, headers={"Authorization": f"Bearer {token}"}, timeout=10).status_code == 200
    # WHEN a discovery needing several pages runs
    body = _discover(make_request, {"subscriptions": [DEMO_SUBSCRIPTION, *TENANT_SUBSCRIPTIONS]})
    event = handle(json.dumps(body), services)
    # THEN it was answered 429 at least once, waited, and still found every workspace
    statuses = [r["status"] for r in _rg_calls(tenant)]
    assert 429 in statuses
    assert statuses.count(200) == 1 + -(-(TENANT + 2) // 4)
    assert event["data"]["discovered"] == TENANT + 2 and event["data"]["status"] == "completed"
