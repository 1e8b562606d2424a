"""Managed identity (App Service protocol) and bearer-token checks on every AML family."""

from __future__ import annotations

import json
import time

import pytest
import requests
from azure.core.exceptions import ClientAuthenticationError
from azure.identity import ManagedIdentityCredential

from tools.emulator import MANAGEMENT_RESOURCE, SYSTEM_ASSIGNED_CLIENT_ID, EmulatorServer

from ._client import API, AmlClient, ws_path

SCOPE = "https://management.core.windows.net/.default"
OTHER_ENV = (
    "MSI_ENDPOINT",
    "MSI_SECRET",
    "IDENTITY_SERVER_THUMBPRINT",
    "IMDS_ENDPOINT",
    "AZURE_CLIENT_ID",
    "AZURE_TENANT_ID",
    "AZURE_FEDERATED_TOKEN_FILE",
    "AZURE_POD_IDENTITY_AUTHORITY_HOST",
)


@pytest.fixture
def msi_env(emu: EmulatorServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """Only IDENTITY_ENDPOINT and IDENTITY_HEADER, as App Service / Functions sets them."""
    for name in OTHER_ENV:
        monkeypatch.delenv(name, raising=False)
    settings = emu.settings()
    monkeypatch.setenv("IDENTITY_ENDPOINT", settings["IDENTITY_ENDPOINT"])
    monkeypatch.setenv("IDENTITY_HEADER", settings["IDENTITY_HEADER"])


def _workspace_get(emu: EmulatorServer, token: str) -> requests.Response:
    client = AmlClient(emu, token=token)
    try:
        return client.get(client.arm(ws_path()), API)
    finally:
        client.close()


@pytest.mark.usefixtures("msi_env")
def test_real_managed_identity_credential_gets_a_usable_token(emu: EmulatorServer) -> None:
    # GIVEN the environment of an App Service with a system-assigned identity
    # WHEN the real azure-identity credential asks for an ARM token
    token = ManagedIdentityCredential().get_token(SCOPE)
    # THEN it receives one that expires in about an hour and that the AML endpoints accept
    assert token.token
    assert 3500 < token.expires_on - time.time() <= 3600
    assert _workspace_get(emu, token.token).status_code == 200
    # AND the request it made is the App Service protocol
    call = next(r for r in emu.requests() if r["family"] == "msi")
    assert call["query"]["api-version"] == "2019-08-01"
    assert call["query"]["resource"].rstrip("/") == MANAGEMENT_RESOURCE.rstrip("/")
    assert "client_id" not in call["query"]
    assert call["status"] == 200 and call["authorized"] is True


@pytest.mark.usefixtures("msi_env")
def test_real_managed_identity_credential_with_a_user_assigned_client_id(emu: EmulatorServer) -> None:
    # GIVEN a user-assigned identity's client id
    client_id = "12345678-aaaa-bbbb-cccc-1234567890ab"
    # WHEN the credential is built with it
    token = ManagedIdentityCredential(client_id=client_id).get_token(SCOPE)
    # THEN the client id travels in the token request and the token works
    call = next(r for r in emu.requests() if r["family"] == "msi")
    assert call["query"]["client_id"] == client_id
    assert _workspace_get(emu, token.token).status_code == 200


def test_token_response_shape(emu: EmulatorServer) -> None:
    # GIVEN the right identity header
    settings = emu.settings()
    # WHEN a token is asked for with the resource written with a trailing slash
    response = requests.get(
        settings["IDENTITY_ENDPOINT"],
        params={"api-version": "2019-08-01", "resource": MANAGEMENT_RESOURCE},
        headers={"X-IDENTITY-HEADER": settings["IDENTITY_HEADER"]},
        timeout=5,
    )
    # THEN the App Service response carries expires_on as a string of epoch seconds
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"access_token", "expires_on", "resource", "token_type", "client_id"}
    assert body["token_type"] == "Bearer"
    assert body["client_id"] == SYSTEM_ASSIGNED_CLIENT_ID
    assert isinstance(body["expires_on"], str) and int(body["expires_on"]) > time.time()


@pytest.mark.parametrize("header", [None, "wrong-secret"])
def test_token_endpoint_rejects_a_missing_or_wrong_identity_header(emu: EmulatorServer, header: str | None) -> None:
    # GIVEN no or a wrong X-IDENTITY-HEADER
    headers = {"X-IDENTITY-HEADER": header} if header else {}
    # WHEN a token is asked for
    response = requests.get(
        emu.settings()["IDENTITY_ENDPOINT"],
        params={"api-version": "2019-08-01", "resource": MANAGEMENT_RESOURCE},
        headers=headers,
        timeout=5,
    )
    # THEN 401 and no token
    assert response.status_code == 401
    assert "access_token" not in response.json()


def test_wrong_identity_header_makes_the_real_credential_fail(emu: EmulatorServer, monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN the App Service environment with a wrong secret
    for name in OTHER_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("IDENTITY_ENDPOINT", emu.settings()["IDENTITY_ENDPOINT"])
    monkeypatch.setenv("IDENTITY_HEADER", "not-the-secret")
    # WHEN / THEN the credential raises instead of returning a token
    with pytest.raises(ClientAuthenticationError):
        ManagedIdentityCredential().get_token(SCOPE)


@pytest.mark.parametrize("resource", ["https://storage.azure.com/", "https://vault.azure.net", ""])
def test_token_endpoint_rejects_other_resources(emu: EmulatorServer, resource: str) -> None:
    settings = emu.settings()
    response = requests.get(
        settings["IDENTITY_ENDPOINT"],
        params={"api-version": "2019-08-01", "resource": resource},
        headers={"X-IDENTITY-HEADER": settings["IDENTITY_HEADER"]},
        timeout=5,
    )
    assert response.status_code == 400


@pytest.mark.parametrize(
    ("family", "path"),
    [
        ("arm", ws_path()),
        ("mms", f"api/{ws_path()}/models"),
        ("exp", f"history/v1.0/{ws_path()}/experiments"),
        ("aether", f"api/v1.0/{ws_path()}/Graphs/anything"),
    ],
)
@pytest.mark.parametrize("authorization", [None, "Bearer forged-token", "Basic dXNlcjpwYXNz"])
def test_aml_endpoints_require_an_issued_bearer_token(
    emu: EmulatorServer, family: str, path: str, authorization: str | None
) -> None:
    # GIVEN a request without a token, with a token this server never issued, or another scheme
    client = AmlClient(emu, token="unused")
    if authorization is None:
        del client.session.headers["Authorization"]
    else:
        client.session.headers["Authorization"] = authorization
    url = {"arm": client.arm, "mms": client.mms, "exp": client.exp, "aether": client.aether}[family](path)
    # WHEN an AML endpoint is called
    response = client.get(url, API)
    client.close()
    # THEN 401 with an ARM-style error body, logged as unauthorized
    assert response.status_code == 401
    error = response.json()["error"]
    assert error["code"] in ("AuthenticationFailed", "InvalidAuthenticationToken") and error["message"]
    assert "Bearer" in response.headers["WWW-Authenticate"]
    assert emu.requests()[-1]["authorized"] is False


def test_the_request_log_never_contains_the_token(emu: EmulatorServer, aml: AmlClient) -> None:
    # GIVEN authorized traffic
    token = aml.session.headers["Authorization"].split()[1]
    aml.get(aml.arm(ws_path()), API)
    # WHEN the log is read (Python and HTTP)
    log = emu.requests()
    http_log = requests.get(f"{emu.base_url}/_emulator/requests", timeout=5).text
    # THEN the token is in neither
    assert log[-1]["authorized"] is True
    assert token not in json.dumps(log) and token not in http_log
    assert emu.settings()["IDENTITY_HEADER"] not in http_log
