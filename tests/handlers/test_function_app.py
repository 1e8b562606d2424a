"""The app as the Functions worker sees it: indexing, cheap import, and the deployment configuration files."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from tests.handlers.conftest import indexed as _functions

ROOT = Path(__file__).resolve().parents[2]


def test_the_indexed_app_has_one_service_bus_trigger_on_the_request_queue() -> None:
    # GIVEN the app, indexed the way the worker does it
    functions = _functions()
    # THEN it holds the request trigger, the watchdog timer and the two HTTP triggers of a ticket
    assert sorted(functions) == ["dsr_cancel", "dsr_request", "dsr_status", "dsr_watchdog"]
    function = functions["dsr_request"]
    # AND its only binding is a single-message, auto-completing Service Bus queue trigger on
    # %DSR_REQUEST_QUEUE% with the identity-based connection ServiceBusConnection
    bindings = json.loads(function.get_function_json())["bindings"]
    assert bindings == [
        {
            "direction": "IN",
            "type": "serviceBusTrigger",
            "name": "msg",
            "connection": "ServiceBusConnection",
            "queueName": "%DSR_REQUEST_QUEUE%",
            "cardinality": "ONE",
            "autoCompleteMessages": True,
        }
    ]
    (raw,) = function.get_bindings_dict()["bindings"]
    assert str(raw["cardinality"].value) == "one"
    assert function.get_trigger().get_binding_name() == "serviceBusTrigger"
    # AND the user function takes the message under the binding's name
    user = function.get_user_function()
    assert list(__import__("inspect").signature(user).parameters) == ["msg"]


def test_the_watchdog_is_a_timer_that_does_not_run_at_startup() -> None:
    (binding,) = json.loads(_functions()["dsr_watchdog"].get_function_json())["bindings"]
    assert binding["type"] == "timerTrigger"
    assert binding["runOnStartup"] is False
    assert binding["useMonitor"] is True
    assert len(binding["schedule"].split()) == 6  # NCRONTAB with seconds


def test_importing_the_app_loads_no_sdk_and_no_service_layer() -> None:
    # GIVEN a fresh interpreter (the worker indexing the app)
    probe = (
        "import sys, function_app; "
        "print('\\n'.join(sorted(m for m in sys.modules if m == 'requests' or m.startswith("
        "('requests.', 'azure.identity', 'azure.storage', 'azure.servicebus', 'azure.core', 'pydantic', 'shared')))))"
    )
    # WHEN it imports function_app
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True)
    # THEN no Azure SDK client library, no requests and not even the service layer was imported
    assert result.stdout.split() == []


def test_local_settings_sample_names_every_setting_the_app_reads_and_no_secret(tmp_path: Path) -> None:
    # GIVEN every setting name shared/settings.py reads, and the sample file
    read = set(re.findall(r'"((?:DSR_|ServiceBusConnection__)[A-Za-z_]+)"', (ROOT / "shared/settings.py").read_text()))
    sample_text = (ROOT / "local.settings.sample.json").read_text()
    values = json.loads(sample_text)["Values"]
    # THEN the sample names each of them, plus what the Functions host needs
    assert read, "no setting names found: the pattern no longer matches shared/settings.py"
    assert sorted(read - set(values)) == []
    assert values["FUNCTIONS_WORKER_RUNTIME"] == "python"
    assert "AzureWebJobsStorage" in values
    # AND it carries no secret (identity-based connections only; Azurite's shortcut is not a key)
    assert not re.search(r"(?i)AccountKey=|SharedAccessKey|SharedAccessSignature|sig=|password|secret", sample_text)
    # AND the app starts with it as local.settings.json
    from shared.settings import load_settings, require_storage

    (tmp_path / "local.settings.json").write_text(sample_text)
    settings = load_settings(environ={}, directory=tmp_path)
    require_storage(settings)
    assert (settings.request_queue, settings.outcome_queue, settings.max_delivery_count) == ("dsr-requests", "dsr-outcomes", 10)


def _timespan(text: str) -> timedelta:
    hours, minutes, seconds = text.split(":")
    return timedelta(hours=int(hours), minutes=int(minutes), seconds=float(seconds))


def test_host_json_settles_single_messages_and_outlasts_the_slowest_step() -> None:
    # GIVEN host.json
    host = json.loads((ROOT / "host.json").read_text())
    service_bus = host["extensions"]["serviceBus"]
    # THEN it is a v2 host on the v4 extension bundle
    assert host["version"] == "2.0"
    assert host["extensionBundle"] == {"id": "Microsoft.Azure.Functions.ExtensionBundle", "version": "[4.*, 5.0.0)"}
    # AND messages are not prefetched (a prefetched message's lock runs out unseen) and are auto-completed
    assert service_bus["prefetchCount"] == 0
    assert service_bus["autoCompleteMessages"] is True
    assert 1 <= service_bus["maxConcurrentCalls"] <= 16
    # AND the lock is renewed for longer than the function may run, which is longer than the slowest step
    # (a workspace delete's long-running operation, DSR_LRO_DEADLINE_SECONDS) after a spent time budget
    from shared.settings import Settings

    defaults = Settings()
    timeout = _timespan(host["functionTimeout"])
    renewal = _timespan(service_bus["maxAutoLockRenewalDuration"])
    assert timedelta(seconds=defaults.time_budget_seconds + defaults.lro_deadline_seconds) < timeout < renewal
    assert "logLevel" in host["logging"]


@pytest.mark.parametrize("path", ["tests/", "tools/", ".venv/", "node_modules/", "local.settings.json", ".azurite/"])
def test_funcignore_keeps_developer_files_out_of_the_package(path: str) -> None:
    text = (ROOT / ".funcignore").read_text()
    lines = {line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")}
    assert path in lines


def test_funcignore_keeps_the_app_in_the_package() -> None:
    lines = {line.strip().rstrip("/") for line in (ROOT / ".funcignore").read_text().splitlines()}
    assert not lines & {"function_app.py", "host.json", "handlers", "shared", "requirements.txt", "*.py", "*.json"}


def test_requirements_pin_what_the_app_imports() -> None:
    # GIVEN requirements.txt (what Azure installs)
    pins = dict(
        line.split("==")
        for line in (ROOT / "requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    )
    # THEN the Functions library and the Service Bus client are pinned exactly
    assert {"azure-functions", "azure-servicebus", "azure-identity"} <= set(pins)
    # (exact versions; a pre-release only where the package has no other: azure-monitor-opentelemetry-exporter)
    assert all(re.fullmatch(r"\d+(\.\d+)+((a|b|rc)\d+)?", v.strip()) for v in pins.values())
