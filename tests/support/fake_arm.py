"""A small in-memory fake of the ``AzureML`` port for ARM child resources of one workspace (unit tests of the
delete plan and its ordering). Paths are ARM ids; lists are the direct children of a path, two per page with
an opaque ``$skip`` nextLink; archived items only with ``listViewType=All``; deletes answer 409 while an item
has children, is named by another item's ``properties.model`` or is held (``holds``); long-running kinds
answer 202 + Location (compute: + Azure-AsyncOperation) and go on the second poll. Errors are raised as the
HTTP seam raises them (``classify_status``)."""

from __future__ import annotations

import json
import threading
from typing import Any
from urllib.parse import parse_qs, urlsplit

from shared.domain.errors import classify_status
from shared.ports import ApiResponse

ARM = "https://management.azure.com"
WS = (
    "/subscriptions/00000000-1111-2222-3333-444444444444/resourceGroups/rg-ml"
    "/providers/Microsoft.MachineLearningServices/workspaces/ws-v2"
)
LRO_SEGMENTS = ("jobs", "onlineEndpoints", "batchEndpoints", "deployments", "schedules", "computes", "featuresets")


class FakeArm:
    def __init__(self, location: str = "westeurope") -> None:
        self.items: dict[str, dict[str, Any]] = {}
        self.holds: dict[str, set[str]] = {}  # item -> items that must be gone before it can go
        self.calls: list[tuple[str, str]] = []  # (method, url)
        self.ops: dict[str, tuple[str, int]] = {}
        self.workspace = {"id": WS, "name": "ws-v2", "location": location}
        self._lock = threading.Lock()

    # -- data ------------------------------------------------------------------------------------
    def add(self, path: str, created_by: str, **properties: Any) -> str:
        item_id = f"{WS}/{path}"
        self.items[item_id.lower()] = {
            "id": item_id,
            "name": path.rsplit("/", 1)[-1],
            "properties": properties,
            "systemData": {"createdBy": created_by, "createdByType": "User", "lastModifiedBy": created_by},
        }
        return item_id

    def deletes(self) -> list[str]:
        return [urlsplit(url).path for method, url in self.calls if method == "DELETE"]

    # -- the port --------------------------------------------------------------------------------
    def get(self, url: str) -> ApiResponse:
        with self._lock:
            self.calls.append(("GET", url))
            parts = urlsplit(url)
            query = {k: v[0] for k, v in parse_qs(parts.query).items()}
            path = parts.path.lower()
            if "/operationresults/" in path:
                return self._poll(path.rsplit("/", 1)[-1], status_body=False)
            if "/operationsstatus/" in path:
                return self._poll(path.rsplit("/", 1)[-1], status_body=True)
            if path == WS.lower():
                return ApiResponse(200, {}, self.workspace)
            if path in self.items:
                return ApiResponse(200, {}, json.loads(json.dumps(self.items[path])))
            children = [
                item
                for key, item in sorted(self.items.items())
                if key.startswith(path + "/") and "/" not in key[len(path) + 1 :]
                and (query.get("listViewType") == "All" or not item["properties"].get("isArchived"))
            ]  # fmt: skip
            if not children and not any(key.startswith(path + "/") for key in self.items):
                known = ("jobs", "schedules", "models", "versions", "onlineendpoints", "deployments", "computes")
                if path.rsplit("/", 1)[-1] not in (*known, "batchendpoints"):
                    raise _error(404)
            skip = int(query.get("$skip", "0"))
            body: dict[str, Any] = {"value": children[skip : skip + 2]}
            if skip + 2 < len(children):
                body["nextLink"] = f"{ARM}{parts.path}?api-version={query.get('api-version')}&$skip={skip + 2}"
            return ApiResponse(200, {}, body)

    def delete(self, url: str) -> ApiResponse:
        with self._lock:
            self.calls.append(("DELETE", url))
            parts = urlsplit(url)
            path = parts.path.lower()
            item = self.items.get(path)
            if item is None:
                return ApiResponse(204, {})
            segments = path[len(WS) + 1 :].split("/")
            if segments[0] == "computes" and "underlyingResourceAction=Delete" not in parts.query:
                raise _error(400)
            if any(key.startswith(path + "/") for key in self.items):
                raise _error(409)
            if any(item["id"] == other["properties"].get("model") for other in self.items.values()):
                raise _error(409)
            if any(holder.lower() in self.items for holder in self.holds.get(item["id"], ())):
                raise _error(409)
            if segments[-2] in {x.lower() for x in LRO_SEGMENTS}:
                op = f"op{len(self.ops)}"
                self.ops[op] = (path, 0)
                headers = {"location": f"{ARM}/subscriptions/x/providers/p/locations/l/operationResults/{op}", "retry-after": "0"}
                if segments[0] == "computes":
                    headers["azure-asyncoperation"] = f"{ARM}/subscriptions/x/providers/p/locations/l/operationsStatus/{op}"
                return ApiResponse(202, headers)
            del self.items[path]
            return ApiResponse(200, {})

    def _poll(self, op: str, *, status_body: bool) -> ApiResponse:
        path, polls = self.ops[op]
        if polls == 0:
            self.ops[op] = (path, 1)
            if status_body:
                return ApiResponse(200, {"retry-after": "0"}, {"status": "InProgress"})
            return ApiResponse(202, {"retry-after": "0"})
        self.items.pop(path, None)
        return ApiResponse(200, {}, {"status": "Succeeded"} if status_body else None)


def _error(status: int) -> Exception:
    error = classify_status(status)
    assert error is not None
    return error
