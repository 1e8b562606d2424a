"""ARM routes of the v2 families (``data_v2.FAMILIES``), compute deletes and the secret-returning actions.

Mixed into ``EmulatorCore``: the methods use its state (``workspaces``, ``config``, ``v2_ops``,
``resource_deletions``) and helpers (``_method``, ``_take_drop``, ``_page_size``). Called with the lock held.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tools.emulator.data_v2 import FAMILY_BY_SEGMENT, PROVIDER, Family, is_compute_instance, json_mentions
from tools.emulator.protocol import HttpError, Request, Response, _decode_token, _encode_token, _link, _now, _scope
from tools.emulator.tables import Table

if TYPE_CHECKING:
    from tools.emulator.data import Workspace

JSON = dict[str, Any]
_V2_TOKEN = ("$skip", "$skiptoken")
_VIEWS = {
    "archive": ("isArchived", {"activeonly": False, "archivedonly": True, "all": None}, "activeonly"),
    "schedule": ("isEnabled", {"enabledonly": True, "disabledonly": False, "all": None}, "enabledonly"),
}
_OPERATION_KINDS = {"mfeoperationresults", "mfeoperationsstatus", "computeoperationresults", "computeoperationsstatus"}


@dataclass
class V2Operation:
    """A pending (or finished) v2 / compute delete."""

    op_id: str
    key: tuple[str, str, str]  # workspace key
    subscription: str
    location: str
    segment: str  # family segment, or "computes"
    parent: str
    child: str | None
    item_id: str
    kind: str  # truth kind of the item
    started: str
    polls: int = 0
    status: str = "InProgress"
    ended: str | None = None


class ArmV2Routes:
    # provided by EmulatorCore
    workspaces: dict[tuple[str, str, str], Workspace]
    v2_ops: dict[str, V2Operation]
    resource_deletions: list[JSON]
    config: Any
    _method: Callable[..., None]
    _take_drop: Callable[..., bool]
    _page_size: Callable[[], int]

    # ---------------------------------------------------------------- families

    def _v2(self, req: Request, ws: Workspace, family: Family, rest: list[str], segs: list[str]) -> Response:

        parent = rest[1] if len(rest) > 1 else None
        if len(rest) == 1:
            self._method(req, "GET")
            return self._v2_page(req, ws.v2[family.segment], family, family.segment, segs)
        assert parent is not None
        item = ws.v2[family.segment].get(parent)
        if len(rest) == 2:
            self._method(req, "GET", "DELETE")
            if req.method == "DELETE":
                return self._v2_delete(req, ws, family, parent, None)
            return Response(200, self._v2_view(self._found(item, family.segment, parent)))
        if len(rest) == 3 and rest[2].lower() in family.actions:
            self._method(req, "POST")
            found = self._found(item, family.segment, parent)
            return Response(200, copy.deepcopy(ws.secret_bodies[(found["id"].lower(), rest[2].lower())]))
        if family.child_segment and rest[2].lower() == family.child_segment.lower() and len(rest) in (3, 4):
            self._found(item, family.segment, parent)
            children = ws.v2_children[family.segment][parent]
            if len(rest) == 3:
                self._method(req, "GET")
                return self._v2_page(req, children, family, f"{family.segment}/{family.child_segment}", segs)
            self._method(req, "GET", "DELETE")
            if req.method == "DELETE":
                return self._v2_delete(req, ws, family, parent, rest[3])
            return Response(200, self._v2_view(self._found(children.get(rest[3]), family.child_segment, rest[3])))
        raise HttpError(404, "NotFound", "No such ARM endpoint")

    @staticmethod
    def _found(item: JSON | None, what: str, name: str) -> JSON:

        if item is None:
            raise HttpError(404, "ResourceNotFound", f"The resource '{what}/{name}' was not found.")
        return item

    def _v2_view(self, item: JSON) -> JSON:
        """An item as served: provisioningState Deleting while its delete runs."""
        if not any(op.item_id == item["id"] and op.status == "InProgress" for op in self.v2_ops.values()):
            return item
        view = copy.deepcopy(item)
        view["properties"]["provisioningState"] = "Deleting"
        return view

    def _v2_page(self, req: Request, table: Table, family: Family, label: str, segs: list[str]) -> Response:
        """``{value, nextLink}``; the nextLink carries an opaque ``$skip`` token bound to this list (and view);
        after the first page, when more remain, comes an empty page with a nextLink."""

        where = self._view_filter(req, family)
        scope = _scope(label, [*segs, (req.q("listViewType") or "").lower()])
        raw = req.q(*_V2_TOKEN)
        after, empty = -1, False
        if raw:
            decoded = _decode_token(raw, scope)
            if decoded is None:
                raise HttpError(400, "BadRequest", "The $skip token is not valid for this list.")
            after, empty = decoded
        if empty:
            return Response(200, {"value": [], "nextLink": _link(req, _V2_TOKEN, "$skip", _encode_token(scope, after))})
        items, last, more = table.page(after, self._page_size(), where)
        body: JSON = {"value": [self._v2_view(i) for i in items]}
        if more:
            body["nextLink"] = _link(req, _V2_TOKEN, "$skip", _encode_token(scope, last, empty=not raw))
        return Response(200, body)

    @staticmethod
    def _view_filter(req: Request, family: Family) -> Callable[[JSON], bool] | None:

        if family.view is None:
            return None
        field, choices, default = _VIEWS[family.view]
        wanted = (req.q("listViewType") or default).lower()
        if wanted not in choices:
            raise HttpError(400, "BadRequest", f"listViewType must be one of {', '.join(choices)}")
        value = choices[wanted]
        if value is None:
            return None
        return lambda item: bool(item["properties"].get(field, field == "isEnabled")) is value

    # ---------------------------------------------------------------- deletes

    def _v2_delete(self, req: Request, ws: Workspace, family: Family, parent: str, child: str | None) -> Response:

        table = ws.v2[family.segment] if child is None else ws.v2_children[family.segment][parent]
        name = parent if child is None else child
        item = table.get(name)
        mode = family.delete if child is None else family.child_delete
        if mode == "none":
            raise HttpError(405, "MethodNotAllowed", f"The emulator does not delete {family.segment}", {"Allow": "GET"})
        if item is None:
            return Response(204)
        kind = (family.kind if child is None else family.child_kind) or family.segment
        if child is None and family.child_segment and len(ws.v2_children[family.segment].get(parent) or ()):
            message = f"{family.segment}/{parent} still has {family.child_segment}: delete them first."
            raise HttpError(409, "Conflict", message)
        if child is not None and family.child_segment == "versions":
            users = [
                d["id"]
                for seg in ("onlineEndpoints", "batchEndpoints")
                for deployments in ws.v2_children[seg].values()
                for d in deployments.values()
                if json_mentions(d["properties"], item["id"])
            ]
            if users:
                raise HttpError(409, "Conflict", f"{item['id']} is in use by {', '.join(users)}.")
        if mode == "sync":
            table.pop(name)
            if child is None:
                ws.v2_children[family.segment].pop(parent, None)
            self._record_deletion(kind, item["id"], "sync", None, "Succeeded")
            return Response(200, drop=self._take_drop((item["id"],)))
        op = self._start_operation(req, ws, family.segment, parent, child, item["id"], kind)
        return self._accepted(req, op, async_header=False)

    def _compute_delete(self, req: Request, ws: Workspace, name: str) -> Response:

        action = req.q("underlyingResourceAction")
        if action is None or action.lower() not in ("delete", "detach"):
            message = "The query parameter underlyingResourceAction (Delete or Detach) is required."
            raise HttpError(400, "BadRequest", message)
        compute = ws.computes.get(name)
        if compute is None:
            return Response(204)
        kind = "computeInstances" if is_compute_instance(compute) else "computes"
        op = self._start_operation(req, ws, "computes", compute["name"], None, compute["id"], kind)
        for record in self.resource_deletions:
            if record["operationId"] == op.op_id:
                record["computeType"] = compute["properties"].get("computeType")
                record["underlyingResourceAction"] = action
        return self._accepted(req, op, async_header=True)

    def _record_deletion(self, kind: str, item_id: str, mode: str, op_id: str | None, status: str) -> None:
        self.resource_deletions.append({"kind": kind, "id": item_id, "mode": mode, "operationId": op_id, "status": status})

    def _start_operation(
        self, req: Request, ws: Workspace, segment: str, parent: str, child: str | None, item_id: str, kind: str
    ) -> V2Operation:

        op = next((o for o in self.v2_ops.values() if o.item_id == item_id and o.status == "InProgress"), None)
        if op is None:
            op = V2Operation(
                uuid.uuid4().hex, ws.key, ws.subscription, ws.location, segment, parent, child, item_id, kind, _now()
            )
            self.v2_ops[op.op_id] = op
            self._record_deletion(kind, item_id, "lro", op.op_id, op.status)
        return op

    def _accepted(self, req: Request, op: V2Operation, async_header: bool) -> Response:
        """202 with Location (and Azure-AsyncOperation for computes), Retry-After."""

        prefix = "compute" if op.segment == "computes" else "mfe"
        base = f"{req.base_url}/arm/subscriptions/{op.subscription}/providers/{PROVIDER}/locations/{op.location}"
        version = req.q("api-version")
        headers = {
            "Location": f"{base}/{prefix}OperationResults/{op.op_id}?api-version={version}",
            "Retry-After": str(self.config.lro_retry_after),
            "x-ms-async-operation-timeout": "PT1H",
        }
        if async_header:
            headers["Azure-AsyncOperation"] = f"{base}/{prefix}OperationsStatus/{op.op_id}?api-version={version}"
        return Response(202, None, headers, drop=self._take_drop((op.item_id,)))

    def _v2_operation(self, req: Request, kind: str, op_id: str) -> Response:
        """``.../locations/{loc}/{mfe|compute}Operation{Results|sStatus}/{id}``: each poll advances the operation."""

        op = self.v2_ops.get(op_id)
        if op is None:
            raise HttpError(404, "NotFound", "The operation was not found.")
        self._advance_v2(op)
        if kind.endswith("results"):
            if op.status == "InProgress":
                headers = {"Location": f"{req.base_url}{req.target}", "Retry-After": str(self.config.lro_retry_after)}
                return Response(202, None, headers)
            return Response(200)
        body: JSON = {"id": req.raw_path.removeprefix("/arm"), "name": op.op_id, "status": op.status, "startTime": op.started}
        if op.ended:
            body["endTime"] = op.ended
        return Response(200, body)

    def _advance_v2(self, op: V2Operation) -> None:

        if op.status != "InProgress":
            return
        if op.polls < self.config.v2_lro_polls:
            op.polls += 1
            return
        op.status, op.ended = "Succeeded", _now()
        ws = self.workspaces.get(op.key)
        if ws is not None:
            if op.segment == "computes":
                ws.computes.pop(op.parent)
            elif op.child is None:
                ws.v2[op.segment].pop(op.parent)
                ws.v2_children[op.segment].pop(op.parent, None)
            else:
                children = ws.v2_children[op.segment].get(op.parent)
                if children is not None:
                    children.pop(op.child)
        for record in self.resource_deletions:
            if record["operationId"] == op.op_id:
                record["status"] = op.status

    # ---------------------------------------------------------------- computes and the workspace

    def _computes_v2(self, req: Request, ws: Workspace, rest: list[str]) -> Response | None:
        """DELETE of a compute, POST listKeys / listNodes; None for what the v1 routes answer (GETs)."""

        if len(rest) == 2 and req.method == "DELETE":
            return self._compute_delete(req, ws, rest[1])
        if len(rest) == 3:
            self._method(req, "POST")
            compute = ws.computes.get(rest[1])
            if compute is None:
                raise HttpError(404, "ResourceNotFound", f"Compute '{rest[1]}' was not found in workspace {ws.name}.")
            body = ws.secret_bodies.get((compute["id"].lower(), rest[2].lower()))
            if body is None:
                raise HttpError(404, "NotFound", "No such ARM endpoint")
            return Response(200, copy.deepcopy(body))
        return None

    def _workspace_action(self, req: Request, ws: Workspace, action: str) -> Response:

        self._method(req, "POST")
        body = ws.secret_bodies.get((ws.arm["id"].lower(), action.lower()))
        if body is None:
            raise HttpError(404, "NotFound", "No such ARM endpoint")
        return Response(200, copy.deepcopy(body))


def family_of(segment: str) -> Family | None:
    return FAMILY_BY_SEGMENT.get(segment.lower())


def is_operation_kind(kind: str) -> bool:
    return kind.lower() in _OPERATION_KINDS
