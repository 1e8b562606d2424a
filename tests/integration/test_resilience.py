"""Never lose or redo work: idempotent redelivery, leases, checkpoint/resume, continuation, SIGKILL."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from azure.core.exceptions import ResourceNotFoundError

from shared.bootstrap import build_services
from shared.domain.contract import EXPORT_KINDS
from shared.service.checkpoint import ExportCheckpoint
from shared.service.processor import handle, process
from shared.service.state import RequestBusy
from shared.settings import load_settings
from tests.support.bundles import RecordingPublisher, blob_container, read_bundle

pytestmark = pytest.mark.integration
DSR = str(Path(sys.executable).with_name("dsr"))


def _assert_exact_bundle(env: dict[str, str], request_id: str, emulator: Any) -> None:
    manifest, files = read_bundle(env, request_id)
    assert manifest["status"] == "completed"
    expected = emulator.expected_ids()
    by_kind = {name.rsplit("/", 1)[1].removesuffix(".jsonl"): [line["id"] for line in lines] for name, lines in files.items()}
    assert set(by_kind) == set(EXPORT_KINDS)
    for kind in EXPORT_KINDS:
        assert Counter(by_kind[kind]) == Counter(expected[kind]), kind
    for entry in manifest["files"]:
        assert entry["items"] == len(files[entry["name"]])


def test_a_completed_request_redelivered_makes_no_export_call(services, dsr_env, emulator, make_request, publisher):
    body = json.dumps(make_request())
    first = handle(body, services)
    emulator.clear_requests()
    again = handle(body, services)
    assert again["id"] == first["id"] and again == first
    assert emulator.requests() == []
    assert len(publisher.events) == 2


def test_a_request_id_reused_for_another_request_is_rejected(services, dsr_env, emulator, make_request):
    body = make_request(resourceKinds=["models"])
    handle(json.dumps(body), services)
    emulator.clear_requests()
    event = handle(json.dumps({**body, "resourceKinds": ["runs"]}), services)
    assert event["type"] == "aml.dsr.export.rejected"
    assert event["data"]["errors"][0]["code"] == "request_id_reused"
    assert emulator.requests() == []


def test_two_workers_racing_on_one_request_do_the_work_once(dsr_env, emulator, make_request):
    emulator.configure(latency_ms=20)
    body = json.dumps(make_request(resourceKinds=["runs", "artifacts"]))
    outcomes: list[Any] = []

    def worker() -> None:
        services = build_services(load_settings(), publishers=[RecordingPublisher()])
        try:
            outcomes.append(handle(body, services))
        except RequestBusy as busy:
            outcomes.append(busy)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    events = [o for o in outcomes if isinstance(o, dict)]
    busy = [o for o in outcomes if isinstance(o, RequestBusy)]
    assert len(events) >= 1 and all(e["data"]["status"] == "completed" for e in events)
    run_lists = [r for r in emulator.requests() if r["path"].endswith("/runs") and r["method"] == "GET"]
    # each experiment's run list was read once: the loser never started (busy), or came after the end (final)
    pages = {(r["path"], json.dumps(r["query"], sort_keys=True)) for r in run_lists}
    assert run_lists and len(run_lists) == len(pages)
    assert len(busy) + len(events) == 2


def test_continuation_across_invocations_with_a_tiny_budget(dsr_env, emulator, make_request, monkeypatch):
    emulator.configure(latency_ms=40)
    monkeypatch.setenv("DSR_CHECKPOINT_SECONDS", "0.2")
    monkeypatch.setenv("DSR_CONCURRENCY", "2")
    body = make_request()
    invocations = 0
    result = None
    while invocations < 300:  # a bound, not a timing: each invocation must make progress
        invocations += 1
        services = build_services(load_settings(), publishers=[RecordingPublisher()])
        result = process(json.dumps(body), services, budget_seconds=0.4)
        if not result.suspended:
            break
        assert result.continuation == invocations
    assert result is not None and result.event is not None
    assert invocations >= 3, "the budget never ran out: the test would prove nothing"
    assert result.event["data"]["status"] == "completed"
    _assert_exact_bundle(dsr_env, body["requestId"], emulator)


@pytest.mark.parametrize("faults", [{}, {"429": 0.03, "503": 0.03, "drop": 0.03}], ids=["clean", "with-sporadic-faults"])
def test_sigkill_at_random_instants_then_rerun_gives_an_exact_bundle(dsr_env, emulator, make_request, tmp_path, faults):
    # with faults: about one call in eleven answered 429 or 503 (Retry-After: 1) or cut, as a real service may
    emulator.configure(latency_ms=40, scale=2.0, faults=faults, retry_after=1)
    body = make_request()
    request_file = tmp_path / "request.json"
    request_file.write_text(json.dumps(body))
    env = {**os.environ, "DSR_CHECKPOINT_SECONDS": "0.3", "DSR_LEASE_SECONDS": "5", "DSR_CONCURRENCY": "4"}
    rng = random.Random(int(os.environ.get("DSR_TEST_SEED", "7")))
    state = blob_container(dsr_env, "DSR_STATE_CONTAINER")

    def checkpointed() -> bool:
        try:
            saved = json.loads(state.download_blob(f"{body['requestId']}.json").readall()).get("checkpoint")
        except ResourceNotFoundError:  # not written yet
            return False
        if saved is not None:  # typed, and holds positions, not the ids written
            ExportCheckpoint.model_validate(saved["export"])
        return saved is not None

    kills = 0
    for attempt in range(3):
        proc = subprocess.Popen([DSR, "process", str(request_file)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        if attempt == 0:
            # the first kill lands mid-export, after a checkpoint, whatever the machine's speed
            deadline = time.monotonic() + 60
            while not checkpointed() and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(rng.uniform(0.0, 0.3))
        else:
            time.sleep(rng.uniform(0.5, 2.5))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.communicate()
    assert kills >= 2, "the export finished before it could be killed: the test would prove nothing"
    final = subprocess.run([DSR, "process", str(request_file)], env=env, capture_output=True, text=True, timeout=300, check=False)
    assert final.returncode == 0, final.stderr[-2000:]
    event = json.loads(final.stdout)
    assert event["type"] == "aml.dsr.export.completed"
    _assert_exact_bundle(dsr_env, body["requestId"], emulator)
    state = json.loads(blob_container(dsr_env, "DSR_STATE_CONTAINER").download_blob(f"{body['requestId']}.json").readall())
    assert state["status"] == "completed" and state["attempts"] >= 2
    assert any(
        json.loads(line).get("resumed")
        for line in final.stderr.splitlines()
        if line.startswith("{") and "request accepted" in line
    ), "the last run did not resume a checkpoint"
