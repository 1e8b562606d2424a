"""Every list, walked to the end in its own paging style, yields exactly the truth (expected_ids)."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from tools.emulator import (
    DEMO_RESOURCE_GROUP,
    DEMO_SUBSCRIPTION,
    DEMO_WORKSPACE,
    JANE,
    JOHN,
    PIPELINE_RUN_TYPE,
    SECOND_LOCATION,
    SECOND_WORKSPACE,
    SECRET_MARKER,
    EmulatorServer,
)

from ._client import API, AmlClient, ws_path

WS = ws_path()
DEMO = (DEMO_SUBSCRIPTION, DEMO_RESOURCE_GROUP, DEMO_WORKSPACE)


def _query(url: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(url).query)


def _experiments(aml: AmlClient) -> list[dict[str, Any]]:
    items, _ = aml.walk_token(aml.exp(f"history/v1.0/{WS}/experiments"), "$continuationtoken")
    return items


def _runs(aml: AmlClient) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = []
    for experiment in _experiments(aml):
        url = aml.exp(f"history/v1.0/{WS}/experiments/{aml.seg(experiment['name'])}/runs")
        runs.extend(aml.walk_token(url, "$continuationtoken")[0])
    return runs


# ------------------------------------------------------------------------------------------------ ARM


def test_arm_workspace_list_starts_with_an_empty_page_that_has_a_nextlink(emu: EmulatorServer, aml: AmlClient) -> None:
    # GIVEN the resource group with two workspaces
    rg_path = f"subscriptions/{DEMO_SUBSCRIPTION}/resourceGroups/{DEMO_RESOURCE_GROUP}"
    url = aml.arm(f"{rg_path}/providers/Microsoft.MachineLearningServices/workspaces")
    # WHEN the first page is read
    first = aml.get(url, API).json()
    # THEN it is empty yet carries an absolute nextLink with a $skiptoken back to this server
    assert first["value"] == []
    assert first["nextLink"].startswith(f"{emu.base_url}/arm/subscriptions/")
    assert "$skiptoken" in _query(first["nextLink"])
    assert _query(first["nextLink"])["api-version"] == ["2019-11-01"]
    # AND following nextLink to the end yields both workspaces, whose ids are the truth's workspace ids
    items, pages = aml.walk_next_link(url, API)
    second = emu.expected_ids(DEMO_SUBSCRIPTION, DEMO_RESOURCE_GROUP, SECOND_WORKSPACE)
    expected = emu.expected_ids()["workspace"] | second["workspace"]
    assert {i["id"] for i in items} == expected and len(items) == 2
    assert "nextLink" not in pages[-1]


def test_arm_computes_walk_matches_the_truth(emu: EmulatorServer, aml: AmlClient) -> None:
    items, pages = aml.walk_next_link(aml.arm(f"{WS}/computes"), API)
    assert pages[0]["value"] == [] and pages[0]["nextLink"]
    assert pages[-1]["nextLink"] is None
    assert len(items) == len({i["id"] for i in items})
    assert {i["id"] for i in items} == emu.expected_ids(*DEMO)["computes"]
    # AND each compute can be read by name; compute instances carry createdBy{userName,userOrgId,userId}
    for item in items:
        one = aml.get(aml.arm(f"{WS}/computes/{item['name']}"), API)
        assert one.status_code == 200 and one.json() == item
    creators = [i["properties"]["properties"].get("createdBy") for i in items]
    assert {c["userId"] for c in creators if c} == {JANE.object_id, JOHN.object_id}


def test_arm_workspace_get_and_api_version_rule(aml: AmlClient) -> None:
    workspace = aml.get(aml.arm(WS), API)
    assert workspace.status_code == 200
    assert workspace.json()["systemData"]["createdBy"] == "jane.doe@contoso.com"
    missing_version = aml.get(aml.arm(WS))
    assert missing_version.status_code == 400
    assert missing_version.json()["error"]["code"] == "MissingApiVersionParameter"


# ---------------------------------------------------------------------------------- model management


@pytest.mark.parametrize("kind", ["models", "assets", "images", "services"])
def test_mms_walk_has_an_empty_middle_page_and_matches_the_truth(emu: EmulatorServer, aml: AmlClient, kind: str) -> None:
    # WHEN the list is followed by nextLink
    items, pages = aml.walk_next_link(aml.mms(f"api/{WS}/{kind}"), API)
    # THEN exactly the truth's ids, each once
    ids = [i["id"] for i in items]
    assert len(ids) == len(set(ids))
    assert set(ids) == emu.expected_ids(*DEMO)[kind]
    # AND the walk went through an empty page that still had a nextLink (not the first, not the last)
    middle = pages[1:-1]
    assert any(p["value"] == [] and p["nextLink"] for p in middle)
    assert all("$skipToken" in _query(p["nextLink"]) for p in pages[:-1])
    assert "nextLink" not in pages[-1]


def test_model_ids_are_name_colon_version(emu: EmulatorServer) -> None:
    models = emu.expected_ids()["models"]
    assert {"churn-model:1", "churn-model:2", "sklearn_mnist:1"} <= models
    assert {"churn-image:1"} <= emu.expected_ids()["images"]


@pytest.mark.parametrize("segment", ["churn-model%3A1", "churn-model:1", "churn-model%3a1"])
def test_percent_encoded_and_raw_ids_name_the_same_model(aml: AmlClient, segment: str) -> None:
    response = aml.get(aml.mms(f"api/{WS}/models/{segment}"), API)
    assert response.status_code == 200
    assert response.json()["id"] == "churn-model:1"


def test_path_is_split_before_decoding(aml: AmlClient) -> None:
    # an encoded "/" stays inside its segment: it is an (unknown) id, not two segments
    response = aml.get(aml.mms(f"api/{WS}/models/churn-model%3A1%2Fextra"), API)
    assert response.status_code == 404
    assert response.json()["statusCode"] == 404


# --------------------------------------------------------------------------------------- run history


@pytest.mark.parametrize("token_param", ["$continuationtoken", "continuationToken"])
def test_run_history_lists_use_continuation_tokens_and_a_null_nextlink(
    emu: EmulatorServer, aml: AmlClient, token_param: str
) -> None:
    truth = emu.expected_ids(*DEMO)
    experiments, pages = aml.walk_token(aml.exp(f"history/v1.0/{WS}/experiments"), token_param)
    assert len(pages) > 1 and all(p["nextLink"] is None for p in pages)
    assert pages[-1]["continuationToken"] is None
    assert {e["experimentId"] for e in experiments} == truth["experiments"]
    runs: set[str] = set()
    metrics: set[str] = set()
    for experiment in experiments:
        base = f"history/v1.0/{WS}/experiments/{aml.seg(experiment['name'])}"
        run_items, run_pages = aml.walk_token(aml.exp(f"{base}/runs"), token_param)
        assert len(run_pages) > 1 and all(p["nextLink"] is None for p in run_pages)
        runs |= {r["runId"] for r in run_items}
        metrics |= {m["metricId"] for m in aml.walk_token(aml.exp(f"{base}/metrics"), token_param)[0]}
        # each run and metric can be read on its own
        first_run = run_items[0]
        one = aml.get(aml.exp(f"{base}/runs/{aml.seg(first_run['runId'])}"))
        assert one.status_code == 200 and one.json() == first_run
    assert runs == truth["runs"]
    assert metrics == truth["metrics"]


def test_every_experiment_has_a_pipeline_run(aml: AmlClient) -> None:
    for experiment in _experiments(aml):
        url = aml.exp(f"history/v1.0/{WS}/experiments/{aml.seg(experiment['name'])}/runs")
        run_types = [r["runType"] for r in aml.walk_token(url, "$continuationtoken")[0]]
        assert PIPELINE_RUN_TYPE in run_types


def test_run_from_another_experiment_is_not_found(aml: AmlClient) -> None:
    experiments = _experiments(aml)
    first, second = experiments[0]["name"], experiments[1]["name"]
    run_of_first = aml.walk_token(aml.exp(f"history/v1.0/{WS}/experiments/{first}/runs"), "$continuationtoken")[0][0]
    response = aml.get(aml.exp(f"history/v1.0/{WS}/experiments/{second}/runs/{run_of_first['runId']}"))
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "UserError"


def test_artifacts_have_both_a_token_and_a_nextlink(emu: EmulatorServer, aml: AmlClient) -> None:
    found: set[str] = set()
    for run in _runs(aml):
        url = aml.exp(f"artifact/v1.0/{WS}/artifacts/origins/ExperimentRun/containers/{aml.seg(run['runId'])}")
        # page size 1 would hide the difference, so check a page with more behind it
        first = aml.get(url).json()
        if first["continuationToken"]:
            assert first["nextLink"].startswith(emu.base_url)
            assert _query(first["nextLink"])["continuationToken"] == [first["continuationToken"]]
        by_link, _ = aml.walk_next_link(url)
        by_token, pages = aml.walk_token(url, "continuationToken")
        assert by_link == by_token
        assert pages[-1]["continuationToken"] is None and pages[-1]["nextLink"] is None
        found |= {a["artifactId"] for a in by_token}
    assert found == emu.expected_ids(*DEMO)["artifacts"]


def test_tasks_page_with_continuation_token_only(emu: EmulatorServer, aml: AmlClient) -> None:
    url = aml.exp(f"notification/v1.0/{WS}/tasks")
    items, pages = aml.walk_token(url, "continuationToken")
    assert len(pages) > 1
    assert all(set(p) == {"value", "continuationToken"} for p in pages)
    assert {t["id"] for t in items} == emu.expected_ids(*DEMO)["tasks"]
    also, _ = aml.walk_token(url, "$continuationtoken")
    assert also == items
    one = aml.get(aml.exp(f"notification/v1.0/{WS}/tasks/{items[0]['id']}"))
    assert one.status_code == 200 and one.json() == items[0]


# ---------------------------------------------------------------------------------------- datastores


def _secret_fields(datastore: dict[str, Any]) -> list[Any]:
    storage, principal = datastore["azureStorageSection"], datastore["servicePrincipalSection"]
    fields = ("credential", "accountKey", "sasToken", "connectionString")
    return [*(storage[f] for f in fields), principal["clientSecret"]]


def test_datastores_carry_secrets_unless_include_secret_is_false(emu: EmulatorServer, aml: AmlClient) -> None:
    url = aml.exp(f"datastore/v1.0/{WS}/datastores")
    # WHEN listed without includeSecret (its default is true)
    with_secrets, _ = aml.walk_token(url, "continuationToken")
    # THEN every secret field is there and recognisable
    assert all(SECRET_MARKER in str(v) for d in with_secrets for v in _secret_fields(d))
    served = {v for d in with_secrets for v in _secret_fields(d)}
    assert served <= emu.secret_values() and len(served) == 5 * len(with_secrets)
    # WHEN listed with includeSecret=false (any case), following the continuation token
    for flag in ("false", "False", "FALSE"):
        without, _ = aml.walk_token(url, "continuationToken", {"includeSecret": flag})
        # THEN the same datastores, with every secret null
        assert {d["name"] for d in without} == emu.expected_ids(*DEMO)["datastores"]
        assert all(v is None for d in without for v in _secret_fields(d))
        assert SECRET_MARKER not in str(without)


def test_datastore_nextlink_drops_include_secret(aml: AmlClient) -> None:
    # GIVEN the first page asked for without secrets
    url = aml.exp(f"datastore/v1.0/{WS}/datastores")
    first = aml.get(url, {"includeSecret": "false", "count": "30"}).json()
    assert all(v is None for d in first["value"] for v in _secret_fields(d))
    # THEN its nextLink has lost includeSecret (but kept the other parameters)
    query = _query(first["nextLink"])
    assert "includeSecret" not in query and query["count"] == ["30"]
    # AND a client that follows nextLink alone receives secrets on page 2
    second = aml.get(first["nextLink"]).json()
    assert second["value"] and all(SECRET_MARKER in str(v) for d in second["value"] for v in _secret_fields(d))


def test_single_datastore_get_honours_include_secret(aml: AmlClient) -> None:
    url = aml.exp(f"datastore/v1.0/{WS}/datastores/workspaceblobstore")
    assert SECRET_MARKER in aml.get(url).text
    hidden = aml.get(url, {"includeSecret": "false"})
    assert hidden.status_code == 200 and SECRET_MARKER not in hidden.text


# ----------------------------------------------------------------------------------------- pipelines


def test_pipeline_objects_are_reachable_from_pipeline_runs_only(emu: EmulatorServer, aml: AmlClient) -> None:
    # GIVEN the pipeline runs (runType azureml.PipelineRun); their runId is the pipeline experiment id
    pipeline_runs = [r for r in _runs(aml) if r["runType"] == PIPELINE_RUN_TYPE]
    found: dict[str, set[str]] = {k: set() for k in ("Experiments", "Graphs", "Modules", "Templates", "DataSources")}
    module_refs = 0
    source_refs = 0

    def get(segment: str, item_id: str) -> dict[str, Any]:
        response = aml.get(aml.aether(f"api/v1.0/{WS}/{segment}/{aml.seg(item_id)}"))
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        assert body["id"] == item_id
        found[segment].add(item_id)
        return body

    # WHEN the references are followed (experiment -> graph/template -> modules/data sources)
    for run in pipeline_runs:
        experiment = get("Experiments", run["runId"])
        assert experiment["createdBy"]["userObjectId"]
        if experiment.get("templateId"):
            get("Templates", experiment["templateId"])
        graph = get("Graphs", experiment["graphId"])
        for node in graph["moduleNodes"]:
            module_refs += 1
            if node["moduleId"] not in found["Modules"]:
                get("Modules", node["moduleId"])
        for node in graph["datasourceNodes"]:
            source_refs += 1
            if node["dataSourceId"] not in found["DataSources"]:
                get("DataSources", node["dataSourceId"])
    # THEN the ids found are the truth's pipeline ids
    truth = emu.expected_ids(*DEMO)
    assert found["Experiments"] == truth["pipelineExperiments"]
    assert found["Graphs"] == truth["pipelineGraphs"]
    assert found["Modules"] == truth["pipelineModules"]
    assert found["Templates"] == truth["pipelineTemplates"]
    assert found["DataSources"] == truth["pipelineDataSources"]
    # AND some modules and data sources are shared by graphs (a client must dedup); some experiments have no template
    assert module_refs > len(found["Modules"]) and source_refs > len(found["DataSources"])
    assert 0 < len(found["Templates"]) < len(found["Experiments"])


def test_unknown_aether_id_is_404(aml: AmlClient) -> None:
    response = aml.get(aml.aether(f"api/v1.0/{WS}/Modules/00000000-0000-0000-0000-000000000000"))
    assert response.status_code == 404
    assert response.json()["error"]["code"]


# -------------------------------------------------------------------------------------- tokens, errors


@pytest.mark.parametrize(
    ("family", "path", "param"),
    [
        ("arm", f"{WS}/computes", "$skiptoken"),
        ("mms", f"api/{WS}/models", "$skipToken"),
        ("exp", f"history/v1.0/{WS}/experiments", "$continuationtoken"),
        ("exp", f"notification/v1.0/{WS}/tasks", "continuationToken"),
        ("exp", f"datastore/v1.0/{WS}/datastores", "continuationToken"),
    ],
)
@pytest.mark.parametrize("token", ["not-a-token!!", "eyJzIjoib3RoZXIiLCJhIjowLCJlIjowfQ"])
def test_an_invalid_or_foreign_continuation_token_is_400(aml: AmlClient, family: str, path: str, param: str, token: str) -> None:
    url = {"arm": aml.arm, "mms": aml.mms, "exp": aml.exp}[family](path)
    response = aml.get(url, {**API, param: token})
    assert response.status_code == 400


def test_a_token_from_another_list_is_rejected(aml: AmlClient) -> None:
    models_page = aml.get(aml.mms(f"api/{WS}/models"), API).json()
    token = _query(models_page["nextLink"])["$skipToken"][0]
    response = aml.get(aml.mms(f"api/{WS}/assets"), {**API, "$skipToken": token})
    assert response.status_code == 400


@pytest.mark.parametrize(
    ("family", "path", "shape"),
    [
        ("arm", ws_path("ws-nope"), "arm"),
        ("arm", f"{WS}/computes/nope", "arm"),
        ("mms", f"api/{WS}/models/nope:1", "mms"),
        ("mms", f"api/{ws_path('ws-nope')}/models", "mms"),
        ("exp", f"history/v1.0/{WS}/experiments/nope/runs", "history"),
        ("exp", f"datastore/v1.0/{WS}/datastores/nope", "history"),
    ],
)
def test_unknown_workspace_or_item_is_404_in_the_family_error_shape(aml: AmlClient, family: str, path: str, shape: str) -> None:
    url = {"arm": aml.arm, "mms": aml.mms, "exp": aml.exp}[family](path)
    response = aml.get(url, API)
    assert response.status_code == 404
    body = response.json()
    if shape == "arm":
        assert set(body["error"]) == {"code", "message", "details"}
    elif shape == "mms":
        assert body["statusCode"] == 404 and body["code"] and body["message"] and "error" not in body
    else:
        assert body["error"]["code"] and body["error"]["message"] and "correlation" in body


@pytest.mark.parametrize(
    ("family", "path"),
    [("mms", f"api/{WS}/models"), ("exp", f"history/v1.0/{WS}/experiments"), ("aether", f"api/v1.0/{WS}/Graphs/x")],
)
def test_the_location_segment_must_be_the_workspace_location(aml: AmlClient, family: str, path: str) -> None:
    url = {"mms": aml.mms, "exp": aml.exp, "aether": aml.aether}[family](path, location="eastus")
    assert aml.get(url, API).status_code == 404


def test_second_workspace_is_served_in_its_own_region_with_its_own_data(emu: EmulatorServer, aml: AmlClient) -> None:
    second = ws_path(SECOND_WORKSPACE)
    truth = emu.expected_ids(DEMO_SUBSCRIPTION, DEMO_RESOURCE_GROUP, SECOND_WORKSPACE)
    models, _ = aml.walk_next_link(aml.mms(f"api/{second}/models", location=SECOND_LOCATION), API)
    assert {m["id"] for m in models} == truth["models"]
    assert truth["models"].isdisjoint(emu.expected_ids(*DEMO)["models"])
    assert aml.get(aml.mms(f"api/{second}/models", location="westeurope"), API).status_code == 404
    assert sum(len(v) for v in truth.values()) < sum(len(v) for v in emu.expected_ids(*DEMO).values())


def test_keyset_paging_survives_deletes_between_pages(emu: EmulatorServer, aml: AmlClient) -> None:
    # GIVEN a client that read the first models page
    url = aml.mms(f"api/{WS}/models")
    first = aml.get(url, API).json()
    # WHEN those models are deleted before the next page is read
    for model in first["value"]:
        assert aml.session.delete(aml.mms(f"api/{WS}/models/{aml.seg(model['id'])}"), params=API).status_code == 200
    rest, _ = aml.walk_next_link(first["nextLink"])
    # THEN no remaining model was skipped
    assert {m["id"] for m in rest} == emu.expected_ids(*DEMO)["models"]
