"""Deleting the v2 (ARM) kinds: plan per container and endpoint, dependency levels, long-running deletes,
409 retried after what holds it went, containers only once emptied, compute instances only, subject scope.
Against ``tests/support/fake_arm.py`` (the emulator's v2 families are exercised in tests/integration)."""

from __future__ import annotations

from typing import Any

from shared.domain.catalog import load_catalog
from shared.domain.contract import DsrRequest, Subject
from shared.service.delete import DeleteRun
from shared.service.delete_plan import DeletePlan
from shared.service.listing import Endpoints
from tests.support.fake_arm import ARM, WS, FakeArm

JANE = Subject(objectId="aaaaaaaa-0000-0000-0000-000000000001", upn="jane.doe@contoso.com", emails=["jane@contoso.com"])
JOHN_UPN = "john@contoso.com"
V2_DELETE = [
    "schedules",
    "onlineDeployments",
    "onlineEndpoints",
    "jobs",
    "modelVersions",
    "computeInstances",
]


class Audit:
    def __init__(self) -> None:
        self.lines: list[dict[str, Any]] = []

    def append(self, request_id: str, lines: list[dict[str, Any]]) -> None:
        self.lines.extend(lines)


def _request(kinds: list[str], *, subject: Subject | None = None) -> DsrRequest:
    raw: dict[str, Any] = {
        "schemaVersion": "1",
        "requestId": "V2-DEL-1",
        "operation": "delete",
        "targets": [
            {
                "subscriptionId": "00000000-1111-2222-3333-444444444444",
                "resourceGroup": "rg-ml",
                "workspace": "ws-v2",
                "location": "westeurope",
            }
        ],
        "resourceKinds": kinds,
    }
    if subject is not None:
        raw.update(scope="subject", subject=subject.model_dump(exclude_none=True))
    return DsrRequest.model_validate(raw)


def _run(fake: FakeArm, request: DsrRequest, concurrency: int = 4) -> tuple[DeleteRun, DeletePlan, Audit]:
    audit = Audit()
    run = DeleteRun(
        request,
        catalog=load_catalog(),
        endpoints=Endpoints({"arm": ARM, "modelmanagement": ARM, "experiments": ARM, "aether": ARM}),
        aml=fake,
        audit=audit,
        concurrency=concurrency,
        lro_deadline=30,
        sleep=lambda _s: None,
    )
    plan = run.plan()
    return run, plan, audit


def _workspace(fake: FakeArm) -> None:
    """Every level: a schedule, an endpoint with a deployment using a model version, jobs (one archived),
    a model with two versions (one archived), an empty model container, a compute instance and a cluster."""
    fake.add("schedules/nightly", JOHN_UPN, isEnabled=False)
    v1 = fake.add("models/churn/versions/1", JOHN_UPN)
    fake.add("models/churn/versions/2", JOHN_UPN, isArchived=True)
    fake.add("models/churn", JOHN_UPN)
    fake.add("models/empty", JOHN_UPN)
    fake.add("onlineEndpoints/ep", JOHN_UPN)
    fake.add("onlineEndpoints/ep/deployments/blue", JOHN_UPN, model=v1)
    fake.add("jobs/j1", JOHN_UPN)
    fake.add("jobs/j2", JOHN_UPN, isArchived=True)
    fake.add("jobs/j3", JOHN_UPN)
    fake.add("computes/ci-jane", JOHN_UPN, computeType="ComputeInstance")
    fake.add("computes/cpu-cluster", JOHN_UPN, computeType="AmlCompute")


def _kind_of(path: str) -> str:
    rest = path[len(WS) + 1 :].split("/")
    return {
        "schedules": "schedules",
        "deployments": "onlineDeployments",
        "onlineEndpoints": "onlineEndpoints",
        "jobs": "jobs",
        "versions": "modelVersions",
        "computes": "computeInstances",
    }.get(rest[-2], "modelContainers")


def test_a_workspace_delete_plans_every_v2_item_archived_included_and_never_a_cluster():
    # GIVEN a workspace with every level, archived items and a compute cluster
    fake = FakeArm()
    _workspace(fake)
    # WHEN the v2 kinds are planned
    _r, plan, _a = _run(fake, _request(V2_DELETE))
    # THEN every item is planned under its kind, by ARM id, and the cluster is not
    planned = {(i.kind, i.id.removeprefix(WS + "/")) for i in plan.items}
    assert planned == {
        ("schedules", "schedules/nightly"),
        ("onlineDeployments", "onlineEndpoints/ep/deployments/blue"),
        ("onlineEndpoints", "onlineEndpoints/ep"),
        ("jobs", "jobs/j1"),
        ("jobs", "jobs/j2"),
        ("jobs", "jobs/j3"),
        ("modelVersions", "models/churn/versions/1"),
        ("modelVersions", "models/churn/versions/2"),
        ("modelContainers", "models/churn"),
        ("modelContainers", "models/empty"),
        ("computeInstances", "computes/ci-jane"),
    }
    lists = [url for method, url in fake.calls if (method == "GET" and "/jobs?" in url) or "/versions?" in url]
    assert lists and all("listViewType=All" in url and "api-version=2024-10-01" in url for url in lists)


def test_deletes_run_level_by_level_and_leave_nothing_behind():
    # GIVEN the same workspace
    fake = FakeArm()
    _workspace(fake)
    run, plan, audit = _run(fake, _request(V2_DELETE))
    # WHEN it is deleted
    run.execute(plan)
    # THEN no DELETE of a level starts before every DELETE of the levels before it, nothing answers 409,
    # only the cluster is left, and long-running deletes were polled to their end
    order = ["schedules", "onlineDeployments", "onlineEndpoints", "jobs", "modelVersions", "modelContainers"]
    levels = [order.index(k) if k in order else order.index("jobs") for k in map(_kind_of, fake.deletes())]
    assert levels == sorted(levels)
    assert all(i.result == "deleted" for i in plan.items), [(i.kind, i.result, i.error) for i in plan.items]
    assert [k for k in fake.items] == [f"{WS}/computes/cpu-cluster".lower()]
    compute_deletes = [url for method, url in fake.calls if method == "DELETE" and "/computes/" in url]
    assert compute_deletes and all("underlyingResourceAction=Delete" in url for url in compute_deletes)
    assert any("/operationsStatus/" in url for _m, url in fake.calls)  # compute: Azure-AsyncOperation first
    assert any("/operationResults/" in url for _m, url in fake.calls)  # the others: Location
    assert {line["result"] for line in audit.lines} == {"deleted"}


def test_a_409_is_retried_after_the_next_level_and_reported_in_use_if_it_remains():
    # GIVEN a job held by another job of its own level, and a model version held by something never deleted
    fake = FakeArm()
    first = fake.add("jobs/a-first", JOHN_UPN)
    holder = fake.add("jobs/b-holder", JOHN_UPN)
    fake.holds[first] = {holder}
    version = fake.add("models/m/versions/1", JOHN_UPN)
    fake.add("models/m", JOHN_UPN)
    fake.holds[version] = {fake.add("serverlessEndpoints/keep", JOHN_UPN)}
    run, plan, _ = _run(fake, _request(["jobs", "modelVersions"]), concurrency=1)
    # WHEN deleted
    run.execute(plan)
    by_id = {i.id: i for i in plan.items}
    # THEN the held job went on its retry; the version still held is in_use, and its container was kept
    assert by_id[first].result == "deleted" and by_id[first].error is None
    assert fake.deletes().count(first) == 2
    assert by_id[version].result == "failed" and by_id[version].error["code"] == "in_use"
    container = by_id[f"{WS}/models/m"]
    assert container.result == "failed" and container.error["code"] == "versions_remain"
    assert f"{WS}/models/m".lower() in fake.items
    assert f"{WS}/models/m" not in fake.deletes()


def test_subject_scope_deletes_what_they_created_or_are_assigned_and_lists_mentions_for_review():
    # GIVEN Jane's items (by UPN and by her e-mail alias in another letter case), John's, one Jane only
    # modified, one that mentions her, and compute instances assigned to her and to John
    fake = FakeArm()
    fake.add("jobs/jane-1", "Jane.Doe@contoso.com")
    fake.add("jobs/jane-alias", "JANE@contoso.com")
    fake.add("jobs/mjane", "mjane@contoso.com")  # a look-alike
    fake.add("jobs/john", JOHN_UPN, notificationSetting={"emails": ["jane@contoso.com"]})
    modified = fake.add("jobs/john-modified-by-jane", JOHN_UPN)
    fake.items[modified.lower()]["systemData"]["lastModifiedBy"] = "jane.doe@contoso.com"
    fake.add("models/mine/versions/1", "jane.doe@contoso.com")
    fake.add("models/mine/versions/2", "jane@contoso.com")
    fake.add("models/mine", JOHN_UPN)
    fake.add("models/shared/versions/1", "jane.doe@contoso.com")
    fake.add("models/shared/versions/2", JOHN_UPN)
    fake.add("models/shared", "jane.doe@contoso.com")
    fake.add("models/nothing", "jane.doe@contoso.com")  # no versions: not hers to delete at subject scope
    ci = fake.add(
        "computes/ci-for-jane",
        JOHN_UPN,
        computeType="ComputeInstance",
        properties={"personalComputeInstanceSettings": {"assignedUser": {"objectId": JANE.objectId.upper()}}},
    )
    fake.add(
        "computes/ci-john",
        "jane.doe@contoso.com",
        computeType="ComputeInstance",
        properties={"personalComputeInstanceSettings": {"assignedUser": {"objectId": "bbbbbbbb-0000-0000-0000-000000000002"}}},
    )
    # WHEN Jane's v2 items are planned
    _r, plan, _ = _run(fake, _request(["jobs", "modelVersions", "computeInstances"], subject=JANE))
    # THEN exactly hers, the container whose versions are all hers, and the instance assigned to her
    assert {i.id.removeprefix(WS + "/") for i in plan.items} == {
        "jobs/jane-1",
        "jobs/jane-alias",
        "models/mine/versions/1",
        "models/mine/versions/2",
        "models/mine",
        "models/shared/versions/1",
        "computes/ci-for-jane",
    }
    assert next(i for i in plan.items if i.id == ci).kind == "computeInstances"
    review = {(r["id"].removeprefix(WS + "/"), r["matchedBy"]) for r in plan.review}
    assert review == {
        ("jobs/john", "mention"),
        ("jobs/john-modified-by-jane", "identity"),
        ("computes/ci-john", "identity"),  # she created it, but it is assigned to John
    }


def test_a_resumed_delete_keeps_its_plan_and_only_sends_what_is_left():
    # GIVEN a delete interrupted after its first level
    fake = FakeArm()
    _workspace(fake)
    run, plan, _ = _run(fake, _request(V2_DELETE))
    for item in plan.items:
        if item.kind == "schedules":
            run._delete_one(item)
    fake.calls.clear()
    # WHEN it runs again from the saved plan
    run.execute(plan)
    # THEN the schedule is not sent again and the rest goes in order
    assert not any("/schedules/" in path for path in fake.deletes())
    assert all(i.result == "deleted" for i in plan.items)


def test_the_read_back_verifies_only_what_answers_404_and_names_what_is_still_there():
    # GIVEN the workspace deleted level by level, and one job back afterwards (a DELETE that did not hold)
    fake = FakeArm()
    _workspace(fake)
    run, plan, audit = _run(fake, _request(V2_DELETE))
    run.execute(plan)
    back = fake.add("jobs/j1", JOHN_UPN)
    # WHEN the plan is read back
    run.verify(plan)
    # THEN every other item is verified, the job carries still_present, and each read-back is audited
    assert [(i.id, (i.error or {}).get("code")) for i in plan.items if not i.verified] == [(back, "still_present")]
    gets = [line for line in audit.lines if line["method"] == "GET"]
    assert len(gets) == len(plan.items)
    assert sorted(line["result"] for line in gets).count("still_present") == 1


def test_a_cancelled_run_sends_no_more_deletes_and_audits_its_tally():
    # GIVEN a delete that is cancelled once its first DELETE went out
    fake = FakeArm()
    _workspace(fake)
    run, plan, audit = _run(fake, _request(V2_DELETE))
    run.cancel_requested = lambda: bool(fake.deletes())
    # WHEN it runs, is read back and audits the cancel
    run.execute(plan)
    run.verify(plan)
    run.audit_cancel(plan)
    # THEN only the first level's schedule was deleted (and verified), the rest was never sent
    assert len(fake.deletes()) == 1
    (cancel,) = [line for line in audit.lines if line["method"] == "CANCEL"]
    assert (cancel["deleted"], cancel["verified"], cancel["failed"]) == (1, 1, 0)
    assert cancel["notAttempted"] == len(plan.items) - 1
