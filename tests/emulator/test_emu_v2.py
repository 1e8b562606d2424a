"""Azure ML v2 ARM resources: lists (views, paging), items, deletes (sync, LRO, 409), computes, secret
actions, the subject truth (expected_ids / expected_deletables) and the per-subscription ARM bucket."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from tools.emulator import (
    DEMO_RESOURCE_GROUP,
    DEMO_SUBSCRIPTION,
    DEMO_WORKSPACE,
    FAMILIES,
    JANE,
    JANE_EMAIL,
    JANE_EMAIL_DECOY,
    JANE_WITH_EMAIL,
    JOHN,
    V2_KINDS,
    EmulatorServer,
)

from ._client import AmlClient, ws_path

API2 = {"api-version": "2024-10-01"}
WS = ws_path()
DEMO = (DEMO_SUBSCRIPTION, DEMO_RESOURCE_GROUP, DEMO_WORKSPACE)
ALL = {**API2, "listViewType": "All"}
JSON = dict[str, Any]


def _url(aml: AmlClient, rest: str) -> str:
    return aml.arm(f"{WS}/{rest}")


def _names(items: list[JSON]) -> set[str]:
    return {i["name"] for i in items}


def _walk(aml: AmlClient, rest: str, params: dict[str, str] | None = None) -> list[JSON]:
    return aml.walk_next_link(_url(aml, rest), params or ALL)[0]


def _delete(aml: AmlClient, rest: str, **query: str) -> requests.Response:
    return aml.session.delete(_url(aml, rest), params={**API2, **query}, timeout=10)


def _served(aml: AmlClient) -> dict[str, set[str]]:
    """Every v2 truth kind, walked through the lists with listViewType=All (children through their parents)."""
    served: dict[str, set[str]] = {kind: set() for kind in V2_KINDS}
    for family in FAMILIES:
        if family.kind is None:
            continue
        for item in _walk(aml, family.segment):
            served[family.kind].add(item["id"])
            if family.child_segment and family.child_kind:
                children = _walk(aml, f"{family.segment}/{item['name']}/{family.child_segment}")
                served[family.child_kind] |= {c["id"] for c in children}
    return served


def _poll_location(aml: AmlClient, accepted: requests.Response) -> list[int]:
    statuses = []
    for _ in range(10):
        status = aml.get(accepted.headers["Location"]).status_code
        statuses.append(status)
        if status != 202:
            return statuses
    raise AssertionError("the operation never ends")


# ------------------------------------------------------------------------------------------- lists


def test_every_v2_list_walked_with_all_views_is_the_truth(emu: EmulatorServer, aml: AmlClient) -> None:
    # WHEN every v2 list is walked to the end with listViewType=All
    served = _served(aml)
    # THEN the ids are the truth's, every kind has something, and ids are full ARM ids of this workspace
    expected = emu.expected_ids(*DEMO)
    assert served == {kind: expected[kind] for kind in V2_KINDS}
    assert all(served[kind] for kind in V2_KINDS), [k for k in V2_KINDS if not served[k]]
    assert all(i.startswith(f"/{WS}/") for ids in served.values() for i in ids)


def test_each_item_reads_back_by_its_path_with_arm_envelope(aml: AmlClient) -> None:
    for family in FAMILIES:
        for item in _walk(aml, family.segment):
            one = aml.get(aml.arm(item["id"].lstrip("/")), API2)
            assert one.status_code == 200 and one.json() == item
            assert {"id", "name", "type", "properties", "systemData"} <= set(item)
            assert item["systemData"]["createdByType"] in ("User", "Application")


def test_absent_items_are_arm_404s(aml: AmlClient) -> None:
    for rest in ("jobs/no-such-job", "models/no-such-model/versions/1", "models/churn-model/versions/99", "onlineEndpoints/x"):
        response = aml.get(_url(aml, rest), API2)
        assert response.status_code == 404, rest
        assert response.json()["error"]["code"] == "ResourceNotFound"


def test_archived_items_are_hidden_unless_listviewtype_asks(aml: AmlClient) -> None:
    # GIVEN archived jobs, an archived model version and an archived model container
    default = _names(_walk(aml, "jobs", API2))
    everything = _names(_walk(aml, "jobs"))
    archived = _names(_walk(aml, "jobs", {**API2, "listViewType": "ArchivedOnly"}))
    # THEN the default (ActiveOnly) hides them, All shows them, ArchivedOnly shows only them
    assert archived == {"job-jane-archived", "job-john-archived"}
    assert default == everything - archived and archived < everything
    assert all(j["properties"]["isArchived"] for j in _walk(aml, "jobs", {**API2, "listViewType": "ArchivedOnly"}))
    assert _names(_walk(aml, "models/churn-model/versions", API2)) == {"1"}
    assert _names(_walk(aml, "models/churn-model/versions")) == {"1", "2"}
    assert "legacy-model" not in _names(_walk(aml, "models", API2)) and "legacy-model" in _names(_walk(aml, "models"))
    # AND schedules filter on isEnabled: EnabledOnly by default
    assert "sched-jane-weekly" not in _names(_walk(aml, "schedules", API2))
    assert "sched-jane-weekly" in _names(_walk(aml, "schedules"))
    assert _names(_walk(aml, "schedules", {**API2, "listViewType": "DisabledOnly"})) == {"sched-jane-weekly"}
    # AND a view that does not exist is a 400
    assert aml.get(_url(aml, "jobs"), {**API2, "listViewType": "Everything"}).status_code == 400


def test_paging_serves_an_empty_page_with_a_nextlink_and_tokens_bound_to_their_list(emu: EmulatorServer, aml: AmlClient) -> None:
    # GIVEN page size 2 and 5 jobs
    items, pages = aml.walk_next_link(_url(aml, "jobs"), ALL)
    # THEN page 1 has 2, page 2 is empty with a nextLink, the last page has no nextLink
    assert [len(p["value"]) for p in pages] == [2, 0, 2, 1]
    assert pages[1]["nextLink"] and "nextLink" not in pages[-1]
    # AND the nextLink is absolute, back to this server, and carries $skip and the query
    link = pages[0]["nextLink"]
    assert link.startswith(f"{emu.base_url}/arm/")
    query = parse_qs(urlsplit(link).query)
    assert query["$skip"] and query["listViewType"] == ["All"] and query["api-version"] == ["2024-10-01"]
    token = query["$skip"][0]
    # AND the token is refused on another list, or on the same list with another view
    assert aml.get(_url(aml, "schedules"), {**ALL, "$skip": token}).status_code == 400
    assert aml.get(_url(aml, "jobs"), {**API2, "$skip": token}).status_code == 400
    assert aml.get(_url(aml, "jobs"), {**ALL, "$skip": "garbage"}).status_code == 400
    assert len(items) == len(_names(items)) == 5


# ------------------------------------------------------------------------------------------- deletes


def test_job_delete_is_an_lro_with_location_only_and_the_job_stays_until_polled(emu: EmulatorServer, aml: AmlClient) -> None:
    job_id = f"/{WS}/jobs/job-jane-train"
    # WHEN the job is deleted
    accepted = _delete(aml, "jobs/job-jane-train")
    # THEN 202 with Location and Retry-After (no Azure-AsyncOperation, as the spec's Job/delete.json)
    assert accepted.status_code == 202
    assert "Azure-AsyncOperation" not in accepted.headers
    assert accepted.headers["Location"].startswith(f"{emu.base_url}/arm/") and accepted.headers["Retry-After"] == "0"
    assert accepted.headers["x-ms-ratelimit-remaining-subscription-deletes"]
    # AND the job is still there, Deleting, until the operation is polled to its end
    still = aml.get(_url(aml, "jobs/job-jane-train"), API2)
    assert still.status_code == 200 and still.json()["properties"]["provisioningState"] == "Deleting"
    assert job_id in emu.expected_ids(*DEMO)["jobs"]
    again = _delete(aml, "jobs/job-jane-train")
    assert again.status_code == 202 and again.headers["Location"] == accepted.headers["Location"]
    assert _poll_location(aml, accepted) == [202, 202, 200]
    # AND then it is gone everywhere; a second delete is a 204
    assert aml.get(_url(aml, "jobs/job-jane-train"), API2).status_code == 404
    assert job_id not in emu.expected_ids(*DEMO)["jobs"] and job_id not in _served(aml)["jobs"]
    assert _delete(aml, "jobs/job-jane-train").status_code == 204
    [record] = emu.resource_deletions()
    assert record == {"kind": "jobs", "id": job_id, "mode": "lro", "operationId": record["operationId"], "status": "Succeeded"}


@pytest.mark.parametrize(
    "rest",
    [
        "schedules/sched-john-daily",
        "onlineEndpoints/fraud-ep/deployments/blue",
        "batchEndpoints/batch-scoring/deployments/default",
        "featuresets/customer-features/versions/2",
        "featurestoreEntities/customer/versions/1",
    ],
)
def test_lro_deletes_take_polls(emu: EmulatorServer, aml: AmlClient, rest: str) -> None:
    accepted = _delete(aml, rest)
    assert accepted.status_code == 202 and accepted.headers["Location"]
    assert aml.get(_url(aml, rest), API2).status_code == 200
    assert _poll_location(aml, accepted) == [202, 202, 200]
    assert aml.get(_url(aml, rest), API2).status_code == 404


@pytest.mark.parametrize(
    "rest", ["data/customers/versions/2", "environments/sklearn-env/versions/2", "codes/7b2e4d10-code/versions/1"]
)
def test_version_deletes_are_synchronous(emu: EmulatorServer, aml: AmlClient, rest: str) -> None:
    assert _delete(aml, rest).status_code == 200
    assert aml.get(_url(aml, rest), API2).status_code == 404
    assert _delete(aml, rest).status_code == 204
    assert emu.resource_deletions()[0]["mode"] == "sync"


def test_conflicts_until_users_and_versions_are_gone(emu: EmulatorServer, aml: AmlClient) -> None:
    # GIVEN churn-model:1 is the model of deployment churn-ep/green
    green = aml.get(_url(aml, "onlineEndpoints/churn-ep/deployments/green"), API2).json()
    assert green["properties"]["model"] == f"/{WS}/models/churn-model/versions/1"
    # THEN the container (it has versions), the used version and the endpoint (it has deployments) answer 409
    for rest in ("models/churn-model", "models/churn-model/versions/1", "onlineEndpoints/churn-ep"):
        conflict = _delete(aml, rest)
        assert conflict.status_code == 409, rest
        assert conflict.json()["error"]["code"] == "Conflict"
    # AND still 409 while the deployment's delete runs
    accepted = _delete(aml, "onlineEndpoints/churn-ep/deployments/green")
    assert _delete(aml, "models/churn-model/versions/1").status_code == 409
    _poll_location(aml, accepted)
    # WHEN users and versions are deleted in order, each delete succeeds
    assert _delete(aml, "models/churn-model/versions/1").status_code == 200
    assert _delete(aml, "models/churn-model").status_code == 409  # version 2 (archived) is left
    assert _delete(aml, "models/churn-model/versions/2").status_code == 200
    assert _delete(aml, "models/churn-model").status_code == 200
    assert _delete(aml, "models/churn-model").status_code == 204
    _poll_location(aml, _delete(aml, "onlineEndpoints/churn-ep"))
    assert aml.get(_url(aml, "onlineEndpoints/churn-ep"), API2).status_code == 404
    # AND no 409 was recorded as a deletion
    assert {r["id"].rsplit("/", 1)[1] for r in emu.resource_deletions()} == {"green", "1", "2", "churn-model", "churn-ep"}


def test_connections_and_arm_datastores_are_not_deletable(aml: AmlClient) -> None:
    assert _delete(aml, "connections/openai-conn").status_code == 405
    assert _delete(aml, "datastores/workspaceblobstore").status_code == 405


# ------------------------------------------------------------------------------------------- computes


def test_compute_delete_needs_underlying_resource_action(emu: EmulatorServer, aml: AmlClient) -> None:
    response = _delete(aml, "computes/ci-jane")
    assert response.status_code == 400 and "underlyingResourceAction" in response.json()["error"]["message"]
    assert aml.get(_url(aml, "computes/ci-jane"), API2).status_code == 200
    assert emu.resource_deletions() == []


def test_compute_instance_delete_is_an_lro_with_both_headers(emu: EmulatorServer, aml: AmlClient) -> None:
    accepted = _delete(aml, "computes/ci-for-jane", underlyingResourceAction="Delete")
    assert accepted.status_code == 202
    status_url, location_url = accepted.headers["Azure-AsyncOperation"], accepted.headers["Location"]
    assert aml.get(status_url).json()["status"] == "InProgress"
    assert aml.get(location_url).status_code == 202
    assert aml.get(_url(aml, "computes/ci-for-jane"), API2).status_code == 200
    done = aml.get(status_url).json()
    assert done["status"] == "Succeeded" and done["endTime"]
    assert aml.get(location_url).status_code == 200
    assert aml.get(_url(aml, "computes/ci-for-jane"), API2).status_code == 404
    [record] = emu.resource_deletions()
    assert record["kind"] == "computeInstances" and record["computeType"] == "ComputeInstance"
    assert record["underlyingResourceAction"] == "Delete" and record["status"] == "Succeeded"


def test_a_cluster_delete_is_recorded_so_a_test_can_forbid_it(emu: EmulatorServer, aml: AmlClient) -> None:
    assert emu.expected_deletables()["computeInstances"] == {f"/{WS}/computes/{n}" for n in ("ci-jane", "ci-john", "ci-for-jane")}
    assert _delete(aml, "computes/cpu-cluster", underlyingResourceAction="Delete").status_code == 202
    clusters = [r for r in emu.resource_deletions() if r["computeType"] == "AmlCompute"]
    assert [r["id"] for r in clusters] == [f"/{WS}/computes/cpu-cluster"] and clusters[0]["kind"] == "computes"


# ------------------------------------------------------------------------------------------- secrets


def test_secret_actions_answer_secrets_and_are_logged(emu: EmulatorServer, aml: AmlClient) -> None:
    actions = [
        "listKeys",
        "datastores/workspaceblobstore/listSecrets",
        "connections/openai-conn/listsecrets",
        "onlineEndpoints/fraud-ep/listKeys",
        "onlineEndpoints/fraud-ep/token",
        "batchEndpoints/batch-scoring/listKeys",
        "computes/ci-jane/listKeys",
        "computes/cpu-cluster/listNodes",  # node addresses, no credential
    ]
    secrets = emu.secret_values()
    for rest in actions:
        response = aml.session.post(_url(aml, rest), params=API2, timeout=10)
        assert response.status_code == 200, rest
        assert rest.endswith("listNodes") or any(s in response.text for s in secrets), rest
        assert response.headers["x-ms-ratelimit-remaining-subscription-writes"]
    logged = [r["path"] for r in emu.requests() if r["method"] == "POST"]
    assert logged == [f"/arm/{WS}/{rest}" for rest in actions]
    # AND a GET is not a way in
    assert aml.get(_url(aml, "onlineEndpoints/fraud-ep/listKeys"), API2).status_code == 405


def test_plain_reads_of_connections_and_datastores_carry_registered_credentials(emu: EmulatorServer, aml: AmlClient) -> None:
    secrets = emu.secret_values()
    for rest in ("connections", "datastores"):
        for item in _walk(aml, rest):
            credentials = item["properties"]["credentials"]
            found = [v for v in _strings(credentials) if v.startswith("SECRET-") or "SECRET-" in v]
            assert found and set(found) <= secrets, item["name"]


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    return []


# ------------------------------------------------------------------------------------------- truth


def test_subject_truth_matches_upn_object_id_and_aliases_but_not_look_alikes(emu: EmulatorServer, aml: AmlClient) -> None:
    plain = emu.expected_ids(*DEMO, subject=JANE)
    aliased = emu.expected_ids(*DEMO, subject=JANE_WITH_EMAIL)
    job = f"/{WS}/jobs/"
    # the alias adds the records that name Jane only by her e-mail (systemData, notification e-mails)
    assert job + "job-jane-train" in plain["jobs"] and job + "job-john-sweep" in plain["jobs"]
    assert job + "job-jane-archived" in aliased["jobs"] - plain["jobs"]
    assert f"/{WS}/schedules/sched-nightly-retrain" in aliased["schedules"] - plain["schedules"]
    assert f"/{WS}/onlineEndpoints/churn-ep" in aliased["onlineEndpoints"] - plain["onlineEndpoints"]
    # the look-alike never counts
    decoys = {job + "job-app-nightly", f"/{WS}/data/transactions", f"/{WS}/connections/sql-conn"}
    for ids in aliased.values():
        assert not decoys & ids
    assert JANE_EMAIL_DECOY in aml.get(_url(aml, "jobs/job-app-nightly"), API2).text
    # John's UPN in a tag of Jane's model version makes it John's too; the compute set up for Jane is Jane's
    johns = emu.expected_ids(*DEMO, subject=JOHN)
    assert f"/{WS}/models/churn-model/versions/1" in johns["modelVersions"] & plain["modelVersions"]
    assert f"/{WS}/computes/ci-for-jane" in plain["computes"] & johns["computes"]
    # AND the control API says the same
    control = requests.get(
        f"{emu.base_url}/_emulator/expected",
        params={
            "sub": DEMO_SUBSCRIPTION,
            "rg": DEMO_RESOURCE_GROUP,
            "ws": DEMO_WORKSPACE,
            "subject": "jane",
            "emails": JANE_EMAIL,
        },
        timeout=5,
    ).json()
    assert {k: set(v) for k, v in control.items()} == aliased


def test_expected_deletables_scopes(emu: EmulatorServer) -> None:
    everything = emu.expected_deletables()
    janes = emu.expected_deletables(subject=JANE_WITH_EMAIL)
    jane_upn_only = emu.expected_deletables(subject=JANE)
    johns = emu.expected_deletables(subject=JOHN)
    job = f"/{WS}/jobs/"
    assert everything["jobs"] == emu.expected_ids(*DEMO)["jobs"]
    assert f"/{WS}/computes/cpu-cluster" not in everything["computeInstances"]
    # created by Jane (UPN or alias); a record that only mentions her is not hers to delete
    assert janes["jobs"] == {job + "job-jane-train", job + "job-jane-archived"}
    assert jane_upn_only["jobs"] == {job + "job-jane-train"}
    assert job + "job-john-sweep" in johns["jobs"]
    # compute instances by assignment, whoever created them
    assert janes["computeInstances"] == {f"/{WS}/computes/ci-jane", f"/{WS}/computes/ci-for-jane"}
    assert johns["computeInstances"] == {f"/{WS}/computes/ci-john"}
    # a container only when all its versions are the subject's
    assert janes["modelContainers"] == {f"/{WS}/models/churn-model", f"/{WS}/models/legacy-model"}
    assert f"/{WS}/models/fraud-model" not in janes["modelContainers"] | johns["modelContainers"]
    control = requests.get(
        f"{emu.base_url}/_emulator/deletables",
        params={
            "sub": DEMO_SUBSCRIPTION,
            "rg": DEMO_RESOURCE_GROUP,
            "ws": DEMO_WORKSPACE,
            "subject": "jane",
            "emails": JANE_EMAIL,
        },
        timeout=5,
    ).json()
    assert {k: set(v) for k, v in control.items()} == janes


ORDER = (
    "schedules",
    "onlineDeployments",
    "batchDeployments",
    "onlineEndpoints",
    "batchEndpoints",
    "jobs",
    "modelVersions",
    "dataVersions",
    "environmentVersions",
    "componentVersions",
    "codeVersions",
    "featuresetVersions",
    "featurestoreEntityVersions",
    "modelContainers",
    "dataContainers",
    "environmentContainers",
    "componentContainers",
    "codeContainers",
    "featuresetContainers",
    "featurestoreEntityContainers",
    "computeInstances",
)


@pytest.mark.parametrize("subject", [None, JANE_WITH_EMAIL, JOHN], ids=["workspace", "jane", "john"])
def test_expected_deletables_delete_cleanly_in_contract_order(emu: EmulatorServer, aml: AmlClient, subject: Any) -> None:
    # GIVEN what the truth says is deletable, and everything before
    plan = emu.expected_deletables(subject=subject)
    before = emu.expected_ids(*DEMO)
    assert set(plan) == set(ORDER) and any(plan.values())
    # WHEN it is deleted in the contract's order, polling each LRO
    for kind in ORDER:
        for item_id in sorted(plan[kind]):
            query = {"underlyingResourceAction": "Delete"} if kind == "computeInstances" else {}
            response = aml.session.delete(aml.arm(item_id.lstrip("/")), params={**API2, **query}, timeout=10)
            assert response.status_code in (200, 202), (item_id, response.status_code, response.text)
            if response.status_code == 202:
                _poll_location(aml, response)
    # THEN exactly the planned items are gone
    after = emu.expected_ids(*DEMO)
    for kind in V2_KINDS:
        assert before[kind] - after[kind] == plan.get(kind, set()), kind
    instances = {c for c in before["computes"] if c.rsplit("/", 1)[1].startswith("ci-")}
    assert instances - after["computes"] == plan["computeInstances"]
    assert f"/{WS}/computes/cpu-cluster" in after["computes"]


# ------------------------------------------------------------------------------------------- throttling


def test_arm_bucket_is_per_subscription_and_reports_what_is_left(emu: EmulatorServer, aml: AmlClient) -> None:
    # GIVEN a second subscription (the tenant's) and a bucket of 3
    emu.configure(tenant_workspaces=1)
    other = aml.arm(ws_path("ws-t001", sub="11111111-aaaa-0000-0000-000000000001", rg="rg-team-1"))
    emu.configure(rate=0.5, burst=3)
    # WHEN the demo subscription spends its bucket
    left = [aml.get(_url(aml, "jobs"), API2).headers.get("x-ms-ratelimit-remaining-subscription-reads") for _ in range(3)]
    assert left == ["2", "1", "0"]
    assert aml.get(_url(aml, "jobs"), API2).status_code == 429
    # THEN another subscription still has its own
    assert aml.get(other, API2).status_code == 200
    # AND with one bucket for all, it does not
    emu.configure(rate_per_subscription=False)
    for _ in range(3):
        aml.get(_url(aml, "jobs"), API2)
    assert aml.get(other, API2).status_code == 429


def test_faults_and_latency_apply_to_v2_paths(emu: EmulatorServer, aml: AmlClient) -> None:
    emu.configure(faults={"503": 1.0})
    response = aml.get(_url(aml, "jobs"), API2)
    assert response.status_code == 503 and response.json()["error"]["code"] == "ServiceUnavailable"
    assert emu.requests()[-1]["fault"] == "503"
