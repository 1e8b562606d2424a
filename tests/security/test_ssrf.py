"""The outbound boundary: the token goes only to the configured endpoint origins, whatever a response says.

An "attacker" server (tests/security/conftest.py) listens on another loopback port and records every request
that reaches it. The Azure ML endpoint is either a scripted loopback server or the workspace emulator behind a
tampering reverse proxy.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from shared.adapters.aml_http import AzureMLHttp
from shared.domain.catalog import load_catalog
from shared.domain.errors import BadResponseError, UntrustedUrlError
from shared.domain.urls import UrlPolicy
from shared.service.delete import ARM_TERMINAL, MMS_TERMINAL, Poller
from shared.service.listing import list_records
from shared.service.processor import handle
from tests.support.bundles import DEMO_TARGET, app_services
from tests.support.loopback import FakeCredential, LoopbackServer, Reply, Seen

CATALOG = load_catalog()


def policy_for(base: str) -> UrlPolicy:
    """The same shape of settings as the emulator's: every family on one loopback origin."""
    return UrlPolicy(
        {
            "arm": f"{base}/arm",
            "modelmanagement": f"{base}/mms/{{location}}",
            "experiments": f"{base}/exp/{{location}}",
            "aether": f"{base}/aether/{{location}}",
        }
    )


def client(base: str, credential: FakeCredential) -> AzureMLHttp:
    return AzureMLHttp(
        credential,
        scope="https://management.core.windows.net/.default",
        policy=policy_for(base),
        max_attempts=2,
        connect_timeout=2,
        read_timeout=5,
        sleep=lambda s: None,
    )


def hostile_links(attacker: LoopbackServer, legit: LoopbackServer) -> list[str]:
    return [
        f"{attacker.base_url}/steal",  # another port on the same loopback host
        f"http://{legit.netloc}@{attacker.netloc}/steal",  # the allowed origin as user info
        f"http://localhost:{attacker.base_url.rsplit(':', 1)[1]}/steal",  # another spelling of loopback
        f"{attacker.base_url}\\@{legit.netloc}/steal",  # backslash parser confusion
        f"{attacker.base_url}\t/steal",  # a tab urlsplit would drop
        f"//{attacker.netloc}/steal",  # scheme-relative
        f"https://{attacker.netloc}/steal",  # same host and port, other scheme
    ]


# -- nextLink ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("index", range(7))
def test_a_next_link_to_a_foreign_origin_is_refused_and_never_called(attacker, index):
    credential = FakeCredential()
    links: list[str] = []

    def route(seen: Seen, server: LoopbackServer) -> Reply:
        return Reply(200, {}, {"value": [{"id": "m1", "name": "m1"}], "nextLink": links[0]})

    with LoopbackServer(route) as legit:
        links.append(hostile_links(attacker, legit)[index])
        aml = client(legit.base_url, credential)
        kind = CATALOG.kinds["models"]
        first = f"{legit.base_url}/mms/westeurope/api/models?api-version=1"
        # WHEN a list is paged and its first page's nextLink points elsewhere
        records = list_records(aml, kind, first)
        assert next(records)["id"] == "m1"
        with pytest.raises(UntrustedUrlError):
            next(records)
        # THEN the legit endpoint got the token once, and the attacker got nothing
        assert [s.headers["authorization"] for s in legit.seen] == [f"Bearer {credential.token}"]
    assert attacker.seen == []


# -- long-running operations: Location, Azure-AsyncOperation, Operation-Location ------------------------------------


@pytest.mark.parametrize("header", ["Location", "Azure-AsyncOperation", "Operation-Location"])
def test_an_lro_status_url_to_a_foreign_origin_is_refused_and_never_called(attacker, header):
    credential = FakeCredential()

    def route(seen: Seen, server: LoopbackServer) -> Reply:
        return Reply(202, {header: f"{attacker.base_url}/operations/1", "Retry-After": "0"})

    with LoopbackServer(route) as legit:
        aml = client(legit.base_url, credential)
        response = aml.delete(f"{legit.base_url}/arm/subscriptions/s/workspaces/ws?api-version=1")
        assert response.status == 202
        poller = Poller(aml, deadline_seconds=0.3, sleep=lambda s: None)
        # WHEN the delete's status URL points elsewhere
        result = poller.follow(
            response, terminal=ARM_TERMINAL if header != "Operation-Location" else MMS_TERMINAL, status_field="status"
        )
        # THEN the operation's end is unknown (the read-back decides), and the attacker saw nothing
        assert result == "unknown"
        assert len(legit.seen) == 1
    assert attacker.seen == []


class CountingAml:
    def __init__(self, aml: AzureMLHttp) -> None:
        self.aml = aml
        self.gets = 0

    def get(self, url: str) -> Any:
        self.gets += 1
        return self.aml.get(url)


def test_an_untrusted_status_url_ends_the_poll_at_once(attacker):
    clock = iter(range(10_000))

    def route(seen: Seen, server: LoopbackServer) -> Reply:
        return Reply(202, {"Location": f"{attacker.base_url}/operations/1"})

    with LoopbackServer(route) as legit:
        aml = CountingAml(client(legit.base_url, FakeCredential()))
        response = aml.aml.delete(f"{legit.base_url}/arm/x")
        poller = Poller(aml, deadline_seconds=1800, sleep=lambda s: None, clock=lambda: float(next(clock)))
        poller.follow(response, terminal=ARM_TERMINAL, status_field="status")
    assert aml.gets == 1  # a refused URL stays refused: asking again for 30 minutes only delays the outcome


# -- redirects ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "status", "to_attacker"),
    [
        ("GET", 302, True),
        ("GET", 301, True),
        ("GET", 307, True),
        ("GET", 308, True),
        ("DELETE", 307, True),
        ("DELETE", 302, True),
        ("GET", 302, False),
    ],
)
def test_a_redirect_is_not_followed(attacker, method, status, to_attacker):
    credential = FakeCredential()

    def route(seen: Seen, server: LoopbackServer) -> Reply:
        target = f"{attacker.base_url}/steal" if to_attacker else f"{server.base_url}/arm/elsewhere"
        return Reply(status, {"Location": target})

    with LoopbackServer(route) as legit:
        aml = client(legit.base_url, credential)
        with pytest.raises(BadResponseError) as info:
            aml.request(method, f"{legit.base_url}/arm/x")
        assert info.value.code == "unexpected_redirect"
        assert len(legit.seen) == 1  # not even a same-origin redirect is followed
    assert attacker.seen == []


# -- our own calls ----------------------------------------------------------------------------------------------------


def test_a_url_off_the_list_is_refused_before_a_token_is_even_fetched(attacker):
    credential = FakeCredential()
    with LoopbackServer() as legit:
        aml = client(legit.base_url, credential)
        for url in hostile_links(attacker, legit):
            with pytest.raises(UntrustedUrlError):
                aml.get(url)
        assert legit.seen == []
    assert credential.calls == 0 and attacker.seen == []


def test_proxy_settings_in_the_environment_do_not_reroute_the_token(attacker, monkeypatch):
    # a proxy variable (set by a compromised image or a careless ops change) must not see the token
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.setenv(name, attacker.base_url)
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    credential = FakeCredential()
    with LoopbackServer(lambda seen, server: Reply(200, {}, {"ok": True})) as legit:
        aml = client(legit.base_url, credential)
        assert aml.get(f"{legit.base_url}/arm/x").body == {"ok": True}
        assert len(legit.seen) == 1
    assert attacker.seen == []


# -- end to end: a real export and delete with the emulator behind a tampering proxy ----------------------------------


def next_link_to(attacker: LoopbackServer) -> Any:
    """Tamper: the first page of the models list hands out a nextLink to the attacker."""

    def tamper(seen: Seen, reply: Reply) -> Reply:
        if seen.method == "GET" and "/models?" in seen.path and "skipToken" not in seen.path:
            body = json.loads(reply.body)
            if body.get("nextLink"):
                body["nextLink"] = f"{attacker.base_url}/steal/models"
                reply.body = json.dumps(body).encode()
        return reply

    return tamper


def status_urls_to(attacker: LoopbackServer) -> Any:
    """Tamper: every 202 to a DELETE names status URLs on the attacker."""

    def tamper(seen: Seen, reply: Reply) -> Reply:
        if seen.method == "DELETE" and reply.status == 202:
            for name in list(reply.headers):
                if name.lower() in ("location", "azure-asyncoperation", "operation-location"):
                    reply.headers[name] = f"{attacker.base_url}/steal/operation"
        return reply

    return tamper


@pytest.mark.integration
def test_an_export_refuses_a_foreign_next_link_and_reports_it(proxy, attacker, make_request, publisher):
    # WHEN an export runs and one list page hands out a nextLink to another origin
    proxy.tamper = next_link_to(attacker)
    event = handle(json.dumps(make_request(resourceKinds=["models", "computes"])), app_services(publisher))
    # THEN that kind fails with a coded error, the rest completes, and the attacker saw nothing
    assert proxy.seen, "the export did not go through the proxy: the test would prove nothing"
    codes = {(e["code"], e["kind"]) for e in event["data"]["errors"]}
    assert ("untrusted_url", "models") in codes
    assert event["data"]["status"] in ("partially_completed", "failed")
    assert attacker.seen == []


@pytest.mark.integration
def test_a_workspace_purge_refuses_foreign_status_urls(proxy, attacker, make_request, publisher, monkeypatch):
    # WHEN a workspace purge is accepted with status URLs (Location, Azure-AsyncOperation) on another origin
    monkeypatch.setenv("DSR_LRO_DEADLINE_SECONDS", "1")
    proxy.tamper = status_urls_to(attacker)
    body = make_request(
        operation="delete", resourceKinds=["models"], deleteWorkspace=True, confirmWorkspace=DEMO_TARGET["workspace"]
    )
    event = handle(json.dumps(body), app_services(publisher))
    # THEN the purge DELETE went out, its status URLs were never called, and the outcome rests on the
    # read-back of the workspace through the allowed origin
    assert any(s.method == "DELETE" and "/arm/" in s.path for s in proxy.seen)
    assert attacker.seen == []
    [purge] = event["data"]["workspaceDeletes"].values()
    if event["data"]["status"] == "completed":
        assert purge["verified"], "a purge whose status could not be followed is only reported done when read back"
    else:
        assert event["data"]["errors"]
