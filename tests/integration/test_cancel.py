"""Cancelling a running request: the emulator is slowed down (its latency knob) so the cancel lands mid-run;
it comes from another StateStore (another instance), through the same state blob the worker uses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from shared.adapters.blob import BlobStateBackend, blob_service
from shared.bootstrap import build_services
from shared.domain.outcome import EXIT_CODES
from shared.service.processor import handle
from shared.service.state import StateStore
from shared.service.status import cancel_request, request_status
from shared.settings import load_settings
from tests.support.bundles import DEMO_TARGET, RecordingPublisher, audit_lines, blob_container
from tools.emulator import SECOND_LOCATION, SECOND_WORKSPACE

pytestmark = pytest.mark.integration
DSR = str(Path(sys.executable).with_name("dsr"))
TWO_WORKSPACES = [DEMO_TARGET, {**DEMO_TARGET, "workspace": SECOND_WORKSPACE, "location": SECOND_LOCATION}]


def slow_services(monkeypatch: pytest.MonkeyPatch, emulator: Any, publisher: RecordingPublisher) -> Any:
    emulator.configure(latency_ms=120)
    monkeypatch.setenv("DSR_CONCURRENCY", "1")
    monkeypatch.setenv("DSR_CHECKPOINT_SECONDS", "0.2")
    return build_services(load_settings(), publishers=[publisher])


def run_in_background(body: dict[str, Any], services: Any) -> tuple[threading.Thread, dict[str, Any]]:
    box: dict[str, Any] = {}

    def work() -> None:
        try:
            box["event"] = handle(json.dumps(body), services)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            box["error"] = exc

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    return thread, box


def wait_for(condition: Callable[[], bool], what: str, seconds: float = 60.0) -> None:
    end = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < end, f"never happened: {what}"
        time.sleep(0.05)


def other_instance(services: Any) -> Any:
    settings = services.settings
    return StateStore(BlobStateBackend(blob_service(settings, None), settings.state_container), lease_seconds=30)


def cancel_once_deleting(body: dict[str, Any], services: Any, emulator: Any) -> dict[str, Any]:
    """Run the delete in the background, cancel it from another instance once its first DELETE is sent, and
    return its outcome."""
    thread, box = run_in_background(body, services)
    store = other_instance(services)
    wait_for(lambda: any(r["method"] == "DELETE" for r in emulator.requests()), "a first DELETE")
    assert cancel_request(store, body["requestId"])[0] == 202
    thread.join(60)
    assert "error" not in box, box.get("error")
    return dict(box["event"])


def test_cancel_during_an_export_stops_it_and_leaves_no_bundle(monkeypatch, emulator, dsr_env, make_request, publisher):
    # GIVEN an export running slowly (120 ms per call, one at a time)
    services = slow_services(monkeypatch, emulator, publisher)
    body = make_request()
    thread, box = run_in_background(body, services)
    store = other_instance(services)
    wait_for(
        lambda: (found := store.read(body["requestId"])) is not None and found[0].get("checkpoint") is not None, "a checkpoint"
    )
    # AND the status shows its progress: the counts of its last checkpoint
    wait_for(lambda: any(w["counts"] for w in request_status(store, body["requestId"])[1]["workspaces"]), "counts in the status")
    running = request_status(store, body["requestId"])[1]
    assert running["status"] == "in_progress" and running["outcome"] is None
    assert running["workspaces"][0]["status"] == "in_progress"
    calls_before = len(emulator.requests())
    # WHEN another instance cancels it mid-run
    code, answer = cancel_request(store, body["requestId"])
    assert (code, answer["status"]) == (202, "cancelling")
    thread.join(60)
    # THEN the worker stopped at its next checkpoint with a cancelled outcome (exit code 4), long before the end
    assert "error" not in box, box.get("error")
    event = box["event"]
    assert event["type"] == "aml.dsr.export.cancelled"
    assert event["data"]["status"] == "cancelled"
    assert EXIT_CODES["cancelled"] == 4
    assert len(emulator.requests()) - calls_before < 40
    assert publisher.events == [event]
    # AND no manifest, no file, no page, no zip is left under the request's prefix
    assert list(blob_container(dsr_env).list_blobs(name_starts_with=body["requestId"] + "/")) == []
    # AND the state says cancelled, and a redelivery stays cancelled without a call
    assert request_status(store, body["requestId"])[1]["status"] == "cancelled"
    calls = len(emulator.requests())
    assert handle(json.dumps(body), services) == event
    assert len(emulator.requests()) == calls


def test_cancel_during_a_delete_stops_sending_deletes_and_audits_what_was_done(
    monkeypatch, emulator, dsr_env, make_request, publisher
):
    # GIVEN a delete of every deletable kind running slowly
    services = slow_services(monkeypatch, emulator, publisher)
    body = make_request(operation="delete")
    # WHEN it is cancelled once the DELETEs have begun
    event = cancel_once_deleting(body, services, emulator)
    # THEN it answers cancelled, having deleted some items and not touched the rest
    assert event["type"] == "aml.dsr.delete.cancelled"
    items = event["data"]["items"]
    done = [i for i in items if i["result"] in ("deleted", "absent")]
    untouched = [i for i in items if i["result"] == "planned"]
    assert done and untouched, [i["result"] for i in items]
    sent = [r for r in emulator.requests() if r["method"] == "DELETE"]
    assert len(sent) == len(done)
    # AND what it did delete was read back and proved gone
    assert all(i["verified"] for i in done)
    # AND the audit log holds each DELETE it sent and a CANCEL line with the tally
    lines = audit_lines(dsr_env, body["requestId"])
    assert sum(line.get("method") == "DELETE" for line in lines) == len(done)
    (cancel,) = [line for line in lines if line.get("method") == "CANCEL"]
    assert cancel["notAttempted"] == len(untouched)
    assert cancel["deleted"] + cancel["absent"] == len(done)
    assert cancel["verified"] == len(done)


def test_dsr_status_and_cancel_print_one_document_and_exit_by_answer(dsr_env, make_request):
    def dsr(*args: str) -> tuple[int, dict[str, Any]]:
        proc = subprocess.run([DSR, *args], capture_output=True, text=True, env=dict(os.environ), timeout=120, check=False)
        [line] = proc.stdout.splitlines()
        return proc.returncode, json.loads(line)

    # GIVEN a finished export, run through `dsr process`
    body = make_request(resourceKinds=["models"])
    done = subprocess.run([DSR, "process", "-"], input=json.dumps(body), capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-1500:]
    # THEN status finds it (0); an unknown id is not_found (1); an id that cannot be one is a usage error (2)
    code, answer = dsr("status", body["requestId"])
    assert (code, answer["status"]) == (0, "completed")
    assert dsr("status", "TCK-UNKNOWN-1") == (1, {"error": {"code": "not_found", "message": "no request with this requestId"}})
    assert dsr("status", "bad/id")[0] == 2
    # AND cancelling it is refused (5, conflict); cancelling an unknown id is accepted (0)
    code, answer = dsr("cancel", body["requestId"])
    assert (code, answer["error"]["code"]) == (5, "conflict")
    assert dsr("cancel", "TCK-UNKNOWN-2")[0] == 0
    # AND a cancelled request processed later exits 4
    later = make_request(requestId="TCK-UNKNOWN-2", resourceKinds=["models"])
    proc = subprocess.run(
        [DSR, "process", "-"], input=json.dumps(later), capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 4, proc.stderr[-1500:]
    assert json.loads(proc.stdout)["type"] == "aml.dsr.export.cancelled"
    # AND `dsr link` issues a fresh download URL of the finished export's zip, and none for the cancelled one
    code, link = dsr("link", body["requestId"])
    assert code == 0 and link["download"]["url"].startswith("http") and "sig=" in link["download"]["url"]
    assert dsr("link", "TCK-UNKNOWN-2")[0] == 1


def test_cancel_reaches_every_workspace_of_a_fanned_out_export(monkeypatch, emulator, dsr_env, make_request, publisher):
    # GIVEN an export of two workspaces, each a child with its own state, running slowly side by side
    services = slow_services(monkeypatch, emulator, publisher)
    body = make_request(targets=TWO_WORKSPACES)
    thread, box = run_in_background(body, services)
    store = other_instance(services)
    children = [f"{body['requestId']}:ws:{i}" for i in (0, 1)]
    wait_for(
        lambda: all((found := store.read(c)) is not None and found[0].get("checkpoint") for c in children),
        "both children's checkpoints",
    )
    # WHEN the request (not a child: the ticket knows only its id) is cancelled
    assert cancel_request(store, body["requestId"])[0] == 202
    thread.join(60)
    # THEN both children stopped, the one outcome is cancelled, and nothing of the bundle is left
    assert "error" not in box, box.get("error")
    event = box["event"]
    assert event["type"] == "aml.dsr.export.cancelled"
    assert event["data"]["dueBy"]
    assert publisher.events == [event]
    assert list(blob_container(dsr_env).list_blobs(name_starts_with=body["requestId"] + "/")) == []
    assert request_status(store, body["requestId"])[1]["status"] == "cancelled"


def test_cancel_of_a_fanned_out_delete_stops_its_workspaces_and_audits_them(
    monkeypatch, emulator, dsr_env, make_request, publisher
):
    # GIVEN a delete of two workspaces, each a child, running slowly side by side
    services = slow_services(monkeypatch, emulator, publisher)
    body = make_request(operation="delete", targets=TWO_WORKSPACES)
    # WHEN the request is cancelled once the DELETEs have begun
    event = cancel_once_deleting(body, services, emulator)
    # THEN the one outcome is cancelled, lists what was deleted (proved gone) and what was never sent
    assert event["type"] == "aml.dsr.delete.cancelled"
    items = event["data"]["items"]
    done = [i for i in items if i["result"] in ("deleted", "absent")]
    assert done and all(i["verified"] for i in done)
    assert any(i["result"] == "planned" for i in items)
    assert len([r for r in emulator.requests() if r["method"] == "DELETE"]) == len(done)
    # AND every workspace's part audited its CANCEL line
    cancels = [line for line in audit_lines(dsr_env, body["requestId"]) if line.get("method") == "CANCEL"]
    assert len(cancels) == 2
    assert sum(c["deleted"] + c["absent"] for c in cancels) == len(done)
