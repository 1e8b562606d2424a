"""Azure Resource Graph over the emulated workspaces: paging, scopes (subscriptions, management groups),
the per-caller quota, and the many-workspace tenant whose workspaces the v1 and v2 endpoints serve."""

from __future__ import annotations

import re
from typing import Any

import pytest
import requests

from tools.emulator import (
    DEFAULT_MANAGEMENT_GROUPS,
    DEMO_SUBSCRIPTION,
    JANE,
    TENANT_SUBSCRIPTIONS,
    WORKSPACE_KINDS,
    EmulatorConfig,
    EmulatorServer,
    tenant_workspace,
)

from ._client import API, AmlClient, ws_path

QUERY = (
    "resources | where type =~ 'microsoft.machinelearningservices/workspaces' "
    "| project id, name, resourceGroup, subscriptionId, location, kind | order by id asc"
)
COLUMNS = {"id", "name", "resourceGroup", "subscriptionId", "location", "kind"}
JSON = dict[str, Any]


@pytest.fixture
def tenant() -> Any:
    with EmulatorServer(EmulatorConfig(page_size=2, seed=1, tenant_workspaces=10, rg_page_size=4, rg_quota=100)) as server:
        yield server


@pytest.fixture
def graph(tenant: EmulatorServer) -> Any:
    client = AmlClient(tenant)
    yield client
    client.close()


def _query(aml: AmlClient, scope: JSON, **options: Any) -> requests.Response:
    url = f"{aml.settings['DSR_ARM_ENDPOINT']}/providers/Microsoft.ResourceGraph/resources"
    body = {**scope, "query": QUERY, "options": options}
    return aml.session.post(url, params={"api-version": "2024-04-01"}, json=body, timeout=10)


def _walk(aml: AmlClient, scope: JSON, **options: Any) -> tuple[list[JSON], list[JSON]]:
    rows: list[JSON] = []
    pages: list[JSON] = []
    token = None
    while True:
        response = _query(aml, scope, **({**options, "$skipToken": token} if token else options))
        assert response.status_code == 200, response.text
        page = response.json()
        pages.append(page)
        rows.extend(page["data"])
        token = page.get("$skipToken")
        if not token:
            return rows, pages
        assert len(pages) < 100


def test_tenant_query_pages_through_every_workspace_sorted_by_id(tenant: EmulatorServer, graph: AmlClient) -> None:
    # WHEN the whole tenant is queried (no scope) with the server's small page size
    rows, pages = _walk(graph, {})
    # THEN every workspace comes once, sorted by id, in pages of at most 4, rows as objects of the projected columns
    assert len(rows) == 12 and [len(p["data"]) for p in pages] == [4, 4, 4]
    assert [r["id"] for r in rows] == sorted((r["id"] for r in rows), key=str.lower)
    assert all(set(r) == COLUMNS for r in rows)
    assert all(p["totalRecords"] == 12 and p["count"] == len(p["data"]) and p["resultTruncated"] == "false" for p in pages)
    assert "$skipToken" not in pages[-1]
    assert {r["kind"] for r in rows} == set(WORKSPACE_KINDS)
    assert {r["subscriptionId"] for r in rows} == {DEMO_SUBSCRIPTION, *TENANT_SUBSCRIPTIONS}
    # AND $top lowers the page size
    _, small = _walk(graph, {}, **{"$top": 5})
    assert [len(p["data"]) for p in small] == [4, 4, 4]  # the server's 4 wins over 5
    _, smaller = _walk(graph, {}, **{"$top": 3})
    assert [len(p["data"]) for p in smaller] == [3, 3, 3, 3]


def test_every_discovered_workspace_is_served_by_v1_and_v2(tenant: EmulatorServer, graph: AmlClient) -> None:
    rows, _ = _walk(graph, {"subscriptions": list(TENANT_SUBSCRIPTIONS)})
    assert len(rows) == 10
    for row in rows:
        path = row["id"].lstrip("/")
        assert graph.get(graph.arm(path), API).status_code == 200
        models = graph.get(graph.mms(f"api/{path}/models", location=row["location"]), API)
        assert models.status_code == 200
        jobs, _ = graph.walk_next_link(graph.arm(f"{path}/jobs"), {"api-version": "2024-10-01", "listViewType": "All"})
        expected = tenant.expected_ids(row["subscriptionId"], row["resourceGroup"], row["name"])["jobs"]
        assert {j["id"] for j in jobs} == expected and expected


def test_some_tenant_workspaces_hold_janes_data_and_others_none(tenant: EmulatorServer) -> None:
    janes = []
    for i in range(10):
        sub, rg, name, _, _, holds_jane = tenant_workspace(i)
        found = tenant.expected_ids(sub, rg, name, subject=JANE)
        has_any = any(found.values())
        assert has_any == holds_jane, name
        janes.append(has_any)
        if holds_jane:
            assert found["jobs"] and found["modelVersions"] and tenant.expected_deletables(sub, rg, name, subject=JANE)["jobs"]
    assert any(janes) and not all(janes)


def test_subscription_and_management_group_scopes(tenant: EmulatorServer, graph: AmlClient) -> None:
    def subs(scope: JSON) -> set[str]:
        return {r["subscriptionId"] for r in _walk(graph, scope)[0]}

    assert subs({"subscriptions": [TENANT_SUBSCRIPTIONS[1]]}) == {TENANT_SUBSCRIPTIONS[1]}
    assert subs({"subscriptions": ["99999999-0000-0000-0000-000000000000"]}) == set()
    for group, members in DEFAULT_MANAGEMENT_GROUPS.items():
        assert subs({"managementGroups": [group]}) == set(members)
    assert subs({"managementGroups": list(DEFAULT_MANAGEMENT_GROUPS)}) == {DEMO_SUBSCRIPTION, *TENANT_SUBSCRIPTIONS}
    unknown = _query(graph, {"managementGroups": ["mg-nowhere"]})
    assert unknown.status_code == 400 and "mg-nowhere" in unknown.json()["error"]["message"]
    # AND the map is a knob
    tenant.configure(management_groups={"mg-only-demo": [DEMO_SUBSCRIPTION]})
    assert subs({"managementGroups": ["mg-only-demo"]}) == {DEMO_SUBSCRIPTION}
    assert _query(graph, {"managementGroups": ["mg-research"]}).status_code == 400


def test_skip_tokens_are_bound_to_query_and_scope_and_bad_options_are_400(graph: AmlClient) -> None:
    first = _query(graph, {}).json()
    token = first["$skipToken"]
    assert _query(graph, {}, **{"$skipToken": token}).status_code == 200
    assert _query(graph, {"subscriptions": [DEMO_SUBSCRIPTION]}, **{"$skipToken": token}).status_code == 400
    assert _query(graph, {}, **{"$top": 1001}).status_code == 400
    assert _query(graph, {}, **{"$top": 0}).status_code == 400
    url = f"{graph.settings['DSR_ARM_ENDPOINT']}/providers/Microsoft.ResourceGraph/resources"
    other = graph.session.post(url, params={"api-version": "2024-04-01"}, json={"query": "resources | limit 3"}, timeout=5)
    assert other.status_code == 400


def test_quota_per_caller_with_headers_and_a_429(tenant: EmulatorServer, graph: AmlClient) -> None:
    # GIVEN a quota of 3 queries per 2 seconds
    tenant.configure(rg_quota=3, rg_window_seconds=2)
    answers = [_query(graph, {}) for _ in range(3)]
    # THEN each answer says what is left and when it resets
    assert [a.headers["x-ms-user-quota-remaining"] for a in answers] == ["2", "1", "0"]
    assert all(re.fullmatch(r"\d\d:\d\d:\d\d", a.headers["x-ms-user-quota-resets-after"]) for a in answers)
    # AND the next one is a 429 with Retry-After
    throttled = _query(graph, {})
    assert throttled.status_code == 429
    assert 1 <= int(throttled.headers["Retry-After"]) <= 2
    assert throttled.headers["x-ms-user-quota-remaining"] == "0"
    assert throttled.json()["error"]["code"] == "RateLimiting"
    # AND another caller has its own quota; the ARM subscription bucket is not spent on Resource Graph
    other = AmlClient(tenant, token=tenant.issue_token("another-client-id"))
    try:
        assert _query(other, {}).status_code == 200
    finally:
        other.close()
    assert graph.get(graph.arm(ws_path()), API).status_code == 200
