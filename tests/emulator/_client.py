"""A minimal, deliberately independent AML client used to check the emulator from the outside."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import quote

import requests

from tools.emulator import (
    DEMO_LOCATION,
    DEMO_RESOURCE_GROUP,
    DEMO_SUBSCRIPTION,
    DEMO_WORKSPACE,
    MANAGEMENT_RESOURCE,
    EmulatorServer,
)

API = {"api-version": "2019-11-01"}
JSON = dict[str, Any]


def ws_path(ws: str = DEMO_WORKSPACE, sub: str = DEMO_SUBSCRIPTION, rg: str = DEMO_RESOURCE_GROUP) -> str:
    return f"subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.MachineLearningServices/workspaces/{ws}"


def fetch_token(emu: EmulatorServer, client_id: str | None = None) -> str:
    """The App Service managed-identity protocol, spoken by hand."""
    settings = emu.settings()
    params = {"api-version": "2019-08-01", "resource": MANAGEMENT_RESOURCE}
    if client_id:
        params["client_id"] = client_id
    response = requests.get(
        settings["IDENTITY_ENDPOINT"], params=params, headers={"X-IDENTITY-HEADER": settings["IDENTITY_HEADER"]}, timeout=5
    )
    response.raise_for_status()
    return str(response.json()["access_token"])


class AmlClient:
    def __init__(self, emu: EmulatorServer, token: str | None = None) -> None:
        self.emu = emu
        self.settings = emu.settings()
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token or fetch_token(emu)}"

    def close(self) -> None:
        self.session.close()

    # URLs, built from the printed settings exactly as the app would
    def arm(self, path: str) -> str:
        return f"{self.settings['DSR_ARM_ENDPOINT']}/{path}"

    def _regional(self, setting: str, path: str, location: str) -> str:
        return f"{self.settings[setting].replace('{location}', location)}/{path}"

    def mms(self, path: str, location: str = DEMO_LOCATION) -> str:
        return self._regional("DSR_MODELMANAGEMENT_ENDPOINT", path, location)

    def exp(self, path: str, location: str = DEMO_LOCATION) -> str:
        return self._regional("DSR_EXPERIMENTS_ENDPOINT", path, location)

    def aether(self, path: str, location: str = DEMO_LOCATION) -> str:
        return self._regional("DSR_AETHER_ENDPOINT", path, location)

    @staticmethod
    def seg(value: str) -> str:
        return quote(value, safe="")

    # requests
    def get(self, url: str, params: dict[str, str] | None = None) -> requests.Response:
        return self.session.get(url, params=params, timeout=10)

    def get_retrying(self, url: str, params: dict[str, str] | None = None, attempts: int = 200) -> requests.Response:
        """GET, retrying 429/5xx (honouring Retry-After) and dropped connections."""
        for _ in range(attempts):
            try:
                response = self.get(url, params)
            except requests.ConnectionError:
                continue
            if response.status_code == 429 or response.status_code >= 500:
                time.sleep(float(response.headers.get("Retry-After", "0")))
                continue
            return response
        raise AssertionError(f"no answer from {url} after {attempts} attempts")

    # paging
    def walk_next_link(self, url: str, params: dict[str, str] | None = None) -> tuple[list[JSON], list[JSON]]:
        """ARM / model management: follow nextLink (absolute) until absent or null. Returns (items, pages)."""
        items: list[JSON] = []
        pages: list[JSON] = []
        next_url: str | None = url
        next_params = params
        while next_url:
            response = self.get_retrying(next_url, next_params)
            assert response.status_code == 200, response.text
            page = response.json()
            pages.append(page)
            items.extend(page["value"])
            next_url, next_params = page.get("nextLink"), None
            assert len(pages) < 500, "paging does not end"
        return items, pages

    def walk_token(self, url: str, token_param: str, params: dict[str, str] | None = None) -> tuple[list[JSON], list[JSON]]:
        """Run history / artifacts / datastores / tasks: send continuationToken back as ``token_param``."""
        items: list[JSON] = []
        pages: list[JSON] = []
        token: str | None = None
        while True:
            query = dict(params or {})
            if token:
                query[token_param] = token
            response = self.get_retrying(url, query)
            assert response.status_code == 200, response.text
            page = response.json()
            pages.append(page)
            items.extend(page["value"])
            token = page.get("continuationToken")
            if not token:
                return items, pages
            assert len(pages) < 500, "paging does not end"
