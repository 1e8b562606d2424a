"""Every hostile or malformed message, through the real ``dsr process`` command, is rejected before any I/O.

Each case of tests/fixtures/hostile/cases.json runs in its own ``dsr process FILE`` subprocess with the settings
pointing at the emulator and Azurite. The base message targets the emulator's demo workspace, so a message that
slipped through the input boundary would show up as calls in the emulator's request log.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.hostile import BASE, CASES, HostileCase

pytestmark = pytest.mark.integration

DSR = Path(sys.executable).with_name("dsr")
REJECTED_TYPE = re.compile(r"^aml\.dsr\.(export|delete|request)\.rejected$")
MAX_EVENT_BYTES = 8 * 1024  # a rejection stays small whatever came in (one Service Bus message, one log line)


def _run(args: list[str], cwd: Path, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([str(DSR), "process", *args], cwd=cwd, input=stdin, capture_output=True, timeout=60, check=False)


def _containers(azurite: Any) -> set[str]:
    from azure.storage.blob import BlobServiceClient

    return {c.name for c in BlobServiceClient.from_connection_string(azurite.connection_string).list_containers()}


def _assert_rejected_without_io(
    result: subprocess.CompletedProcess[bytes], case: HostileCase, emulator: Any, azurite: Any, env: dict[str, str]
) -> dict[str, Any]:
    stdout, stderr = result.stdout.decode("utf-8"), result.stderr.decode("utf-8", "replace")
    # no traceback, and stderr holds only JSON log lines
    assert "Traceback" not in stderr, stderr
    for line in filter(None, stderr.splitlines()):
        assert isinstance(json.loads(line), dict), line
    # exit 2 and exactly one rejected outcome event on stdout
    assert result.returncode == 2, (result.returncode, stdout[:500], stderr[:500])
    lines = stdout.splitlines()
    assert len(lines) == 1, stdout[:500]
    assert len(result.stdout) <= MAX_EVENT_BYTES
    event = json.loads(lines[0])
    assert REJECTED_TYPE.match(event["type"]), event["type"]
    assert event["data"]["status"] == "rejected"
    errors = event["data"]["errors"]
    assert errors and all(re.fullmatch(r"[a-z][a-z_]*", e["code"]) and e["message"] for e in errors)
    assert (case.code, case.field) in {(e["code"], e["field"]) for e in errors}, errors
    # no outbound call (not even for a token) and no storage touched
    assert emulator.requests() == []
    created = _containers(azurite) & {env["DSR_EXPORT_CONTAINER"], env["DSR_STATE_CONTAINER"], env["DSR_AUDIT_CONTAINER"]}
    assert created == set()
    return event


def test_the_corpus_is_big_and_its_base_message_is_valid() -> None:
    from shared.domain.contract import parse_request

    assert len(CASES) >= 30
    parse_request(json.dumps(BASE))  # so each case is rejected for its own mutation, not for the base


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_message_is_rejected_by_the_cli_before_any_io(case, dsr_env, emulator, azurite, tmp_path):
    # GIVEN a hostile message in a file and settings pointing at the emulator and Azurite
    message = tmp_path / "message.json"
    message.write_bytes(case.body)
    # WHEN `dsr process FILE` runs it
    result = _run([str(message)], tmp_path)
    # THEN it exits 2 with one coded rejection, no traceback, no call and no blob
    _assert_rejected_without_io(result, case, emulator, azurite, dsr_env)


@pytest.mark.parametrize("name", ["deep-nesting-32k", "lone-surrogate", "cloudevent-hostile-data", "latin-1"])
def test_hostile_message_on_stdin_is_rejected_the_same_way(name, dsr_env, emulator, azurite, tmp_path):
    [case] = [c for c in CASES if c.name == name]
    result = _run(["-"], tmp_path, stdin=case.body)
    _assert_rejected_without_io(result, case, emulator, azurite, dsr_env)


def test_the_valid_base_message_does_reach_the_emulator(dsr_env, emulator, azurite, tmp_path):
    # the control: the same harness sees calls and a bundle when a message is valid, so the
    # "no call, no blob" assertions above cannot pass for a reason of the harness's own
    message = tmp_path / "message.json"
    message.write_text(json.dumps(BASE), encoding="utf-8")
    result = _run([str(message)], tmp_path)
    assert result.returncode == 0, result.stdout[:500]
    assert json.loads(result.stdout)["type"] == "aml.dsr.export.completed"
    assert emulator.requests()
    assert dsr_env["DSR_EXPORT_CONTAINER"] in _containers(azurite)
