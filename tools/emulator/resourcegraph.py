"""Azure Resource Graph: ``POST {ARM}/providers/Microsoft.ResourceGraph/resources`` over the emulated workspaces.

Shapes of ``specification/resourcegraph/resource-manager/Microsoft.ResourceGraph/stable/2024-04-01``
(``resourcegraph.json``, ``examples/ResourcesNextPageQuery.json``, ``ResourcesMgBasicQuery.json``): rows as
objects (``resultFormat`` defaults to ``objectArray``), ``resultTruncated`` a string, ``$skipToken`` while more.
Only queries over ``microsoft.machinelearningservices/workspaces`` are answered; a ``| project a, b`` clause
selects the columns. Mixed into ``EmulatorCore`` (called with its lock held).
"""

from __future__ import annotations

import json
import math
import re
import time
import zlib
from collections import deque
from typing import TYPE_CHECKING, Any

from tools.emulator.data import DEFAULT_MANAGEMENT_GROUPS, TENANT_ID
from tools.emulator.protocol import HttpError, Request, Response, _decode_token, _encode_token

if TYPE_CHECKING:
    from tools.emulator.data import Workspace

JSON = dict[str, Any]
WORKSPACE_TYPE = "microsoft.machinelearningservices/workspaces"
MAX_TOP = 1000
_PROJECT = re.compile(r"\|\s*project\s+([A-Za-z0-9_,\s]+?)\s*(?:\||$)", re.IGNORECASE)


def _hms(seconds: float) -> str:
    whole = max(0, math.ceil(seconds))
    return f"{whole // 3600:02d}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


class ResourceGraphRoutes:
    # provided by EmulatorCore
    workspaces: dict[tuple[str, str, str], Workspace]
    rg_calls: dict[str, deque[float]]
    config: Any
    _tokens: dict[str, tuple[float, str]]

    def _resource_graph(self, req: Request) -> Response:
        headers = self._rg_quota(req)
        try:
            body = json.loads(req.body or b"null")
        except ValueError:
            body = None
        if not isinstance(body, dict) or not isinstance(body.get("query"), str):
            raise HttpError(400, "BadRequest", "The request body must be a JSON object with a 'query' string.", headers)
        query = body["query"]
        if WORKSPACE_TYPE not in query.lower():
            message = f"The emulator only answers queries over {WORKSPACE_TYPE}."
            raise HttpError(400, "BadRequest", message, headers)
        subscriptions = self._rg_scope(body, headers)
        options = body.get("options") or {}
        top = options.get("$top", MAX_TOP)
        if not isinstance(top, int) or isinstance(top, bool) or not 1 <= top <= MAX_TOP:
            raise HttpError(400, "BadRequest", f"options.$top must be an integer within [1, {MAX_TOP}].", headers)
        columns = self._rg_columns(query, headers)
        rows = sorted(
            (
                self._rg_row(ws)
                for ws in self.workspaces.values()
                if subscriptions is None or ws.subscription.lower() in subscriptions
            ),
            key=lambda row: row["id"].lower(),
        )
        scope = f"rg:{zlib.crc32(json.dumps([sorted(subscriptions or []), query]).encode()):08x}"
        offset = options.get("$skip", 0) if isinstance(options.get("$skip"), int) else 0
        token = options.get("$skipToken")
        if token:
            decoded = _decode_token(str(token), scope)
            if decoded is None:
                raise HttpError(400, "BadRequest", "The $skipToken is not valid for this query and scope.", headers)
            offset = decoded[0]
        size = min(top, max(1, self.config.rg_page_size))
        page = rows[offset : offset + size]
        answer: JSON = {
            "totalRecords": len(rows),
            "count": len(page),
            "resultTruncated": "false",
            "facets": [],
            "data": [{c: row.get(c) for c in columns} if columns else row for row in page],
        }
        if offset + size < len(rows):
            answer["$skipToken"] = _encode_token(scope, offset + size)
        return Response(200, answer, headers)

    def _rg_quota(self, req: Request) -> dict[str, str]:
        """Per caller: at most ``rg_quota`` queries in any ``rg_window_seconds``; 429 beyond."""
        token = req.headers.get("authorization", "").partition(" ")[2].strip()
        caller = self._tokens.get(token, (0.0, token))[1]
        now = time.monotonic()
        window = float(self.config.rg_window_seconds)
        calls = self.rg_calls.setdefault(caller, deque())
        while calls and calls[0] <= now - window:
            calls.popleft()
        quota = int(self.config.rg_quota)
        if len(calls) >= quota:
            wait = calls[0] + window - now
            headers = {
                "Retry-After": str(max(1, math.ceil(wait))),
                "x-ms-user-quota-remaining": "0",
                "x-ms-user-quota-resets-after": _hms(wait),
            }
            raise HttpError(429, "RateLimiting", "Please provide below info when asking for support: quota exceeded.", headers)
        calls.append(now)
        return {
            "x-ms-user-quota-remaining": str(quota - len(calls)),
            "x-ms-user-quota-resets-after": _hms(calls[0] + window - now),
        }

    def _rg_scope(self, body: JSON, headers: dict[str, str]) -> set[str] | None:
        """The subscriptions queried (lower case); None = the whole tenant."""
        subscriptions, groups = body.get("subscriptions"), body.get("managementGroups")
        if subscriptions is not None and groups is not None:
            raise HttpError(400, "BadRequest", "Give subscriptions or managementGroups, not both.", headers)
        if subscriptions is not None:
            if not isinstance(subscriptions, list) or not all(isinstance(s, str) for s in subscriptions):
                raise HttpError(400, "BadRequest", "subscriptions must be a list of strings.", headers)
            return {s.lower() for s in subscriptions}
        if groups is not None:
            known = self.config.management_groups if self.config.management_groups is not None else DEFAULT_MANAGEMENT_GROUPS
            by_name = {name.lower(): subs for name, subs in known.items()}
            if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
                raise HttpError(400, "BadRequest", "managementGroups must be a list of strings.", headers)
            unknown = [g for g in groups if g.lower() not in by_name]
            if unknown:
                raise HttpError(400, "BadRequest", f"Unknown management group(s): {', '.join(unknown)}.", headers)
            return {s.lower() for g in groups for s in by_name[g.lower()]}
        return None

    @staticmethod
    def _rg_columns(query: str, headers: dict[str, str]) -> list[str]:
        match = _PROJECT.search(query)
        if not match:
            return []
        columns = [c.strip() for c in match.group(1).split(",") if c.strip()]
        known = {"id", "name", "type", "tenantId", "kind", "location", "resourceGroup", "subscriptionId", "tags", "properties"}
        unknown = [c for c in columns if c not in known]
        if unknown:
            raise HttpError(400, "BadRequest", f"Failed to resolve column(s) {', '.join(unknown)}.", headers)
        return columns

    @staticmethod
    def _rg_row(ws: Workspace) -> JSON:
        return {
            "id": ws.arm["id"],
            "name": ws.name,
            "type": WORKSPACE_TYPE,
            "tenantId": TENANT_ID,
            "kind": ws.arm.get("kind", "Default"),
            "location": ws.location,
            "resourceGroup": ws.resource_group,
            "subscriptionId": ws.subscription,
            "tags": {},
            "properties": {
                "workspaceId": ws.arm["properties"]["workspaceId"],
                "friendlyName": ws.arm["properties"]["friendlyName"],
            },
        }
