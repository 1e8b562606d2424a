"""The `dsr` command as an operator (and the acceptance checks) run it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.bundles import DEMO_TARGET

pytestmark = pytest.mark.integration
DSR = str(Path(sys.executable).with_name("dsr"))


def run(request: dict, env_extra: dict | None = None) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run(
        [DSR, "process", "-"],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        env={**os.environ, **(env_extra or {})},
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(
    ("targets", "exit_code", "status"),
    [
        ([DEMO_TARGET], 0, "completed"),
        ([DEMO_TARGET, {**DEMO_TARGET, "workspace": "ws-nowhere"}], 3, "partially_completed"),
        ([{**DEMO_TARGET, "location": "eastus"}], 1, "failed"),
    ],
)
def test_process_prints_one_event_and_exits_by_status(dsr_env, make_request, targets, exit_code, status):
    body = make_request(targets=targets, resourceKinds=["models"])
    proc = run(body)
    assert proc.returncode == exit_code, proc.stderr[-1500:]
    [line] = proc.stdout.splitlines()
    event = json.loads(line)
    assert event["data"]["status"] == status and event["type"] == f"aml.dsr.export.{status}"
    logs = [json.loads(entry) for entry in proc.stderr.splitlines()]
    assert logs and all(entry["requestId"] == body["requestId"] for entry in logs)
    assert "Traceback" not in proc.stderr


def test_a_missing_setting_is_named_at_start(dsr_env, make_request):
    proc = run(make_request(), {"DSR_STORAGE": "", "DSR_ARM_ENDPOINT": "http://management.example.com"})
    assert proc.returncode == 1
    assert "DSR_ARM_ENDPOINT" in proc.stderr and "https" in proc.stderr
    assert proc.stdout == ""


def test_emulator_command_prints_the_settings_that_point_at_it():
    proc = subprocess.Popen([DSR, "emulator", "--port", "0"], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline().strip() for _ in range(6)]
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    names = [line.split("=", 1)[0].removeprefix("export ") for line in lines]
    assert names == [
        "DSR_ARM_ENDPOINT",
        "DSR_MODELMANAGEMENT_ENDPOINT",
        "DSR_EXPERIMENTS_ENDPOINT",
        "DSR_AETHER_ENDPOINT",
        "IDENTITY_ENDPOINT",
        "IDENTITY_HEADER",
    ]
    assert "{location}" in lines[1]


def test_an_unreachable_outcome_queue_does_not_hide_the_outcome(dsr_env, make_request):
    # a namespace that cannot be reached (no network here): the publish fails, the outcome is still printed
    body = make_request(resourceKinds=["models"])
    proc = run(
        body,
        {
            "ServiceBusConnection__fullyQualifiedNamespace": "127.0.0.1",
            "DSR_EVENTGRID_TOPIC_ENDPOINT": "https://127.0.0.1:9/api/events",
        },
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout)["data"]["status"] == "completed"
    assert "could not be published" in proc.stderr
