"""The generated data: deterministic, scalable, shaped like aml-api/, with subjects, mentions and a decoy."""

from __future__ import annotations

import json
from typing import Any

from tools.emulator import (
    DEMO_RESOURCE_GROUP,
    DEMO_SUBSCRIPTION,
    DEMO_WORKSPACE,
    EMBEDDED_GUID_DECOY,
    JANE,
    JOHN,
    PIPELINE_RUN_TYPE,
    SECOND_WORKSPACE,
    EmulatorConfig,
    EmulatorServer,
    names_subject,
)
from tools.emulator.data import Workspace, generate, workspace_key

DEMO = (DEMO_SUBSCRIPTION, DEMO_RESOURCE_GROUP, DEMO_WORKSPACE)
CREATED_BY_FIELDS = {"userObjectId", "userPuId", "userIss", "userTenantId", "userName", "upn"}


def _demo(seed: int = 1, scale: float = 1.0) -> Workspace:
    return generate(seed, scale)[workspace_key(*DEMO)]


def test_same_seed_same_data_other_seed_other_ids() -> None:
    assert json.dumps(_demo(5).arm) == json.dumps(_demo(5).arm)
    assert [r["runId"] for r in _demo(5).all_runs()] == [r["runId"] for r in _demo(5).all_runs()]
    assert [r["runId"] for r in _demo(5).all_runs()] != [r["runId"] for r in _demo(6).all_runs()]


def test_scale_one_counts() -> None:
    with EmulatorServer() as emu:
        ids = emu.expected_ids(*DEMO)
    counts = {kind: len(values) for kind, values in ids.items()}
    assert counts["workspace"] == 1
    # computes: ci-jane, ci-john, ci-for-jane (John's, assigned to Jane), cpu-cluster
    assert counts["computes"] == 4 and counts["experiments"] == 3 and counts["runs"] == 12
    assert counts["metrics"] == 9 and counts["artifacts"] == 24 and counts["tasks"] == 3
    assert counts["datastores"] == 3 and counts["models"] == 5
    assert counts["assets"] == counts["images"] == counts["services"] == 3
    assert counts["pipelineExperiments"] == counts["pipelineGraphs"] == 3
    assert all(counts[k] >= 1 for k in ("pipelineModules", "pipelineTemplates", "pipelineDataSources"))


def test_scale_multiplies_counts_and_keeps_the_named_items() -> None:
    with EmulatorServer(EmulatorConfig(scale=2)) as emu:
        ids = emu.expected_ids(*DEMO)
        second = emu.expected_ids(DEMO_SUBSCRIPTION, DEMO_RESOURCE_GROUP, SECOND_WORKSPACE)
    # computes: 6 scaled, and ci-for-jane (not scaled)
    assert len(ids["computes"]) == 6 + 1 and len(ids["models"]) == 10 and len(ids["runs"]) == 6 * 8
    assert {"churn-model:1", "sklearn_mnist:1"} <= ids["models"]
    assert 0 < sum(map(len, second.values())) < sum(map(len, ids.values()))


def test_both_subjects_create_records_in_every_personal_field() -> None:
    ws = _demo()
    runs = list(ws.all_runs())
    for subject in (JANE, JOHN):
        mine = [r for r in runs if r["createdBy"]["userObjectId"] == subject.object_id]
        assert mine and all(set(r["createdBy"]) >= CREATED_BY_FIELDS for r in mine)
        assert all(r["userId"] == subject.object_id and r["createdBy"]["upn"] == subject.upn for r in mine)
        assert any(m["createdBy"]["userObjectId"] == subject.object_id for m in ws.mms["models"].values())
        assert any(
            c["properties"]["properties"].get("createdBy", {}).get("userId") == subject.object_id for c in ws.computes.values()
        )
    assert ws.arm["systemData"]["createdBy"] == JANE.upn


def test_mentions_of_one_subject_in_the_others_records() -> None:
    ws = _demo()
    churn = ws.mms["models"].get("churn-model:1")
    assert churn is not None
    assert churn["createdBy"]["userObjectId"] == JANE.object_id and JOHN.upn in churn["kvTags"].values()
    johns = [r for r in ws.all_runs() if r["createdBy"]["userObjectId"] == JOHN.object_id]
    johns_mentioning_jane = [r for r in johns if JANE.object_id in (r["description"] or "")]
    assert johns_mentioning_jane


def test_an_embedded_guid_is_not_a_mention() -> None:
    ws = _demo()
    decoys: list[dict[str, Any]] = [r for r in ws.all_runs() if EMBEDDED_GUID_DECOY in json.dumps(r)]
    decoys += [a for a in ws.mms["assets"].values() if EMBEDDED_GUID_DECOY in json.dumps(a)]
    assert decoys
    for record in decoys:
        assert JANE.object_id in json.dumps(record)  # as a substring ...
        assert not names_subject(record, JANE.object_id, JANE.upn)  # ... but not as a token
    assert names_subject({"description": f"asked by {JANE.object_id}."}, JANE.object_id)
    assert JOHN.upn is not None
    assert names_subject({"tags": {"r": JOHN.upn.upper()}}, JOHN.object_id, JOHN.upn)


def test_subject_truth_contains_mentions_and_excludes_decoys() -> None:
    with EmulatorServer() as emu:
        jane = emu.expected_ids(*DEMO, subject=JANE)
        john = emu.expected_ids(*DEMO, subject=JOHN)
    assert "churn-model:1" in john["models"] and "churn-model:1" in jane["models"]
    ws = _demo()
    decoy_runs = {r["runId"] for r in ws.all_runs() if EMBEDDED_GUID_DECOY in json.dumps(r)}
    assert decoy_runs and decoy_runs.isdisjoint(jane["runs"])


def test_pipeline_runs_and_datastore_secrets_are_shaped_as_designed() -> None:
    ws = _demo()
    for run in ws.all_runs():
        if run["runType"] == PIPELINE_RUN_TYPE:
            experiment = ws.aether["Experiments"][run["runId"]]
            assert experiment["graphId"] in ws.aether["Graphs"]
    for datastore in ws.datastores.values():
        assert datastore["azureStorageSection"]["accountKey"].startswith("SECRET-")
        assert "SECRET-" in datastore["servicePrincipalSection"]["clientSecret"]
