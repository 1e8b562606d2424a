"""Export requests end to end: the real pipeline against Azurite and the workspace emulator."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from collections import Counter
from typing import Any

import pytest

from shared.domain.contract import EXPORT_KINDS
from shared.service.processor import handle
from tests.support.bundles import DEMO_TARGET, blob_container, read_bundle
from tools.emulator import SECOND_LOCATION, SECOND_WORKSPACE

pytestmark = pytest.mark.integration


def _ids_by_kind(files: dict[str, list[dict[str, Any]]], workspace: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, lines in files.items():
        if f"/{workspace}/" in name:
            kind = name.rsplit("/", 1)[1].removesuffix(".jsonl")
            out[kind] = [line["id"] for line in lines]
    return out


def test_full_export_is_complete_exact_and_verifiable(services, dsr_env, emulator, make_request, publisher):
    # GIVEN the demo workspace in the emulator
    body = make_request()
    # WHEN an export of every kind runs
    event = handle(json.dumps(body), services)
    # THEN the outcome says completed and was published once
    assert event["type"] == "aml.dsr.export.completed", event["data"]["errors"]
    assert publisher.events == [event]
    assert event["id"] == f"{body['requestId']}:completed"
    manifest, files = read_bundle(dsr_env, body["requestId"])
    # AND every one of the 17 kinds holds exactly the emulator's items, each once
    exported = _ids_by_kind(files, DEMO_TARGET["workspace"])
    expected = emulator.expected_ids()
    assert set(exported) == set(EXPORT_KINDS)
    for kind in EXPORT_KINDS:
        assert Counter(exported[kind]) == Counter(expected[kind]), kind
        assert expected[kind], f"the emulator serves no {kind}: the test would prove nothing"
    # AND the manifest's counts, sizes and hashes match the files
    container = blob_container(dsr_env)
    for entry in manifest["files"]:
        raw = container.download_blob(entry["name"]).readall()
        assert entry["bytes"] == len(raw)
        assert entry["sha256"] == hashlib.sha256(raw).hexdigest()
        assert entry["items"] == len(files[entry["name"]])
    assert manifest["status"] == "completed" and manifest["errors"] == []
    counts = event["data"]["counts"][
        "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroup}/providers/"
        "Microsoft.MachineLearningServices/workspaces/{workspace}".format(**DEMO_TARGET)
    ]
    assert counts == {k: len(expected[k]) for k in EXPORT_KINDS}
    # AND each line has the contract's shape with the GET url without query
    line = files[
        f"{body['requestId']}/{DEMO_TARGET['subscriptionId']}/{DEMO_TARGET['resourceGroup']}/"
        f"{DEMO_TARGET['workspace']}/models.jsonl"
    ][0]
    assert set(line) == {"kind", "id", "source", "data"}
    assert "?" not in line["source"] and line["source"].endswith("/models/" + line["id"])


def test_export_survives_throttling_errors_and_dropped_connections(services, dsr_env, emulator, make_request):
    # GIVEN an emulator that throttles, fails and drops connections at random
    emulator.configure(faults={"429": 0.1, "503": 0.05, "drop": 0.05}, retry_after=0, seed=11)
    body = make_request()
    # WHEN the export runs
    event = handle(json.dumps(body), services)
    # THEN it is complete and without duplicates all the same
    assert event["data"]["status"] == "completed", event["data"]["errors"]
    faults = [r for r in emulator.requests() if r.get("fault")]
    assert len(faults) >= 5, "the fault knobs did not bite: the test would prove nothing"
    _, files = read_bundle(dsr_env, body["requestId"])
    exported = _ids_by_kind(files, DEMO_TARGET["workspace"])
    expected = emulator.expected_ids()
    for kind in EXPORT_KINDS:
        assert Counter(exported[kind]) == Counter(expected[kind]), kind


def test_bundle_holds_no_token_and_no_datastore_credential(services, dsr_env, emulator, make_request):
    body = make_request()
    handle(json.dumps(body), services)
    container = blob_container(dsr_env)
    blobs = {
        b.name: container.download_blob(b.name).readall() for b in container.list_blobs(name_starts_with=body["requestId"] + "/")
    }
    zipped = blobs.pop(f"{body['requestId']}/{body['requestId']}.zip")
    with zipfile.ZipFile(io.BytesIO(zipped)) as archive:  # the zip's members are read as they unpack
        blobs.update({f"zip:{name}": archive.read(name) for name in archive.namelist()})
    everything = b"".join(blobs.values()).decode()
    secrets = emulator.secret_values()
    assert secrets, "the emulator serves no secrets: the test would prove nothing"
    for secret in secrets:
        assert secret not in everything
    tokens = list(emulator.issued_tokens())
    assert tokens, "no token was issued: the managed-identity path did not run"
    for token in tokens:
        assert token not in everything
    # datastores were asked for without secrets on every page, including those reached by nextLink
    datastore_calls = [r for r in emulator.requests() if "/datastores" in r["path"]]
    assert len(datastore_calls) >= 2
    assert all(str(r["query"].get("includeSecret", "")).lower() == "false" for r in datastore_calls)


def test_the_real_managed_identity_credential_is_used(services, dsr_env, emulator, make_request):
    from azure.identity import ManagedIdentityCredential

    handle(json.dumps(make_request(resourceKinds=["models"])), services)
    assert isinstance(services.aml()._credential, ManagedIdentityCredential)
    token_calls = [r for r in emulator.requests() if r["path"].startswith("/msi/token")]
    aml_calls = [r for r in emulator.requests() if not r["path"].startswith(("/msi/", "/_emulator"))]
    assert len(token_calls) == 1, "the token is cached by azure-identity, not fetched per call"
    assert token_calls[0]["status"] == 200
    assert aml_calls and all(r["authorized"] for r in aml_calls)


def test_running_the_same_request_again_rewrites_the_same_names(services, dsr_env, emulator, make_request):
    body = make_request(resourceKinds=["models", "runs"])
    handle(json.dumps(body), services)
    first = sorted(b.name for b in blob_container(dsr_env).list_blobs())
    handle(json.dumps(body), services)
    second = sorted(b.name for b in blob_container(dsr_env).list_blobs())
    assert first == second
    _, files = read_bundle(dsr_env, body["requestId"])
    for lines in files.values():
        ids = [line["id"] for line in lines]
        assert len(ids) == len(set(ids))


def test_a_subset_of_kinds_walks_parents_without_writing_them(services, dsr_env, emulator, make_request):
    body = make_request(resourceKinds=["artifacts", "pipelineModules"])
    event = handle(json.dumps(body), services)
    assert event["data"]["status"] == "completed"
    manifest, files = read_bundle(dsr_env, body["requestId"])
    assert sorted(f["kind"] for f in manifest["files"]) == ["artifacts", "pipelineModules"]
    exported = _ids_by_kind(files, DEMO_TARGET["workspace"])
    expected = emulator.expected_ids()
    assert sorted(exported["artifacts"]) == sorted(expected["artifacts"])
    assert sorted(exported["pipelineModules"]) == sorted(expected["pipelineModules"])
    # models were not asked for, so never called
    assert not [r for r in emulator.requests() if "/models" in r["path"]]


def test_two_workspaces_and_one_missing_gives_a_partial_outcome(services, dsr_env, emulator, make_request):
    second = {**DEMO_TARGET, "workspace": SECOND_WORKSPACE, "location": SECOND_LOCATION}
    missing = {**DEMO_TARGET, "workspace": "ws-nowhere"}
    body = make_request(targets=[DEMO_TARGET, second, missing], resourceKinds=["models", "computes"])
    event = handle(json.dumps(body), services)
    assert event["type"] == "aml.dsr.export.partially_completed"
    [error] = event["data"]["errors"]
    assert error["code"] == "workspace_not_found" and error["target"].endswith("/ws-nowhere")
    assert len(event["data"]["counts"]) == 2
    _, files = read_bundle(dsr_env, body["requestId"])
    assert sorted(_ids_by_kind(files, SECOND_WORKSPACE)["models"]) == sorted(emulator.expected_ids(ws=SECOND_WORKSPACE)["models"])


def test_a_wrong_location_is_caught_before_any_data_call(services, dsr_env, emulator, make_request):
    body = make_request(targets=[{**DEMO_TARGET, "location": "eastus"}])
    event = handle(json.dumps(body), services)
    assert event["data"]["status"] == "failed"
    assert [e["code"] for e in event["data"]["errors"]] == ["location_mismatch"]
    assert not [r for r in emulator.requests() if r["path"].startswith(("/mms", "/exp", "/aether"))]


def test_an_invalid_request_is_rejected_with_no_call_and_no_blob(services, dsr_env, emulator, azurite, make_request, publisher):
    from azure.storage.blob import BlobServiceClient

    body = make_request(targets=[{**DEMO_TARGET, "location": "evil.example.com/"}])
    event = handle(json.dumps(body), services)
    assert event["type"] == "aml.dsr.export.rejected"
    assert event["data"]["errors"][0]["code"] == "invalid_format"
    assert event["data"]["errors"][0]["field"] == "targets[0].location"
    assert publisher.events == [event]
    assert emulator.requests() == []
    containers = [c.name for c in BlobServiceClient.from_connection_string(azurite.connection_string).list_containers()]
    assert dsr_env["DSR_EXPORT_CONTAINER"] not in containers
