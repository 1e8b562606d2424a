"""Finding the workspaces of a ``discover`` request (contract 6.2) with Azure Resource Graph.

One query per batch of subscriptions (or one over the management groups), ``$skipToken`` paging, and the
caller's quota respected: when ``x-ms-user-quota-remaining`` reaches 0 the next query waits for
``x-ms-user-quota-resets-after``; a 429 is retried by the HTTP seam honouring its Retry-After. Every kind of
Azure ML workspace is found alike (``Default``, ``Hub``, ``Project``). The result is sorted by resource id,
so the same tenant always gives the same list; the processor records it before any work starts.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from shared.domain.contract import Discover, Target
from shared.domain.errors import BadResponseError, PermanentError
from shared.domain.outcome import error_entry
from shared.ports import AzureML

log = logging.getLogger("dsr.discovery")

API_VERSION = "2024-04-01"
QUERY = (
    "resources | where type =~ 'microsoft.machinelearningservices/workspaces' "
    "| project id, name, resourceGroup, subscriptionId, location, kind | order by id asc"
)
SUBSCRIPTIONS_PER_QUERY = 300  # "split more than a few hundred subscriptions into batches"
ROWS_PER_PAGE = 1000
MAX_PAGES = 10_000
MAX_QUOTA_WAIT_SECONDS = 300.0


def quota_wait(headers: dict[str, str]) -> float:
    """Seconds to wait before the next query: 0 while quota is left, else until it resets."""
    remaining = headers.get("x-ms-user-quota-remaining")
    try:
        if remaining is None or int(remaining) > 0:
            return 0.0
    except ValueError:
        return 0.0
    return min(MAX_QUOTA_WAIT_SECONDS, parse_hms(headers.get("x-ms-user-quota-resets-after")) or 1.0)


def parse_hms(value: str | None) -> float | None:
    """``hh:mm:ss`` (Resource Graph's reset time) in seconds; None when unreadable."""
    if not value:
        return None
    try:
        parts = [float(p) for p in value.strip().split(":")]
    except ValueError:
        return None
    if not parts or len(parts) > 3 or any(p < 0 for p in parts):
        return None
    seconds = 0.0
    for part in parts:
        seconds = seconds * 60 + part
    return seconds


@dataclass(frozen=True)
class FoundWorkspace:
    target: Target
    kind: str

    def as_json(self) -> dict[str, Any]:
        return {"workspace": self.target.resource_id, "kind": self.kind, "target": self.target.model_dump(mode="json")}


@dataclass
class Discovery:
    workspaces: list[FoundWorkspace] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    queries: int = 0


def _error(code: str, message: str) -> dict[str, Any]:
    return error_entry(code, message, kind="discovery", target=None)


def target_of(row: Any) -> Target | None:
    """The workspace of one Resource Graph row, held to the same rules as a target of a request."""
    if not isinstance(row, dict):
        return None
    location = row.get("location")
    if isinstance(location, str):
        location = location.replace(" ", "").lower()  # "West Europe" -> westeurope
    try:
        return Target.model_validate(
            {
                "subscriptionId": row.get("subscriptionId"),
                "resourceGroup": row.get("resourceGroup"),
                "workspace": row.get("name"),
                "location": location,
            }
        )
    except ValidationError:
        return None


class ResourceGraph:
    def __init__(self, aml: AzureML, base_url: str, *, sleep: Callable[[float], None] = time.sleep) -> None:
        self._aml = aml
        self._url = f"{base_url.rstrip('/')}/providers/Microsoft.ResourceGraph/resources?api-version={API_VERSION}"
        self._sleep = sleep
        self._wait = 0.0

    def find(self, discover: Discover) -> Discovery:
        result = Discovery()
        scopes: list[dict[str, list[str]]]
        if discover.subscriptions is not None:
            subs = discover.subscriptions
            scopes = [
                {"subscriptions": subs[i : i + SUBSCRIPTIONS_PER_QUERY]} for i in range(0, len(subs), SUBSCRIPTIONS_PER_QUERY)
            ]
        else:
            scopes = [{"managementGroups": list(discover.managementGroups or [])}]
        found: dict[tuple[str, str, str], FoundWorkspace] = {}
        invalid = 0
        for number, scope in enumerate(scopes, 1):
            try:
                for row in self._rows(scope, result):
                    target = target_of(row)
                    if target is None:
                        invalid += 1
                        continue
                    kind = row.get("kind") if isinstance(row.get("kind"), str) else None
                    found.setdefault(target.key, FoundWorkspace(target, (kind or "Default")[:32]))
            except PermanentError as exc:
                # one batch the identity may not read (403) or a bad answer: the others still count
                result.errors.append(
                    _error(
                        "discovery_failed",
                        f"Resource Graph query {number} of {len(scopes)} failed ({exc.code}); "
                        "the workspaces of that scope were not searched",
                    )
                )
        if invalid:
            result.errors.append(
                _error(
                    "discovery_invalid_workspace", f"{invalid} workspace(s) found with a name or location this app cannot call"
                )
            )
        result.workspaces = sorted(found.values(), key=lambda w: w.target.resource_id.lower())
        log.info(
            "workspaces discovered",
            extra={"workspaces": len(result.workspaces), "queries": result.queries, "errors": len(result.errors)},
        )
        return result

    def _rows(self, scope: dict[str, list[str]], result: Discovery) -> Any:
        token: str | None = None
        seen: set[str] = set()
        for _ in range(MAX_PAGES):
            options: dict[str, Any] = {"$top": ROWS_PER_PAGE, "resultFormat": "objectArray"}
            if token:
                options["$skipToken"] = token
            if self._wait > 0:
                log.info("Resource Graph quota used up: waiting for it to reset", extra={"seconds": round(self._wait, 1)})
                self._sleep(self._wait)
            response = self._aml.post(self._url, {**scope, "query": QUERY, "options": options})
            result.queries += 1
            self._wait = quota_wait(response.headers)
            body = response.body
            if not isinstance(body, dict) or not isinstance(body.get("data"), list):
                raise BadResponseError("Resource Graph answered without a data array", code="bad_response")
            yield from body["data"]
            token = body.get("$skipToken") or None
            if token is None:
                return
            if not isinstance(token, str) or token in seen:
                raise BadResponseError("Resource Graph's $skipToken repeats itself", code="paging_loop")
            seen.add(token)
        raise BadResponseError(f"Resource Graph paging exceeded {MAX_PAGES} pages", code="paging_loop")
