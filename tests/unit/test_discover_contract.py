"""Contract 6.2: ``discover`` instead of ``targets``; every rejected combination names its field and rule,
and nothing is called (``parse_request`` does no I/O)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from shared.domain.contract import parse_request
from shared.domain.errors import RequestRejected

SUB = "00000000-1111-2222-3333-444444444444"
TARGET = {"subscriptionId": SUB, "resourceGroup": "rg-ml", "workspace": "ws-prod", "location": "westeurope"}
SUBJECT = {"objectId": "aaaaaaaa-0000-0000-0000-000000000001", "upn": "jane@contoso.com"}
BASE: dict[str, Any] = {
    "schemaVersion": "1",
    "requestId": "TCK-DISCOVER-1",
    "operation": "export",
    "scope": "subject",
    "subject": SUBJECT,
    "discover": {"subscriptions": [SUB]},
}


def message(**changes: Any) -> str:
    body = {**BASE, **changes}
    return json.dumps({k: v for k, v in body.items() if v is not ...})


def rejection(body: str) -> tuple[str, str]:
    with pytest.raises(RequestRejected) as caught:
        parse_request(body)
    first = caught.value.violations[0]
    return first.code, first.field


def test_a_subscription_scope_is_accepted_and_sent_again_unchanged() -> None:
    # GIVEN a discover request WHEN parsed THEN it is a fleet request with no targets
    request = parse_request(message())
    assert request.fleet and request.targets == [] and request.discover is not None
    # AND its message form (continuations, re-enqueues) parses back to the same request
    again = json.dumps(request.model_dump(mode="json"))
    assert "targets" not in json.loads(again) and parse_request(again) == request


def test_management_groups_at_the_limits_are_accepted() -> None:
    groups = [f"mg-{i}" for i in range(49)] + ["A" + "b" * 89]
    request = parse_request(message(discover={"managementGroups": groups}))
    assert request.discover is not None and request.discover.managementGroups == groups


def test_a_thousand_subscriptions_are_accepted() -> None:
    subs = [f"00000000-0000-0000-0000-{i:012d}" for i in range(1000)]
    assert parse_request(message(discover={"subscriptions": subs})).discover is not None


@pytest.mark.parametrize(
    ("changes", "code", "field"),
    [
        ({"targets": [TARGET]}, "targets_or_discover", "discover"),
        ({"discover": ...}, "missing_field", "targets"),
        ({"scope": "workspace"}, "discover_needs_subject_scope", "scope"),
        ({"scope": ..., "subject": ...}, "discover_needs_subject_scope", "scope"),
        ({"scope": "subject", "subject": ...}, "subject_required", "subject"),
        (
            {"operation": "delete", "deleteWorkspace": True, "confirmWorkspace": "ws-prod"},
            "discover_forbids_workspace_delete",
            "deleteWorkspace",
        ),
        ({"discover": {}}, "discover_scope", "discover"),
        ({"discover": {"subscriptions": [SUB], "managementGroups": ["mg"]}}, "discover_scope", "discover"),
        ({"discover": {"subscriptions": []}}, "too_few", "discover.subscriptions"),
        (
            {"discover": {"subscriptions": [f"00000000-0000-0000-0000-{i:012d}" for i in range(1001)]}},
            "too_many",
            "discover.subscriptions",
        ),
        ({"discover": {"subscriptions": ["not-a-guid"]}}, "invalid_format", "discover.subscriptions[0]"),
        ({"discover": {"subscriptions": [SUB, SUB.upper()]}}, "duplicate_value", "discover.subscriptions"),
        ({"discover": {"managementGroups": []}}, "too_few", "discover.managementGroups"),
        ({"discover": {"managementGroups": [f"mg-{i}" for i in range(51)]}}, "too_many", "discover.managementGroups"),
        ({"discover": {"managementGroups": ["-mg"]}}, "invalid_format", "discover.managementGroups[0]"),
        ({"discover": {"managementGroups": ["m" * 91]}}, "invalid_format", "discover.managementGroups[0]"),
        ({"discover": {"managementGroups": ["mg/../x"]}}, "invalid_format", "discover.managementGroups[0]"),
        ({"discover": {"managementGroups": ["mg x"]}}, "invalid_format", "discover.managementGroups[0]"),
        ({"discover": {"tenant": True}}, "unknown_field", "discover.tenant"),
        ({"discover": [SUB]}, "wrong_type", "discover"),
        ({"discover": {"subscriptions": SUB}}, "wrong_type", "discover.subscriptions"),
    ],
)
def test_rejected_combinations_name_the_field_and_rule(changes: dict[str, Any], code: str, field: str) -> None:
    # GIVEN a discover request breaking one rule of 6.2 WHEN parsed THEN it is rejected with that code and field
    assert rejection(message(**changes)) == (code, field)


def test_a_rejection_message_states_the_rule() -> None:
    with pytest.raises(RequestRejected) as caught:
        parse_request(message(discover={"subscriptions": ["x"]}))
    assert "GUID" in caught.value.violations[0].message


def test_explicit_targets_still_need_at_least_one() -> None:
    assert rejection(message(discover=..., targets=[])) == ("too_few", "targets")
    single = parse_request(message(discover=..., targets=[TARGET]))
    assert not single.fleet and "discover" not in single.model_dump(mode="json")
    assert parse_request(message(discover=..., targets=[TARGET, {**TARGET, "workspace": "ws-two"}])).fleet
