"""Discovery with Resource Graph against a fake of the ``AzureML`` port's POST: batches of subscriptions,
``$skipToken`` paging, the quota headers, every workspace kind, rows the app cannot call, a batch it may not
read. (Against the emulator's Resource Graph: tests/integration/test_discovery_emulator.py.)"""

from __future__ import annotations

from typing import Any

import pytest

from shared.domain.contract import Discover
from shared.domain.errors import ForbiddenError, UntrustedUrlError
from shared.domain.urls import UrlPolicy, check_post
from shared.ports import ApiResponse
from shared.service.discovery import SUBSCRIPTIONS_PER_QUERY, ResourceGraph, parse_hms, quota_wait

BASE = "https://management.azure.com"


def sub(i: int) -> str:
    return f"00000000-0000-0000-0000-{i:012d}"


def row(s: str, name: str, kind: str = "Default", location: str = "westeurope") -> dict[str, Any]:
    rid = f"/subscriptions/{s}/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/{name}"
    return {"id": rid, "name": name, "resourceGroup": "rg", "subscriptionId": s, "location": location, "kind": kind}


class FakeGraph:
    """Answers Resource Graph queries from ``rows`` (per subscription), ``page`` rows at a time."""

    def __init__(self, rows: list[dict[str, Any]], *, page: int = 2, quota: int = 15, forbidden: set[str] | None = None):
        self.rows = sorted(rows, key=lambda r: r["id"].lower())
        self.page = page
        self.quota = quota
        self.forbidden = forbidden or set()
        self.bodies: list[dict[str, Any]] = []

    def post(self, url: str, body: dict[str, Any]) -> ApiResponse:
        check_post(UrlPolicy({"arm": BASE}), url)
        assert url.startswith(f"{BASE}/providers/Microsoft.ResourceGraph/resources?api-version=")
        self.bodies.append(body)
        subs = set(body.get("subscriptions") or [])
        if subs & self.forbidden:
            raise ForbiddenError("access denied (HTTP 403)", status=403)
        rows = [r for r in self.rows if not subs or r["subscriptionId"] in subs]
        offset = int(body["options"].get("$skipToken") or 0)
        page = rows[offset : offset + self.page]
        answer: dict[str, Any] = {"totalRecords": len(rows), "count": len(page), "resultTruncated": "false", "data": page}
        if offset + self.page < len(rows):
            answer["$skipToken"] = str(offset + self.page)
        self.quota -= 1
        headers = {"x-ms-user-quota-remaining": str(max(0, self.quota)), "x-ms-user-quota-resets-after": "00:00:05"}
        return ApiResponse(200, headers, answer)

    def get(self, url: str) -> ApiResponse:
        raise AssertionError("discovery only posts queries")

    def delete(self, url: str) -> ApiResponse:
        raise AssertionError("discovery only posts queries")


def test_pages_are_followed_and_every_workspace_kind_is_found() -> None:
    # GIVEN 5 workspaces of the three kinds, answered 2 a page
    rows = [
        row(sub(1), "ws-a"),
        row(sub(1), "hub-b", "Hub"),
        row(sub(2), "proj-c", "Project"),
        row(sub(2), "ws-d"),
        row(sub(3), "ws-e"),
    ]
    graph = FakeGraph(rows)
    # WHEN discovered
    found = ResourceGraph(graph, BASE, sleep=lambda s: None).find(Discover(subscriptions=[sub(1), sub(2), sub(3)]))
    # THEN all five, in id order, with their kinds; three queries, the later ones carrying the skip token
    assert [w.target.workspace for w in found.workspaces] == ["hub-b", "ws-a", "proj-c", "ws-d", "ws-e"]
    assert {w.kind for w in found.workspaces} == {"Default", "Hub", "Project"}
    assert found.queries == 3 and found.errors == []
    assert [b["options"].get("$skipToken") for b in graph.bodies] == [None, "2", "4"]
    assert all("microsoft.machinelearningservices/workspaces" in b["query"] for b in graph.bodies)


def test_subscriptions_are_queried_in_batches() -> None:
    # GIVEN 1000 subscriptions WHEN discovered THEN one query per batch, each at most the batch size
    graph = FakeGraph([row(sub(999), "ws-last")], quota=100)
    subs = [sub(i) for i in range(1000)]
    found = ResourceGraph(graph, BASE, sleep=lambda s: None).find(Discover(subscriptions=subs))
    sizes = [len(b["subscriptions"]) for b in graph.bodies]
    assert sizes == [SUBSCRIPTIONS_PER_QUERY] * 3 + [1000 - 3 * SUBSCRIPTIONS_PER_QUERY]
    assert sorted(s for b in graph.bodies for s in b["subscriptions"]) == sorted(subs)
    assert [w.target.workspace for w in found.workspaces] == ["ws-last"]


def test_management_groups_are_one_scope() -> None:
    graph = FakeGraph([row(sub(1), "ws-a")])
    ResourceGraph(graph, BASE, sleep=lambda s: None).find(Discover(managementGroups=["mg-ml", "mg-two"]))
    assert graph.bodies[0]["managementGroups"] == ["mg-ml", "mg-two"] and "subscriptions" not in graph.bodies[0]


def test_an_exhausted_quota_waits_for_its_reset_before_the_next_query() -> None:
    # GIVEN a quota of 2 queries and 3 pages to read
    graph = FakeGraph([row(sub(1), f"ws-{i}") for i in range(5)], quota=2)
    waits: list[float] = []
    # WHEN discovered
    ResourceGraph(graph, BASE, sleep=waits.append).find(Discover(subscriptions=[sub(1)]))
    # THEN only the query after the one that left 0 waited, the reset time (5 s)
    assert waits == [5.0]


def test_a_batch_that_cannot_be_read_is_an_error_and_the_others_still_count() -> None:
    graph = FakeGraph([row(sub(1), "ws-a"), row(sub(400), "ws-b")], forbidden={sub(1)})
    subs = [sub(i) for i in range(1, 401)]
    found = ResourceGraph(graph, BASE, sleep=lambda s: None).find(Discover(subscriptions=subs))
    assert [w.target.workspace for w in found.workspaces] == ["ws-b"]
    assert [e["code"] for e in found.errors] == ["discovery_failed"]


def test_a_row_this_app_could_not_call_is_counted_not_called() -> None:
    # GIVEN a hostile or malformed row (a location that would change the host) and one with a display region
    rows = [row(sub(1), "ws-a", location="evil.com/"), row(sub(1), "ws-b", location="West Europe")]
    found = ResourceGraph(FakeGraph(rows), BASE, sleep=lambda s: None).find(Discover(subscriptions=[sub(1)]))
    # THEN the display region is normalised, the other is reported without its values
    assert [(w.target.workspace, w.target.location) for w in found.workspaces] == [("ws-b", "westeurope")]
    [error] = found.errors
    assert error["code"] == "discovery_invalid_workspace" and "evil" not in error["message"]


def test_a_repeating_skip_token_stops_with_an_error() -> None:
    class Looping(FakeGraph):
        def post(self, url: str, body: dict[str, Any]) -> ApiResponse:
            answer = super().post(url, {**body, "options": {}})
            answer.body["$skipToken"] = "same"
            return answer

    found = ResourceGraph(Looping([row(sub(1), "ws-a")]), BASE, sleep=lambda s: None).find(Discover(subscriptions=[sub(1)]))
    assert [e["code"] for e in found.errors] == ["discovery_failed"]


@pytest.mark.parametrize(
    ("headers", "wait"),
    [
        ({"x-ms-user-quota-remaining": "3", "x-ms-user-quota-resets-after": "00:00:04"}, 0.0),
        ({"x-ms-user-quota-remaining": "0", "x-ms-user-quota-resets-after": "00:01:02"}, 62.0),
        ({"x-ms-user-quota-remaining": "0"}, 1.0),
        ({}, 0.0),
        ({"x-ms-user-quota-remaining": "zero"}, 0.0),
    ],
)
def test_quota_headers(headers: dict[str, str], wait: float) -> None:
    assert quota_wait(headers) == wait


def test_hms() -> None:
    assert parse_hms("01:00:01") == 3601 and parse_hms("bad") is None and parse_hms(None) is None


@pytest.mark.parametrize(
    "url",
    [
        f"{BASE}/subscriptions/{sub(1)}/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/ws/listKeys",
        f"{BASE}/providers/Microsoft.ResourceGraph/resources/../../listSecrets",
        "https://evil.example.com/providers/Microsoft.ResourceGraph/resources",
    ],
)
def test_a_post_anywhere_but_the_resource_graph_query_is_refused(url: str) -> None:
    with pytest.raises(UntrustedUrlError):
        check_post(UrlPolicy({"arm": BASE}), url)
