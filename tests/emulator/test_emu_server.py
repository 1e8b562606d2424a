"""Control API, CLI entry point, keep-alive and concurrency."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests

from tools.emulator import DEMO_RESOURCE_GROUP, DEMO_SUBSCRIPTION, DEMO_WORKSPACE, EmulatorServer, main

from ._client import API, AmlClient, fetch_token, ws_path

WS = ws_path()
REPO = Path(__file__).resolve().parents[2]


def test_settings_point_every_family_at_the_server(emu: EmulatorServer) -> None:
    settings = emu.settings()
    base = emu.base_url
    assert base.startswith("http://127.0.0.1:") and emu.port > 0
    assert settings["DSR_ARM_ENDPOINT"] == f"{base}/arm"
    assert settings["DSR_MODELMANAGEMENT_ENDPOINT"] == f"{base}/mms/{{location}}"
    assert settings["DSR_EXPERIMENTS_ENDPOINT"] == f"{base}/exp/{{location}}"
    assert settings["DSR_AETHER_ENDPOINT"] == f"{base}/aether/{{location}}"
    assert settings["IDENTITY_ENDPOINT"] == f"{base}/msi/token"
    assert len(settings["IDENTITY_HEADER"]) >= 16
    with EmulatorServer() as other:
        assert other.settings()["IDENTITY_HEADER"] != settings["IDENTITY_HEADER"]


def test_request_log_over_http_and_python(emu: EmulatorServer, aml: AmlClient) -> None:
    aml.get(aml.mms(f"api/{WS}/models/churn-model%3A1"), {**API, "foo": "bar"})
    log = requests.get(f"{emu.base_url}/_emulator/requests", timeout=5).json()
    entry = log[-1]
    assert entry["method"] == "GET" and entry["status"] == 200 and entry["authorized"] is True
    assert entry["path"].endswith("/models/churn-model%3A1")
    assert entry["query"] == {"api-version": "2019-11-01", "foo": "bar"}
    assert log == emu.requests()
    emu.clear_requests()
    assert emu.requests() == []
    assert requests.delete(f"{emu.base_url}/_emulator/requests", timeout=5).status_code == 200


def test_config_over_http_merges_knobs(emu: EmulatorServer, aml: AmlClient) -> None:
    response = requests.post(f"{emu.base_url}/_emulator/config", json={"page_size": 10}, timeout=5)
    assert response.status_code == 200 and response.json()["page_size"] == 10
    assert "identity_header" not in response.json()
    assert len(aml.get(aml.mms(f"api/{WS}/models"), API).json()["value"]) == 5
    assert emu.config.seed == 1  # untouched knobs keep their values
    bad = requests.post(f"{emu.base_url}/_emulator/config", json={"no_such_knob": 1}, timeout=5)
    assert bad.status_code == 400
    bad_faults = requests.post(f"{emu.base_url}/_emulator/config", json={"faults": "teapot=1"}, timeout=5)
    assert bad_faults.status_code == 400


def test_expected_and_reset_over_http(emu: EmulatorServer, aml: AmlClient) -> None:
    query = {"sub": DEMO_SUBSCRIPTION, "rg": DEMO_RESOURCE_GROUP, "ws": DEMO_WORKSPACE}
    expected = requests.get(f"{emu.base_url}/_emulator/expected", params=query, timeout=5).json()
    assert expected == {kind: sorted(ids) for kind, ids in emu.expected_ids().items()}
    aml.session.delete(aml.mms(f"api/{WS}/models/churn-model%3A1"), params=API)
    assert requests.post(f"{emu.base_url}/_emulator/reset", timeout=5).status_code == 200
    assert "churn-model:1" in emu.expected_ids()["models"]
    jane = requests.get(f"{emu.base_url}/_emulator/expected", params={**query, "subject": "jane"}, timeout=5).json()
    assert set(jane["runs"]) < set(expected["runs"])


def test_changing_seed_regenerates_data(emu: EmulatorServer) -> None:
    before = emu.expected_ids()
    emu.configure(seed=2)
    after = emu.expected_ids()
    assert after["runs"] != before["runs"] and after["models"] == before["models"]


def test_keep_alive_reuses_one_connection(emu: EmulatorServer) -> None:
    # GIVEN one HTTP/1.1 connection
    token = fetch_token(emu)
    connection = http.client.HTTPConnection("127.0.0.1", emu.port, timeout=5)
    path = urlsplit(AmlClient(emu, token=token).arm(f"{WS}/computes")).path
    sockets = set()
    # WHEN several requests (200s, a 204, a 404, a 401) go over it
    for method, target, auth in [
        ("GET", f"{path}?api-version=2019-11-01", True),
        ("DELETE", f"/mms/westeurope/api/{WS}/models/none:1?api-version=2019-11-01", True),
        ("GET", f"/arm/{ws_path('ws-missing')}?api-version=2019-11-01", True),
        ("GET", f"{path}?api-version=2019-11-01", False),
        ("GET", f"{path}?api-version=2019-11-01", True),
    ]:
        connection.request(method, target, headers={"Authorization": f"Bearer {token}"} if auth else {})
        response = connection.getresponse()
        response.read()
        # THEN the server keeps it open every time
        assert not response.will_close
        sockets.add(id(connection.sock))
    assert len(sockets) == 1
    connection.close()


def test_concurrent_clients(emu: EmulatorServer) -> None:
    token = fetch_token(emu)

    def walk(_: int) -> set[str]:
        client = AmlClient(emu, token=token)
        try:
            return {m["id"] for m in client.walk_next_link(client.mms(f"api/{WS}/models"), API)[0]}
        finally:
            client.close()

    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(walk, range(32)))
    assert all(r == emu.expected_ids()["models"] for r in results)


def test_cli_prints_exports_and_stops_on_sigterm() -> None:
    # GIVEN `python -m tools.emulator` in the foreground
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(
        [sys.executable, "-m", "tools.emulator", "--port", "0", "--page-size", "3", "--faults", "429=0"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # WHEN it has started
        assert process.stdout is not None
        lines = [process.stdout.readline().strip() for _ in range(6)]
        # THEN it printed shell export lines for every setting
        exports = dict(line.removeprefix("export ").split("=", 1) for line in lines)
        assert set(exports) == {
            "DSR_ARM_ENDPOINT",
            "DSR_MODELMANAGEMENT_ENDPOINT",
            "DSR_EXPERIMENTS_ENDPOINT",
            "DSR_AETHER_ENDPOINT",
            "IDENTITY_ENDPOINT",
            "IDENTITY_HEADER",
        }
        assert exports["DSR_MODELMANAGEMENT_ENDPOINT"].strip("'").endswith("/mms/{location}")
        # AND it serves the token protocol
        identity = requests.get(
            exports["IDENTITY_ENDPOINT"],
            params={"api-version": "2019-08-01", "resource": "https://management.core.windows.net/"},
            headers={"X-IDENTITY-HEADER": exports["IDENTITY_HEADER"].strip("'")},
            timeout=5,
        )
        assert identity.status_code == 200
        # AND SIGTERM stops it cleanly
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


def test_cli_rejects_bad_flags(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--faults", "teapot=1"])
    assert exited.value.code == 2
    assert main(["--page-size", "0"]) == 2
    assert "page_size" in capsys.readouterr().err


def test_unknown_paths_are_json_404(emu: EmulatorServer) -> None:
    response = requests.get(f"{emu.base_url}/nothing/here", timeout=5)
    assert response.status_code == 404 and json.loads(response.text)["error"]["code"] == "NotFound"


def test_main_module_can_be_imported_without_running(emu: EmulatorServer) -> None:
    import importlib

    module = importlib.import_module("tools.emulator.__main__")
    assert module.main is main
    token = fetch_token(emu)
    assert token in emu.issued_tokens()
