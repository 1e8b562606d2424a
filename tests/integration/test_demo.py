"""`make demo` as a first-time user runs it: three requests, a summary, the bundle on disk, nothing left running."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from shared.domain.contract import EXPORT_KINDS

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def test_the_demo_runs_export_dry_run_and_delete_and_cleans_up(tmp_path):
    env = {**os.environ, "DSR_DEMO_OUTPUT": str(tmp_path / "demo-output")}
    proc = subprocess.run(
        [sys.executable, "-m", "tools.demo"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    out = proc.stdout
    assert out.count("aml.dsr.export.completed") >= 1 and out.count("aml.dsr.delete.completed") >= 2
    assert re.search(r"v1 models\s+would delete\s+\d+", out)
    assert re.search(r"v2 modelVersions\s+would delete\s+\d+", out) and re.search(r"v2 jobs\s+planned\s+\d+", out)
    assert re.search(r"verified gone\s+\d+", out)
    manifest = json.loads((tmp_path / "demo-output" / "DEMO-EXPORT-1" / "manifest.json").read_text())
    assert manifest["status"] == "completed" and len(manifest["files"]) == len(EXPORT_KINDS)  # v1 and v2
    events = (tmp_path / "demo-output" / "outcome-events.jsonl").read_text().splitlines()
    assert [json.loads(e)["data"]["status"] for e in events] == ["completed"] * 3
    # everything it started is stopped
    for port in re.findall(r"http://127\.0\.0\.1:(\d+)", out):
        with socket.socket() as sock, pytest.raises(OSError):
            sock.settimeout(1)
            sock.connect(("127.0.0.1", int(port)))


def test_an_interrupted_demo_stops_what_it_started(tmp_path):
    import signal

    env = {**os.environ, "DSR_DEMO_OUTPUT": str(tmp_path / "demo-output"), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tools.demo"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    seen = ""
    while "emulator" not in seen or "identity" not in seen:
        line = proc.stdout.readline()
        assert line, "the demo ended before it started its servers"
        seen += line
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    assert "interrupted" in err
    for port in re.findall(r"http://127\.0\.0\.1:(\d+)", seen):
        with socket.socket() as sock, pytest.raises(OSError):
            sock.settimeout(1)
            sock.connect(("127.0.0.1", int(port)))
