"""Subject-scoped export and delete: only what belongs to the data subject, and nothing else."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from shared.domain.contract import EXPORT_KINDS
from shared.service.processor import handle
from tests.support.bundles import DEMO_TARGET, read_bundle
from tools.emulator import EMBEDDED_GUID_DECOY, JANE, JOHN

pytestmark = pytest.mark.integration


def _subject(s: Any) -> dict[str, Any]:
    return {"objectId": s.object_id, "tenantId": s.tenant_id, "upn": s.upn}


def _names(s: Any, line: dict[str, Any]) -> bool:
    text = json.dumps(line["data"])
    tokens = [re.escape(s.object_id)] + ([re.escape(s.upn)] if s.upn else [])
    return re.search(rf"(?<![A-Za-z0-9._%+@-])(?:{'|'.join(tokens)})(?![A-Za-z0-9._%+@-])", text, re.I) is not None


def test_subject_export_holds_exactly_the_subjects_records(services, dsr_env, emulator, make_request):
    body = make_request(scope="subject", subject=_subject(JANE))
    event = handle(json.dumps(body), services)
    assert event["data"]["status"] == "completed", event["data"]["errors"]
    manifest, files = read_bundle(dsr_env, body["requestId"])
    lines = {name.rsplit("/", 1)[1].removesuffix(".jsonl"): ls for name, ls in files.items()}
    expected = emulator.expected_ids(subject=JANE)
    ids = {kind: {line["id"] for line in ls} for kind, ls in lines.items()}
    # every record that names Jane is there
    for kind, want in expected.items():
        if kind in EXPORT_KINDS:  # the kinds the app exports by default
            assert want <= ids.get(kind, set()), (kind, want - ids.get(kind, set()))
    # every record there names Jane, or hangs off one of Jane's records
    runs = {line["id"] for line in lines["runs"] if line["matchedBy"] in ("identity", "parent")}
    assert runs

    def attributed(kind: str) -> list[dict[str, Any]]:
        return [line["data"] for line in lines[kind] if line["matchedBy"] in ("identity", "parent")]

    graphs = attributed("pipelineGraphs")
    parent_ids = {
        "pipelineExperiments": runs,
        "pipelineGraphs": {e.get("graphId") for e in attributed("pipelineExperiments")},
        "pipelineTemplates": {e.get("templateId") for e in attributed("pipelineExperiments")},
        "pipelineModules": {n["moduleId"] for g in graphs for n in g.get("moduleNodes", [])},
        "pipelineDataSources": {n["dataSourceId"] for g in graphs for n in g.get("datasourceNodes", [])},
    }
    assert all(parent_ids.values()), "Jane has no pipelines: the inheritance checks would prove nothing"
    for kind, ls in lines.items():
        for line in ls:
            assert line["matchedBy"] in ("identity", "parent", "mention"), line
            if line["matchedBy"] in ("identity", "mention"):
                assert _names(JANE, line), (kind, line["id"])
            elif kind == "metrics":
                assert line["data"]["runId"] in runs
            elif kind == "artifacts":
                assert any(run in line["id"] for run in runs)
            else:
                # a pipeline object inherited from Jane's pipeline: its parent is in the bundle as hers
                assert line["id"] in parent_ids[kind], (kind, line["id"])
    # nothing of John's came in on its own: every record naming him but not Jane is a child of Jane's
    for kind, ls in lines.items():
        for line in ls:
            if _names(JOHN, line) and not _names(JANE, line):
                assert line["matchedBy"] == "parent", (kind, line["id"])
    # the decoy (Jane's GUID inside a longer token) did not count as a mention
    decoys = [line for ls in lines.values() for line in ls if EMBEDDED_GUID_DECOY in json.dumps(line["data"])]
    assert all(line["matchedBy"] != "mention" or _names(JANE, line) for line in decoys)
    # scanned / matched are reported per kind, by match type
    matches = event["data"]["subjectMatches"][next(iter(event["data"]["subjectMatches"]))]
    assert matches["runs"]["scanned"] == len(emulator.expected_ids()["runs"])
    assert matches["runs"]["identity"] + matches["runs"]["mention"] + matches["runs"]["parent"] == len(lines["runs"])
    assert manifest["subjectMatches"] == event["data"]["subjectMatches"]
    # and there is something from each kind of match, so the test proves something
    kinds_of_match = {line["matchedBy"] for ls in lines.values() for line in ls}
    assert kinds_of_match == {"identity", "parent", "mention"}


def test_subject_delete_deletes_only_the_subjects_items(services, dsr_env, emulator, make_request):
    before = emulator.expected_ids()
    johns = emulator.expected_ids(subject=JOHN)
    body = make_request(operation="delete", scope="subject", subject=_subject(JOHN))
    event = handle(json.dumps(body), services)
    assert event["data"]["status"] == "completed", event["data"]["errors"]
    deleted = {(i["kind"], i["id"]) for i in event["data"]["items"]}
    assert deleted, "John owns nothing deletable: the test would prove nothing"
    after = emulator.expected_ids()
    for kind in ("models", "assets", "images", "services"):
        gone = before[kind] - after[kind]
        assert gone == {i for k, i in deleted if k == kind}, kind
        assert gone <= johns[kind]
    # Jane's items are all still there
    janes = emulator.expected_ids(subject=JANE)
    for kind in ("models", "assets", "images", "services"):
        mentioned_only = {r["id"] for r in event["data"]["review"] if r["kind"] == kind}
        assert (janes[kind] - johns[kind]) <= after[kind] | mentioned_only, kind
    # what merely mentions John is listed for a person to review, not deleted
    for item in event["data"]["review"]:
        assert (item["kind"], item["id"]) not in deleted
        assert item["id"] in after["computes" if item["kind"] == "computeInstances" else item["kind"]]
    assert DEMO_TARGET["workspace"] in next(iter(event["data"]["counts"]))
