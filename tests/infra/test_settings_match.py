"""The app settings that infra/main.bicep deploys match the settings the code reads.

The code's set is derived from the code itself: every ``DSR_*`` (and host-connection) name in a string literal
of ``shared/`` and ``handlers/``. The Bicep's set is the block between ``// app-settings:begin`` and
``// app-settings:end`` in ``infra/main.bicep``. Pure: no network, no Bicep compiler, no checkov.

When this fails after you added a setting to the code: add it to the ``appSettings`` block of
``infra/main.bicep`` (with a parameter if a deployment may want another value), or, if a deployment must not
set it, to ``LOCAL_ONLY`` below with the reason.
"""

from __future__ import annotations

import ast
import fnmatch
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MAIN_BICEP = ROOT / "infra" / "main.bicep"
CODE_DIRS = ("shared", "handlers")

# A setting name inside a string literal: ours (DSR_*) and the host connections the code names.
SETTING_NAME = re.compile(
    r"(?<![A-Za-z0-9_])(?:DSR_[A-Z0-9]+(?:_[A-Z0-9]+)*(?:__[A-Za-z]+)?"
    r"|ServiceBusConnection__[A-Za-z]+|AzureWebJobs[A-Za-z0-9_]*|APPLICATIONINSIGHTS_[A-Z_]+|OTEL_[A-Z0-9_]+)"
    r"(?![A-Za-z0-9_])"
)

# Set by the deployment for the Functions host (or its telemetry), whether or not our code reads them.
HOST_ONLY: Mapping[str, str] = {
    "AzureWebJobsStorage__*": "the host's own storage (keys, timer state, leases), read by the Functions host",
    "APPLICATIONINSIGHTS_*": "telemetry connection and Entra ID auth, read by the host and the OpenTelemetry exporter",
    "FUNCTIONS_*": "host runtime settings (on Flex Consumption the runtime is functionAppConfig, not a setting)",
}

# Read by the code, never deployed.
LOCAL_ONLY: Mapping[str, str] = {
    "DSR_STORAGE": "a connection string (Azurite); Azure uses the identity and DSR_STORAGE__blobServiceUri, shared keys are off",
    "DSR_MANAGED_IDENTITY_CLIENT_ID": "only with a user-assigned identity; the template uses the system-assigned one",
    "IDENTITY_ENDPOINT": "set by the platform's managed identity (locally by the emulator)",
    "IDENTITY_HEADER": "set by the platform's managed identity (locally by the emulator)",
    "OTEL_EXPORTER_OTLP_ENDPOINT": "an OTLP collector of the operator's choosing (locally, or beside the app); Azure uses "
    "Application Insights (APPLICATIONINSIGHTS_CONNECTION_STRING)",
}

# Deployed before the code on this branch reads them (contract section 6, built on other branches). Harmless once
# the code reads them too; delete an entry then.
AHEAD_OF_CODE: Mapping[str, str] = {
    "DSR_DOWNLOAD_HOURS": "contract 6.4, download links (user delegation SAS)",
    "DSR_ARM_ML_API_VERSION": "contract 6.1, api-version of the v2 (ARM) kinds",
}


def _matches(name: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


def settings_in_source(source: str) -> set[str]:
    """Every setting name in a string literal of one Python module (comments do not count)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            names.update(SETTING_NAME.findall(node.value))
    return names


def settings_read_by_code(root: Path = ROOT, dirs: Iterable[str] = CODE_DIRS) -> set[str]:
    names: set[str] = set()
    for directory in dirs:
        for path in sorted((root / directory).rglob("*.py")):
            names |= settings_in_source(path.read_text(encoding="utf-8"))
    return names


_STRING = re.compile(r"'(?:[^'\\\n]|\\.)*'")
_KEY = re.compile(r"^\s*'?([A-Za-z_][A-Za-z0-9_]*)'?\s*:")


def bicep_app_settings(text: str) -> set[str]:
    """The top-level keys of ``var appSettings = {...}`` between the app-settings markers of a Bicep file."""
    try:
        block = text.split("// app-settings:begin", 1)[1].split("// app-settings:end", 1)[0]
    except IndexError:
        raise AssertionError("infra/main.bicep lost its '// app-settings:begin' / '// app-settings:end' markers") from None
    names: set[str] = set()
    depth = 0
    started = False
    for raw in block.splitlines():
        line = _STRING.sub("''", raw).split("//", 1)[0]  # braces and comments outside string literals only
        if not started:
            if re.match(r"^\s*var\s+appSettings\s*=\s*\{\s*$", line):
                started, depth = True, 1
            continue
        if depth == 1 and line.strip() and (match := _KEY.match(raw)):
            names.add(match.group(1))
        depth += line.count("{") - line.count("}")
        if depth == 0:
            break
    if not started:
        raise AssertionError("no 'var appSettings = {' between the app-settings markers")
    return names


@dataclass(frozen=True)
class Drift:
    missing_from_bicep: frozenset[str]  # the code reads it, the deployment does not set it
    not_read_by_code: frozenset[str]  # the deployment sets it, nothing reads it
    local_only_deployed: frozenset[str]  # the deployment sets what must stay local

    @property
    def ok(self) -> bool:
        return not (self.missing_from_bicep or self.not_read_by_code or self.local_only_deployed)


def compare(
    code: set[str],
    bicep: set[str],
    *,
    host_only: Iterable[str] = HOST_ONLY,
    local_only: Iterable[str] = LOCAL_ONLY,
    ahead_of_code: Iterable[str] = AHEAD_OF_CODE,
) -> Drift:
    host_only, local_only, ahead_of_code = list(host_only), list(local_only), list(ahead_of_code)
    missing = {n for n in code - bicep if not _matches(n, host_only) and not _matches(n, local_only)}
    unread = {n for n in bicep - code if not _matches(n, host_only) and n not in ahead_of_code}
    return Drift(frozenset(missing), frozenset(unread), frozenset(n for n in bicep if _matches(n, local_only)))


# --- the real repository -------------------------------------------------------------------------------------


def test_the_parsers_find_the_settings_at_all():
    code = settings_read_by_code()
    bicep = bicep_app_settings(MAIN_BICEP.read_text(encoding="utf-8"))
    assert {"DSR_REQUEST_QUEUE", "DSR_STORAGE__blobServiceUri", "ServiceBusConnection__fullyQualifiedNamespace"} <= code
    assert {"DSR_AUTH", "DSR_LEASE_SECONDS", "AzureWebJobsStorage__accountName"} <= bicep
    assert len(bicep) >= 20


def test_the_deployment_sets_every_setting_the_code_reads_and_nothing_else():
    drift = compare(settings_read_by_code(), bicep_app_settings(MAIN_BICEP.read_text(encoding="utf-8")))
    assert not drift.missing_from_bicep, (
        f"read by the code but not set in infra/main.bicep (app-settings block): {sorted(drift.missing_from_bicep)}"
    )
    assert not drift.not_read_by_code, (
        f"set in infra/main.bicep but read by no code in {CODE_DIRS}: {sorted(drift.not_read_by_code)}"
    )
    assert not drift.local_only_deployed, f"local-only settings deployed: {sorted(drift.local_only_deployed)}"


def test_the_queue_lock_and_the_delivery_count_come_from_the_same_parameters_as_the_app_settings():
    text = MAIN_BICEP.read_text(encoding="utf-8")
    assert "requestLockDuration: 'PT${leaseSeconds}S'" in text
    assert "DSR_LEASE_SECONDS: string(leaseSeconds)" in text
    assert re.search(r"^\s*maxDeliveryCount: maxDeliveryCount$", text, re.MULTILINE)
    assert "DSR_MAX_DELIVERY_COUNT: string(maxDeliveryCount)" in text


def test_every_allow_list_entry_says_why():
    for allow_list in (HOST_ONLY, LOCAL_ONLY, AHEAD_OF_CODE):
        assert all(reason.strip() for reason in allow_list.values())


# --- the comparison itself, on synthetic input: it can fail -------------------------------------------------


def test_a_new_setting_in_the_code_that_the_deployment_lacks_is_reported():
    drift = compare({"DSR_REQUEST_QUEUE", "DSR_WORKSPACE_CONCURRENCY"}, {"DSR_REQUEST_QUEUE"})
    assert not drift.ok
    assert drift.missing_from_bicep == {"DSR_WORKSPACE_CONCURRENCY"}


def test_a_deployed_setting_that_no_code_reads_is_reported():
    drift = compare({"DSR_REQUEST_QUEUE"}, {"DSR_REQUEST_QUEUE", "DSR_REQUEST_QUEUE_NAME"})
    assert drift.not_read_by_code == {"DSR_REQUEST_QUEUE_NAME"}


def test_host_local_and_pending_settings_follow_their_allow_lists():
    code = {"DSR_STORAGE", "DSR_MANAGED_IDENTITY_CLIENT_ID", "APPLICATIONINSIGHTS_CONNECTION_STRING"}
    bicep = {"AzureWebJobsStorage__accountName", "APPLICATIONINSIGHTS_AUTHENTICATION_STRING", "DSR_DOWNLOAD_HOURS"}
    assert compare(code, bicep).ok
    assert compare(code, bicep | {"DSR_STORAGE"}).local_only_deployed == {"DSR_STORAGE"}
    assert compare(code, bicep, ahead_of_code=()).not_read_by_code == {"DSR_DOWNLOAD_HOURS"}


def test_the_source_scanner_reads_string_literals_only():
    source = '''
"""Module docstring naming DSR_DOCUMENTED."""
import os
# DSR_IN_A_COMMENT is not a setting
QUEUE = "%DSR_REQUEST_QUEUE%"
value = os.environ.get("DSR_NEW_SETTING", "default")
uri = env.get("DSR_STORAGE__blobServiceUri")
ns = f"{x} ServiceBusConnection__fullyQualifiedNamespace"
other = "XDSR_PREFIXED and DSR_lowercase"
'''
    assert settings_in_source(source) == {
        "DSR_DOCUMENTED",
        "DSR_REQUEST_QUEUE",
        "DSR_NEW_SETTING",
        "DSR_STORAGE__blobServiceUri",
        "ServiceBusConnection__fullyQualifiedNamespace",
    }


def test_the_bicep_parser_reads_only_the_top_level_keys_of_the_block():
    text = """
var appSettings = { NOT_THIS: 1 }
// app-settings:begin
var appSettings = {
  DSR_A: 'x: y'
  'DSR_B': string(leaseSeconds) // DSR_C: in a comment
  DSR_D: !empty(foo) ? foo : {
    NESTED_KEY: 'no'
  }
  AzureWebJobsStorage__accountName: storage.outputs.name
}
var afterwards = {
  DSR_E: 'no'
}
// app-settings:end
"""
    assert bicep_app_settings(text) == {"DSR_A", "DSR_B", "DSR_D", "AzureWebJobsStorage__accountName"}


def test_a_bicep_file_without_the_markers_fails_loudly():
    try:
        bicep_app_settings("var appSettings = {\n  DSR_A: 'x'\n}\n")
    except AssertionError as exc:
        assert "markers" in str(exc)
    else:
        raise AssertionError("expected a failure")
