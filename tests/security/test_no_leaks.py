"""No token, credential or personal data in any log line of a full export and a full delete.

All log output is captured at DEBUG through ``configure_logging`` (the app's own handler, formatter and
redacting filter) while the real pipeline runs against the workspace emulator and Azurite. The requests
name the data subject (scope "subject" with her objectId and UPN), so the person's identifiers flow through
the app; the emulator's records carry both subjects' names, UPNs and objectIds, and datastores carry secrets.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from shared.logs import configure_logging
from shared.service.processor import handle
from tests.support.bundles import DEMO_TARGET
from tools.emulator import JANE, JOHN, TENANT_ID

pytestmark = pytest.mark.integration
LIBRARIES = ("azure", "urllib3", "msal", "requests")


@pytest.fixture
def captured_logs() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    level = root.level
    library_levels = {name: logging.getLogger(name).level for name in LIBRARIES}
    stream = io.StringIO()
    handler = configure_logging("DEBUG", stream=stream)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
        for name, lib_level in library_levels.items():
            logging.getLogger(name).setLevel(lib_level)


def forbidden_values(emulator: Any, env: dict[str, str]) -> dict[str, str]:
    """What must never appear in a log line, each with a label for the failure message."""
    values: dict[str, str] = {}
    for token in emulator.core._tokens:  # every access token the emulator issued
        values[token] = "an access token"
    values[env["IDENTITY_HEADER"]] = "the IDENTITY_HEADER secret"
    for secret in emulator.secret_values():
        values[secret] = "a datastore credential"
    for person in (JANE, JOHN):
        values[person.object_id] = f"{person.name}'s objectId"
        values[person.name] = f"{person.name}'s display name"
        values[person.puid] = f"{person.name}'s PUID"
        if person.upn:
            values[person.upn] = f"{person.name}'s UPN"
            values[person.upn.split("@")[0]] = f"{person.name}'s UPN user part"
    account_key = next(part.split("=", 1)[1] for part in env["DSR_STORAGE"].split(";") if part.startswith("AccountKey="))
    values[account_key] = "the storage account key"
    return values


def assert_no_leak(text: str, forbidden: dict[str, str]) -> None:
    for value, what in forbidden.items():
        assert value not in text, f"{what} appears in the output: ...{text[max(0, text.find(value) - 120) :][:240]}..."


def run_export_and_delete(services: Any, make_request: Any) -> list[dict[str, Any]]:
    subject = {"objectId": JANE.object_id, "tenantId": TENANT_ID, "upn": JANE.upn}
    export = handle(json.dumps(make_request(scope="subject", subject=subject, requestedBy="privacy-office")), services)
    assert export["data"]["status"] == "completed", export["data"]["errors"]
    full_export = handle(json.dumps(make_request()), services)
    assert full_export["data"]["status"] == "completed", full_export["data"]["errors"]
    delete = handle(json.dumps(make_request(operation="delete", scope="subject", subject=subject)), services)
    assert delete["data"]["status"] == "completed", delete["data"]["errors"]
    # a subject's request never purges a workspace (issue #17): the purge is a workspace-scoped request
    purge = handle(
        json.dumps(make_request(operation="delete", deleteWorkspace=True, confirmWorkspace=DEMO_TARGET["workspace"])),
        services,
    )
    assert purge["data"]["status"] == "completed", purge["data"]["errors"]
    return [export, full_export, delete, purge]


def test_no_secret_or_personal_data_in_any_log_line_of_an_export_and_a_delete(
    services, dsr_env, emulator, make_request, captured_logs
):
    # GIVEN all logging captured at DEBUG through the app's own handler
    # WHEN a subject export, a full export and a full delete with a workspace purge run
    events = run_export_and_delete(services, make_request)
    output = captured_logs.getvalue()
    # THEN there was plenty to look at, and none of it carries a secret or the subjects' personal data
    lines = output.splitlines()
    assert len(lines) > 100, "too few log lines: DEBUG did not reach the capture"
    assert all(isinstance(json.loads(line), dict) for line in lines)
    forbidden = forbidden_values(emulator, dsr_env)
    assert any(label == "an access token" for label in forbidden.values()), "no token was issued"
    assert_no_leak(output, forbidden)
    # AND the export's download link (a SAS: a secret that reads personal data) is in no log line, nor its signature
    links = [e["data"]["bundle"]["download"]["url"] for e in events if "download" in e["data"].get("bundle", {})]
    assert len(links) == 2, "the exports carry no download link: the SAS check would prove nothing"
    for link in links:
        assert_no_leak(output, {link: "a download link", link.split("?", 1)[1]: "a download link's SAS query"})
        assert_no_leak(output, {parse_qs(urlsplit(link).query)["sig"][0]: "a SAS signature"})
    # AND the outcome events carry no token or credential either
    secrets = {v: w for v, w in forbidden.items() if "token" in w or "secret" in w or "credential" in w or "key" in w}
    assert_no_leak(json.dumps(events), secrets)


def test_a_sas_url_logged_by_any_code_is_redacted_whole(captured_logs):
    # GIVEN a download link as the app issues it, logged by careless code in the message, an extra and an exception
    link = "https://acct.blob.core.windows.net/dsr-exports/R/R.zip?st=2026-11-29T10%3A00%3A00Z&se=2026-12-06&sp=r&sv=2025-01-05&sr=b&skoid=1&sig=c2lnbmF0dXJl%2B%3D"
    log = logging.getLogger("dsr.careless")
    log.warning("link %s", link, extra={"outcome": {"data": {"bundle": {"download": {"url": link}}}}})
    try:
        raise RuntimeError(f"could not fetch {link}")
    except RuntimeError:
        log.exception("failed")
    output = captured_logs.getvalue()
    # THEN neither the query nor the signature reached the output, and the blob's address still says what it was
    assert "c2lnbmF0dXJl" not in output and "skoid=1" not in output and "sp=r" not in output
    assert "R.zip?[REDACTED-SAS]" in output


def test_no_leak_even_with_the_libraries_logging_at_debug(services, dsr_env, emulator, make_request, captured_logs):
    # GIVEN an operator who turned every library logger up to DEBUG to chase a problem
    for name in LIBRARIES:
        logging.getLogger(name).setLevel(logging.DEBUG)
    # WHEN the same requests run
    run_export_and_delete(services, make_request)
    output = captured_logs.getvalue()
    # THEN the libraries did log (HTTP calls, the token request), yet the redacting filter kept it clean
    assert '"logger": "urllib3' in output or '"logger": "azure' in output
    assert_no_leak(output, forbidden_values(emulator, dsr_env))
