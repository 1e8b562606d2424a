"""DELETE semantics: 200/204, the service 202 + Operation-Location flow, the workspace LRO, dropped responses."""

from __future__ import annotations

import pytest
import requests

from tools.emulator import (
    DEMO_RESOURCE_GROUP,
    DEMO_SUBSCRIPTION,
    DEMO_WORKSPACE,
    KINDS,
    SECOND_WORKSPACE,
    EmulatorServer,
)

from ._client import API, AmlClient, ws_path

WS = ws_path()
DEMO = (DEMO_SUBSCRIPTION, DEMO_RESOURCE_GROUP, DEMO_WORKSPACE)


def _delete(aml: AmlClient, kind: str, item_id: str) -> requests.Response:
    return aml.session.delete(aml.mms(f"api/{WS}/{kind}/{aml.seg(item_id)}"), params=API, timeout=10)


@pytest.mark.parametrize(("kind", "item_id"), [("models", "churn-model:1"), ("images", "churn-image:2")])
def test_mms_delete_is_200_then_204(emu: EmulatorServer, aml: AmlClient, kind: str, item_id: str) -> None:
    # GIVEN an existing item
    assert item_id in emu.expected_ids(*DEMO)[kind]
    # WHEN it is deleted: 200; it is gone from GET, lists and the truth
    assert _delete(aml, kind, item_id).status_code == 200
    assert aml.get(aml.mms(f"api/{WS}/{kind}/{aml.seg(item_id)}"), API).status_code == 404
    listed, _ = aml.walk_next_link(aml.mms(f"api/{WS}/{kind}"), API)
    assert item_id not in {i["id"] for i in listed}
    assert item_id not in emu.expected_ids(*DEMO)[kind]
    # AND deleting it again is 204 (did not exist)
    again = _delete(aml, kind, item_id)
    assert again.status_code == 204 and again.content == b""


def test_asset_delete(emu: EmulatorServer, aml: AmlClient) -> None:
    asset_id = sorted(emu.expected_ids(*DEMO)["assets"])[0]
    assert _delete(aml, "assets", asset_id).status_code == 200
    assert _delete(aml, "assets", asset_id).status_code == 204


def test_service_delete_is_a_202_with_an_operation_to_poll(emu: EmulatorServer, aml: AmlClient) -> None:
    # GIVEN a service and a poll count of 2
    emu.configure(service_delete_polls=2)
    service_url = aml.mms(f"api/{WS}/services/churn-svc")
    # WHEN it is deleted
    accepted = aml.session.delete(service_url, params=API)
    # THEN 202 with an absolute Operation-Location on the same server and prefix
    assert accepted.status_code == 202
    operation_url = accepted.headers["Operation-Location"]
    assert operation_url.startswith(f"{emu.base_url}/mms/westeurope/api/{WS}/operations/")
    # AND the operation runs for 2 polls (the service still exists meanwhile), then succeeds
    states = []
    for _ in range(3):
        body = aml.get(operation_url).json()
        assert body["operationType"] == "ServiceDelete"
        states.append(body["state"])
        if body["state"] == "Running":
            assert aml.get(service_url, API).status_code == 200
    assert states == ["Running", "Running", "Succeeded"]
    # AND then the service is gone
    assert aml.get(service_url, API).status_code == 404
    assert "churn-svc" not in emu.expected_ids(*DEMO)["services"]
    assert aml.session.delete(service_url, params=API).status_code == 204


def test_service_delete_repeated_while_running_returns_the_same_operation(aml: AmlClient) -> None:
    url = aml.mms(f"api/{WS}/services/mnist-svc")
    first = aml.session.delete(url, params=API)
    second = aml.session.delete(url, params=API)
    assert first.status_code == second.status_code == 202
    assert first.headers["Operation-Location"] == second.headers["Operation-Location"]


def test_workspace_delete_is_a_long_running_operation(emu: EmulatorServer, aml: AmlClient) -> None:
    # GIVEN a workspace and a 2-poll operation
    emu.configure(lro_polls=2, lro_retry_after=0)
    # WHEN it is deleted with forceToPurge
    accepted = aml.session.delete(aml.arm(WS), params={**API, "forceToPurge": "true"})
    # THEN 202 with Location, Azure-AsyncOperation (absolute, back to /arm) and Retry-After
    assert accepted.status_code == 202
    async_url, location_url = accepted.headers["Azure-AsyncOperation"], accepted.headers["Location"]
    assert async_url.startswith(f"{emu.base_url}/arm/") and location_url.startswith(f"{emu.base_url}/arm/")
    assert accepted.headers["Retry-After"] == "0"
    assert emu.workspace_deletions()[0]["forceToPurge"] is True
    # AND while it runs the workspace still answers, as Deleting
    assert aml.get(aml.arm(WS), API).json()["properties"]["provisioningState"] == "Deleting"
    # AND the polls (either URL counts) answer InProgress / 202, then Succeeded / 200
    assert aml.get(async_url).json()["status"] == "InProgress"
    running = aml.get(location_url)
    assert running.status_code == 202 and running.headers["Location"] and "Retry-After" in running.headers
    done = aml.get(async_url).json()
    assert done["status"] == "Succeeded" and done["endTime"]
    assert aml.get(location_url).status_code == 200
    # AND the workspace and all its data are gone
    gone = aml.get(aml.arm(WS), API)
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "ResourceNotFound"
    assert aml.get(aml.mms(f"api/{WS}/models"), API).status_code == 404
    assert aml.get(aml.exp(f"history/v1.0/{WS}/experiments")).status_code == 404
    assert emu.expected_ids(*DEMO) == {kind: set() for kind in KINDS}
    assert emu.workspace_deletions()[0]["status"] == "Succeeded"
    # AND a second delete is 204; the other workspace is untouched
    assert aml.session.delete(aml.arm(WS), params=API).status_code == 204
    assert aml.get(aml.arm(ws_path(SECOND_WORKSPACE)), API).status_code == 200


def test_workspace_delete_without_purge_is_recorded_as_such(emu: EmulatorServer, aml: AmlClient) -> None:
    assert aml.session.delete(aml.arm(WS), params=API).status_code == 202
    assert emu.workspace_deletions()[0]["forceToPurge"] is False


def test_drop_delete_response_by_id(emu: EmulatorServer, aml: AmlClient) -> None:
    # GIVEN the response to deleting churn-model:1 will be lost
    emu.configure(drop_delete_response=["churn-model:1"])
    # WHEN it is deleted: the connection closes without an answer
    with pytest.raises(requests.ConnectionError):
        _delete(aml, "models", "churn-model:1")
    # THEN the delete took effect anyway, and a retry learns it is already gone
    assert "churn-model:1" not in emu.expected_ids(*DEMO)["models"]
    assert _delete(aml, "models", "churn-model:1").status_code == 204
    entry = next(r for r in emu.requests() if r["method"] == "DELETE")
    assert entry["dropped"] is True and entry["status"] is None
    # AND other deletes are answered
    assert _delete(aml, "models", "churn-model:2").status_code == 200


def test_drop_delete_response_by_count_only_counts_deletes_that_took_effect(emu: EmulatorServer, aml: AmlClient) -> None:
    emu.configure(drop_delete_response=1)
    assert _delete(aml, "models", "no-such-model:9").status_code == 204
    with pytest.raises(requests.ConnectionError):
        _delete(aml, "models", "sklearn_mnist:1")
    assert _delete(aml, "models", "sklearn_mnist:2").status_code == 200
    assert not {"sklearn_mnist:1", "sklearn_mnist:2"} & emu.expected_ids(*DEMO)["models"]


def test_dropped_workspace_delete_still_starts_the_operation(emu: EmulatorServer, aml: AmlClient) -> None:
    emu.configure(drop_delete_response=[DEMO_WORKSPACE], lro_polls=0)
    with pytest.raises(requests.ConnectionError):
        aml.session.delete(aml.arm(WS), params=API)
    retry = aml.session.delete(aml.arm(WS), params=API)
    assert retry.status_code == 202
    assert aml.get(retry.headers["Azure-AsyncOperation"]).json()["status"] == "Succeeded"
    assert aml.get(aml.arm(WS), API).status_code == 404
    assert len(emu.workspace_deletions()) == 1


def test_reset_restores_data_and_clears_the_log(emu: EmulatorServer, aml: AmlClient) -> None:
    # GIVEN the initial truth, then a deleted model and a deleted workspace
    initial = emu.expected_ids(*DEMO)
    emu.configure(lro_polls=0)
    _delete(aml, "models", "churn-model:1")
    aml.get(aml.session.delete(aml.arm(WS), params=API).headers["Azure-AsyncOperation"])
    assert emu.expected_ids(*DEMO)["workspace"] == set()
    # WHEN the emulator is reset
    emu.reset()
    # THEN the data and ids are back, the log is empty, and the old token still works
    assert emu.expected_ids(*DEMO) == initial
    assert emu.requests() == []
    assert aml.get(aml.mms(f"api/{WS}/models/churn-model%3A1"), API).status_code == 200
    assert emu.workspace_deletions() == []
