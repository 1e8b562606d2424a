"""The emulator's behaviour, independent of the HTTP plumbing: one ``Request`` in, one ``Response`` out.

Families are mapped by path prefix: ``/arm``, ``/mms/{location}``, ``/exp/{location}``,
``/aether/{location}``, ``/msi/token`` and the control API ``/_emulator``.
"""

from __future__ import annotations

import copy
import dataclasses
import hmac
import itertools
import json
import math
import random
import secrets
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from tools.emulator.arm_v2 import ArmV2Routes, V2Operation, family_of, is_operation_kind
from tools.emulator.config import FAULT_DROP, EmulatorConfig
from tools.emulator.data import (
    AETHER_KINDS,
    API_VERSION,
    JSON,
    MMS_KINDS,
    PROVIDER,
    SUBJECTS,
    Subject,
    Table,
    Workspace,
    all_secret_values,
    datastore_view,
    expected_ids,
    generate,
    workspace_key,
)
from tools.emulator.data_v2 import expected_deletables
from tools.emulator.protocol import (
    HttpError,
    Request,
    Response,
    _decode_token,
    _encode_token,
    _is_false,
    _link,
    _now,
    _scope,
    error_body,
)
from tools.emulator.resourcegraph import ResourceGraphRoutes

MANAGEMENT_RESOURCE = "https://management.core.windows.net/"
SYSTEM_ASSIGNED_CLIENT_ID = "99999999-0000-0000-0000-000000000099"
AML_FAMILIES = ("arm", "mms", "exp", "aether")
LOG_LIMIT = 100_000

# Query parameters that carry a page token, per paging style (compared lower-case).
_ARM_TOKEN = ("$skiptoken",)
_MMS_TOKEN = ("$skiptoken",)
_HISTORY_TOKEN = ("$continuationtoken", "continuationtoken")
_CONT_TOKEN = ("continuationtoken", "$continuationtoken")


# ----------------------------------------------------------------------------------------- helpers


class TokenBucket:
    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = float(burst)
        self.stamp = time.monotonic()

    def take(self) -> int | None:
        """Take one token; None when granted, else the whole seconds to wait."""
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return None
        return max(1, math.ceil((1 - self.tokens) / self.rate))


@dataclass
class ArmOperation:
    op_id: str
    key: tuple[str, str, str]
    subscription: str
    location: str
    started: str
    polls: int = 0
    status: str = "InProgress"
    ended: str | None = None


@dataclass
class MmsOperation:
    op_id: str
    key: tuple[str, str, str]
    service_id: str
    created: str
    polls: int = 0
    state: str = "Running"
    ended: str | None = None


# --------------------------------------------------------------------------------------------- core


class EmulatorCore(ArmV2Routes, ResourceGraphRoutes):
    """State (data, operations, tokens, log) and request handling. Thread-safe."""

    def __init__(self, config: EmulatorConfig) -> None:
        self._lock = threading.RLock()
        self.config = config
        self.identity_header = config.identity_header or secrets.token_urlsafe(24)
        self._tokens: dict[str, tuple[float, str]] = {}  # access token -> (expires at, client id)
        self._log: deque[JSON] = deque(maxlen=LOG_LIMIT)
        self._log_seq = itertools.count(1)
        self._load()

    # ---------------------------------------------------------------- state

    def _load(self) -> None:
        config = self.config
        self.workspaces: dict[tuple[str, str, str], Workspace] = generate(config.seed, config.scale, config.tenant_workspaces)
        self.resource_groups = {(k[0], k[1]) for k in self.workspaces}
        self.arm_ops: dict[str, ArmOperation] = {}
        self.v2_ops: dict[str, V2Operation] = {}
        self.resource_deletions: list[JSON] = []
        self.rg_calls: dict[str, deque[float]] = {}
        self.mms_ops: dict[str, MmsOperation] = {}
        self.deletions: list[JSON] = []
        self._fault_rng = random.Random(f"aml-dsr-emulator-faults:{self.config.seed}")
        self._arm_drops()
        self._arm_bucket()

    def _arm_drops(self) -> None:
        drop = self.config.drop_delete_response
        self._drop_count = drop if isinstance(drop, int) else 0
        self._drop_ids = set() if isinstance(drop, int) else {str(i) for i in drop}

    def _arm_bucket(self) -> None:
        self._buckets: dict[str, TokenBucket] = {}

    def _bucket_for(self, req: Request, family: str) -> TokenBucket | None:
        """The token bucket of the request's subscription (one bucket for all when rate_per_subscription is off),
        and of its family when ``rate_families`` is set (families not named there are not limited)."""
        rate = self.config.rate
        if not rate or (self.config.rate_families is not None and family not in self.config.rate_families):
            return None
        key = ""
        if self.config.rate_per_subscription:
            lowered = [s.lower() for s in req.segments]
            if "subscriptions" in lowered[:-1]:
                key = lowered[lowered.index("subscriptions") + 1]
        if self.config.rate_families is not None:
            key += f"|{family}"  # a bucket per family too
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(rate, self.config.effective_burst)
        return bucket

    def reset(self) -> None:
        """Data, operations, drops, fault draws and the request log back to their initial state."""
        with self._lock:
            self._log.clear()
            self._load()

    def configure(self, **changes: Any) -> EmulatorConfig:
        with self._lock:
            new = self.config.merged(changes)
            old = self.config
            self.config = new
            if "identity_header" in changes and new.identity_header:
                self.identity_header = new.identity_header
            if (new.seed, new.scale, new.tenant_workspaces) != (old.seed, old.scale, old.tenant_workspaces):
                self._load()
            else:
                if "drop_delete_response" in changes:
                    self._arm_drops()
                if {"rate", "burst", "rate_per_subscription", "rate_families"} & set(changes):
                    self._arm_bucket()
            return new

    def requests(self) -> list[JSON]:
        with self._lock:
            return copy.deepcopy(list(self._log))

    def clear_requests(self) -> None:
        with self._lock:
            self._log.clear()

    def expected_ids(self, sub: str, rg: str, ws: str, subject: Subject | None = None) -> dict[str, set[str]]:
        with self._lock:
            return expected_ids(self.workspaces.get(workspace_key(sub, rg, ws)), subject)

    def expected_deletables(self, sub: str, rg: str, ws: str, subject: Subject | None = None) -> dict[str, set[str]]:
        with self._lock:
            return expected_deletables(self.workspaces.get(workspace_key(sub, rg, ws)), subject)

    def workspace_deletions(self) -> list[JSON]:
        with self._lock:
            return copy.deepcopy(self.deletions)

    def deletions_of_resources(self) -> list[JSON]:
        with self._lock:
            return copy.deepcopy(self.resource_deletions)

    def secret_values(self) -> set[str]:
        with self._lock:
            config = self.config
            return all_secret_values(generate(config.seed, config.scale, config.tenant_workspaces).values())

    def issue_token(self, client_id: str | None = None) -> str:
        token = secrets.token_urlsafe(32)
        with self._lock:
            now = time.time()
            self._tokens = {t: v for t, v in self._tokens.items() if v[0] > now}
            self._tokens[token] = (now + self.config.token_ttl, client_id or SYSTEM_ASSIGNED_CLIENT_ID)
        return token

    def issued_tokens(self) -> set[str]:
        with self._lock:
            return set(self._tokens)

    def _authorized(self, req: Request) -> bool:
        scheme, _, token = req.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return False
        with self._lock:
            entry = self._tokens.get(token.strip())
        return entry is not None and entry[0] > time.time()

    # ---------------------------------------------------------------- dispatch

    def handle(self, req: Request) -> Response:
        family = req.segments[0] if req.segments else ""
        if family == "_emulator":
            try:
                return self._control(req)
            except HttpError as exc:
                return Response(exc.status, {"error": {"code": exc.code, "message": exc.message}})
        if family == "msi":
            response, authorized = self._msi(req)
            self._record(req, family, response, authorized, None)
            return response
        if family not in AML_FAMILIES:
            return Response(404, {"error": {"code": "NotFound", "message": f"no emulated endpoint at {req.raw_path}"}})
        return self._aml(req, family)

    def _record(self, req: Request, family: str, resp: Response, authorized: bool, fault: str | None) -> None:
        entry: JSON = {
            "seq": next(self._log_seq),
            "time": time.time(),
            "method": req.method,
            "path": req.raw_path,
            "query": req.query_dict(),
            "family": family,
            "status": None if resp.drop else resp.status,
            "dropped": resp.drop,
            "authorized": authorized,
            "fault": fault,
        }
        with self._lock:
            self._log.append(entry)

    def _style(self, family: str) -> str:
        return {"arm": "arm", "mms": "mms"}.get(family, "history")

    def _aml(self, req: Request, family: str) -> Response:
        config = self.config
        if config.latency_ms:
            time.sleep(config.latency_ms / 1000)
        style = self._style(family)
        location = req.segments[1] if family != "arm" and len(req.segments) > 1 else None
        authorized = self._authorized(req)
        fault: str | None = None
        resource_graph = family == "arm" and [s.lower() for s in req.segments[1:3]] == ["providers", "microsoft.resourcegraph"]
        with self._lock:
            bucket = None if resource_graph else self._bucket_for(req, family)
            wait = bucket.take() if bucket else None
            if wait is not None:
                fault = "throttled"
                resp = self._throttled(req, style, wait, location)
            else:
                drawn = self._draw_fault()
                if drawn is not None:
                    fault = drawn
                    resp = self._fault(req, style, drawn, location)
                elif not authorized:
                    resp = self._unauthorized(req)
                else:
                    try:
                        resp = self._route(req, family)
                    except HttpError as exc:
                        resp = Response(exc.status, error_body(style, exc.status, exc.code, exc.message, location), exc.headers)
            # the bucket's count (0 on its own 429s), where counts are told: on every answer but a cut or a 401
            if not resp.drop and resp.status != 401 and self._tells_counts(family, config) and not resource_graph:
                self._remaining_headers(req, resp, bucket)
        self._record(req, family, resp, authorized, fault)
        return resp

    def _draw_fault(self) -> str | None:
        faults = self.config.faults
        if not faults:
            return None
        draw = self._fault_rng.random()
        total = 0.0
        for kind, probability in faults.items():
            total += probability
            if draw < total:
                return kind
        return None

    @staticmethod
    def _tells_counts(family: str, config: EmulatorConfig) -> bool:
        """Whether this family's answers carry the remaining counts (ARM's by default, like Azure)."""
        return config.rate_headers or (family == "arm" and config.arm_headers)

    @staticmethod
    def _remaining_headers(req: Request, resp: Response, bucket: TokenBucket | None) -> None:
        """``x-ms-ratelimit-remaining-subscription-reads`` (and ``-deletes`` / ``-writes``) from the bucket."""
        remaining = str(int(bucket.tokens)) if bucket else "11999"
        resp.headers.setdefault("x-ms-ratelimit-remaining-subscription-reads", remaining)
        if req.method == "DELETE":
            resp.headers.setdefault("x-ms-ratelimit-remaining-subscription-deletes", remaining)
        elif req.method in ("POST", "PUT", "PATCH"):
            resp.headers.setdefault("x-ms-ratelimit-remaining-subscription-writes", remaining)

    def _throttled(self, req: Request, style: str, wait: int, location: str | None) -> Response:
        code = "TooManyRequests" if style in ("arm", "mms") else "RequestThrottled"
        message = "The request is being throttled as the limit has been reached for operation type - Read."
        return Response(429, error_body(style, 429, code, message, location), {"Retry-After": str(wait)})

    def _fault(self, req: Request, style: str, kind: str, location: str | None) -> Response:
        if kind == FAULT_DROP:
            return Response(0, drop=True)
        status = int(kind)
        retry_after = self.config.retry_after
        if status == 429:
            return self._throttled(req, style, retry_after, location)
        code = {500: "InternalServerError", 502: "BadGateway", 503: "ServiceUnavailable", 504: "GatewayTimeout"}
        headers = {"Retry-After": str(retry_after)} if status in (503, 504) else {}
        body = error_body(style, status, code.get(status, "InjectedFault"), f"injected fault {status}", location)
        return Response(status, body, headers)

    def _unauthorized(self, req: Request) -> Response:
        present = bool(req.headers.get("authorization"))
        code = "InvalidAuthenticationToken" if present else "AuthenticationFailed"
        message = (
            "The access token is invalid or expired."
            if present
            else "Authentication failed. The 'Authorization' header is missing."
        )
        header = (
            'Bearer authorization_uri="https://login.microsoftonline.com/common", '
            f'error="invalid_token", resource_id="{MANAGEMENT_RESOURCE}"'
        )
        return Response(401, error_body("arm", 401, code, message), {"WWW-Authenticate": header})

    # ---------------------------------------------------------------- managed identity

    def _msi(self, req: Request) -> tuple[Response, bool]:
        header = req.headers.get("x-identity-header", "")
        authorized = bool(header) and hmac.compare_digest(header.encode(), self.identity_header.encode())
        if req.segments != ["msi", "token"]:
            return Response(404, error_body("msi", 404, "NotFound", "Not found")), authorized
        if req.method != "GET":
            return Response(405, error_body("msi", 405, "MethodNotAllowed", "Use GET")), authorized
        if not authorized:
            return Response(401, error_body("msi", 401, "Unauthorized", "X-IDENTITY-HEADER is missing or wrong")), False
        if not req.q("api-version"):
            return Response(400, error_body("msi", 400, "BadRequest", "api-version is required")), True
        resource = req.q("resource") or ""
        if resource.rstrip("/") != MANAGEMENT_RESOURCE.rstrip("/"):
            message = f"This emulator only issues tokens for {MANAGEMENT_RESOURCE}, not {resource!r}"
            return Response(400, error_body("msi", 400, "BadRequest", message)), True
        client_id = req.q("client_id") or req.q("object_id") or req.q("mi_res_id") or SYSTEM_ASSIGNED_CLIENT_ID
        token = self.issue_token(client_id)
        with self._lock:
            expires_on = int(self._tokens[token][0])
        body = {
            "access_token": token,
            "expires_on": str(expires_on),
            "resource": resource,
            "token_type": "Bearer",
            "client_id": client_id,
        }
        return Response(200, body), True

    # ---------------------------------------------------------------- routing

    def _route(self, req: Request, family: str) -> Response:
        segs = req.segments[1:]
        if family == "arm":
            return self._arm(req, segs)
        location, rest = segs[0] if segs else "", segs[1:]
        if family == "mms":
            return self._mms(req, location, rest)
        if family == "exp":
            return self._exp(req, location, rest)
        return self._aether(req, location, rest)

    @staticmethod
    def _split_ws(segs: list[str]) -> tuple[str, str, str, list[str]] | None:
        literals = {0: "subscriptions", 2: "resourcegroups", 4: "providers", 5: PROVIDER.lower(), 6: "workspaces"}
        if len(segs) < 8 or any(segs[i].lower() != lit for i, lit in literals.items()):
            return None
        return segs[1], segs[3], segs[7], segs[8:]

    def _workspace(self, sub: str, rg: str, name: str, style: str) -> Workspace:
        ws = self.workspaces.get(workspace_key(sub, rg, name))
        if ws is None:
            if style == "arm":
                message = f"The Resource '{PROVIDER}/workspaces/{name}' under resource group '{rg}' was not found."
                raise HttpError(404, "ResourceNotFound", message)
            raise HttpError(404, "NotFound" if style == "mms" else "UserError", f"Workspace {name} was not found")
        return ws

    def _regional_workspace(self, segs: list[str], location: str, style: str) -> tuple[Workspace, list[str]]:
        parsed = self._split_ws(segs)
        if parsed is None:
            raise HttpError(404, "NotFound" if style == "mms" else "UserError", "No such endpoint")
        sub, rg, name, rest = parsed
        ws = self._workspace(sub, rg, name, style)
        if ws.location.lower() != location.lower():
            message = f"Workspace {name} is in {ws.location}, not in {location}"
            raise HttpError(404, "NotFound" if style == "mms" else "UserError", message)
        return ws, rest

    @staticmethod
    def _method(req: Request, *allowed: str) -> None:
        if req.method not in allowed:
            message = f"{req.method} is not supported here"
            raise HttpError(405, "MethodNotAllowed", message, {"Allow": ", ".join(allowed)})

    def _page_size(self) -> int:
        return self.config.page_size

    # ---------------------------------------------------------------- ARM

    def _arm(self, req: Request, segs: list[str]) -> Response:
        if not req.q("api-version"):
            raise HttpError(400, "MissingApiVersionParameter", "The api-version query parameter is required.")
        if [s.lower() for s in segs] == ["providers", "microsoft.resourcegraph", "resources"]:
            self._method(req, "POST")
            return self._resource_graph(req)
        if len(segs) == 8 and segs[0].lower() == "subscriptions" and segs[2].lower() == "providers":
            self._method(req, "GET")
            if is_operation_kind(segs[6]):
                return self._v2_operation(req, segs[6].lower(), segs[7])
            return self._arm_operation(req, segs)
        if len(segs) == 7 and [s.lower() for s in (segs[0], segs[2], segs[4], segs[5], segs[6])] == [
            "subscriptions",
            "resourcegroups",
            "providers",
            PROVIDER.lower(),
            "workspaces",
        ]:
            self._method(req, "GET")
            if (segs[1].lower(), segs[3].lower()) not in self.resource_groups:
                raise HttpError(404, "ResourceGroupNotFound", f"Resource group '{segs[3]}' could not be found.")
            table = Table()
            for ws in self.workspaces.values():
                if (ws.subscription.lower(), ws.resource_group.lower()) == (segs[1].lower(), segs[3].lower()):
                    table.add(ws.name, self._arm_view(ws))
            return self._arm_page(req, table, "workspaces", segs, final_null=False)
        parsed = self._split_ws(segs)
        if parsed is None:
            raise HttpError(404, "NotFound", "No such ARM endpoint")
        sub, rg, name, rest = parsed
        if not rest:
            self._method(req, "GET", "DELETE")
            if req.method == "DELETE":
                return self._arm_delete(req, sub, rg, name)
            return Response(200, self._arm_view(self._workspace(sub, rg, name, "arm")))
        ws = self._workspace(sub, rg, name, "arm")
        if len(rest) == 1 and rest[0].lower() == "listkeys":
            return self._workspace_action(req, ws, rest[0])
        family = family_of(rest[0])
        if family is not None:
            return self._v2(req, ws, family, rest, segs)
        if rest[0].lower() == "computes" and len(rest) <= 3:
            answered = self._computes_v2(req, ws, rest)
            if answered is not None:
                return answered
            self._method(req, "GET")
            if len(rest) == 1:
                return self._arm_page(req, ws.computes, "computes", segs, final_null=True)
            compute = ws.computes.get(rest[1])
            if compute is None:
                raise HttpError(404, "ResourceNotFound", f"Compute '{rest[1]}' was not found in workspace {ws.name}.")
            return Response(200, compute)
        raise HttpError(404, "NotFound", "No such ARM endpoint")

    def _arm_view(self, ws: Workspace) -> JSON:
        view = copy.deepcopy(ws.arm)
        if any(op.key == ws.key and op.status == "InProgress" for op in self.arm_ops.values()):
            view["properties"]["provisioningState"] = "Deleting"
        return view

    def _arm_page(self, req: Request, table: Table, kind: str, segs: list[str], final_null: bool) -> Response:
        """ARM: the first page is empty but carries a nextLink; the last page has no (or a null) nextLink."""
        scope = _scope(kind, segs)
        raw = req.q(*_ARM_TOKEN)
        if not raw:
            return Response(200, {"value": [], "nextLink": _link(req, _ARM_TOKEN, "$skiptoken", _encode_token(scope, -1))})
        decoded = _decode_token(raw, scope)
        if decoded is None:
            raise HttpError(400, "InvalidSkipToken", "The $skiptoken is not valid.")
        items, last, more = table.page(decoded[0], self._page_size())
        body: JSON = {"value": items}
        if more:
            body["nextLink"] = _link(req, _ARM_TOKEN, "$skiptoken", _encode_token(scope, last))
        elif final_null:
            body["nextLink"] = None
        return Response(200, body)

    def _arm_delete(self, req: Request, sub: str, rg: str, name: str) -> Response:
        key = workspace_key(sub, rg, name)
        ws = self.workspaces.get(key)
        if ws is None:
            return Response(204)
        op = next((o for o in self.arm_ops.values() if o.key == key and o.status == "InProgress"), None)
        if op is None:
            op = ArmOperation(uuid.uuid4().hex, key, ws.subscription, ws.location, _now())
            self.arm_ops[op.op_id] = op
            self.deletions.append(
                {
                    "subscription": ws.subscription,
                    "resourceGroup": ws.resource_group,
                    "workspace": ws.name,
                    "forceToPurge": (req.q("forceToPurge") or "").lower() == "true",
                    "operationId": op.op_id,
                    "status": op.status,
                }
            )
        base = f"{req.base_url}/arm/subscriptions/{ws.subscription}/providers/{PROVIDER}/locations/{ws.location}"
        headers = {
            "Azure-AsyncOperation": f"{base}/workspaceOperationsStatus/{op.op_id}?api-version={API_VERSION}",
            "Location": f"{base}/workspaceOperationResults/{op.op_id}?api-version={API_VERSION}",
            "Retry-After": str(self.config.lro_retry_after),
        }
        return Response(202, None, headers, drop=self._take_drop((ws.name, ws.arm["id"])))

    def _arm_operation(self, req: Request, segs: list[str]) -> Response:
        # subscriptions/{sub}/providers/{PROVIDER}/locations/{loc}/{workspaceOperationsStatus|Results}/{id}
        kind, op_id = segs[6].lower(), segs[7]
        op = self.arm_ops.get(op_id)
        if segs[3].lower() != PROVIDER.lower() or segs[4].lower() != "locations" or op is None:
            raise HttpError(404, "NotFound", "The operation was not found.")
        if kind not in ("workspaceoperationsstatus", "workspaceoperationresults"):
            raise HttpError(404, "NotFound", "No such ARM endpoint")
        self._advance_arm(op)
        if kind == "workspaceoperationresults":
            if op.status == "InProgress":
                return Response(
                    202, None, {"Location": f"{req.base_url}{req.target}", "Retry-After": str(self.config.lro_retry_after)}
                )
            return Response(200)
        body: JSON = {
            "id": f"/subscriptions/{op.subscription}/providers/{PROVIDER}/locations/{op.location}"
            f"/workspaceOperationsStatus/{op.op_id}",
            "name": op.op_id,
            "status": op.status,
            "startTime": op.started,
        }
        if op.ended:
            body["endTime"] = op.ended
        return Response(200, body)

    def _advance_arm(self, op: ArmOperation) -> None:
        if op.status != "InProgress":
            return
        if op.polls < self.config.lro_polls:
            op.polls += 1
            return
        op.status, op.ended = "Succeeded", _now()
        self.workspaces.pop(op.key, None)
        for record in self.deletions:
            if record["operationId"] == op.op_id:
                record["status"] = op.status

    def _take_drop(self, ids: Iterable[str]) -> bool:
        """Whether to drop the response of a delete that took effect (consumes one drop)."""
        if self._drop_count > 0:
            self._drop_count -= 1
            return True
        for item_id in ids:
            if item_id in self._drop_ids:
                self._drop_ids.discard(item_id)
                return True
        return False

    # ---------------------------------------------------------------- model management

    def _mms(self, req: Request, location: str, segs: list[str]) -> Response:
        if not segs or segs[0] != "api":
            raise HttpError(404, "NotFound", "No such model management endpoint")
        ws, rest = self._regional_workspace(segs[1:], location, "mms")
        if not req.q("api-version"):
            raise HttpError(400, "BadRequest", "api-version is required")
        if len(rest) == 2 and rest[0] == "operations":
            self._method(req, "GET")
            return self._mms_operation(ws, rest[1])
        if not rest or rest[0] not in MMS_KINDS or len(rest) > 2:
            raise HttpError(404, "NotFound", "No such model management endpoint")
        kind, table = rest[0], ws.mms[rest[0]]
        if len(rest) == 1:
            self._method(req, "GET")
            return self._mms_page(req, table, kind, segs)
        item_id = rest[1]
        self._method(req, "GET", "DELETE")
        if req.method == "DELETE":
            return self._mms_delete(req, ws, kind, item_id)
        item = table.get(item_id)
        if item is None:
            raise HttpError(404, "NotFound", f"{kind[:-1].capitalize()} {item_id} not found")
        return Response(200, item)

    def _mms_page(self, req: Request, table: Table, kind: str, segs: list[str]) -> Response:
        """Model management: {value, nextLink}; an empty page with a nextLink follows the first page."""
        scope = _scope(kind, segs)
        raw = req.q(*_MMS_TOKEN)
        first = not raw
        after, empty = -1, False
        if raw:
            decoded = _decode_token(raw, scope)
            if decoded is None:
                raise HttpError(400, "BadRequest", "Invalid $skipToken")
            after, empty = decoded
        if empty:
            return Response(200, {"value": [], "nextLink": _link(req, _MMS_TOKEN, "$skipToken", _encode_token(scope, after))})
        items, last, more = table.page(after, self._page_size())
        body: JSON = {"value": items}
        if more:
            body["nextLink"] = _link(req, _MMS_TOKEN, "$skipToken", _encode_token(scope, last, empty=first))
        return Response(200, body)

    def _mms_delete(self, req: Request, ws: Workspace, kind: str, item_id: str) -> Response:
        table = ws.mms[kind]
        if kind != "services":
            if table.pop(item_id) is None:
                return Response(204)
            return Response(200, drop=self._take_drop((item_id,)))
        if item_id not in table:
            return Response(204)
        op = next(
            (o for o in self.mms_ops.values() if o.key == ws.key and o.service_id == item_id and o.state == "Running"),
            None,
        )
        if op is None:
            op = MmsOperation(str(uuid.uuid4()), ws.key, item_id, _now())
            self.mms_ops[op.op_id] = op
        url = f"{req.base_url}/mms/{ws.location}/api{ws.path}/operations/{op.op_id}?api-version={API_VERSION}"
        return Response(202, None, {"Operation-Location": url}, drop=self._take_drop((item_id,)))

    def _mms_operation(self, ws: Workspace, op_id: str) -> Response:
        op = self.mms_ops.get(op_id)
        if op is None or op.key != ws.key:
            raise HttpError(404, "NotFound", f"Operation {op_id} not found")
        if op.state == "Running":
            if op.polls < self.config.service_delete_polls:
                op.polls += 1
            else:
                op.state, op.ended = "Succeeded", _now()
                ws.mms["services"].pop(op.service_id)
        body = {
            "id": op.op_id,
            "operationType": "ServiceDelete",
            "state": op.state,
            "createdTime": op.created,
            "endTime": op.ended,
            "error": None,
            "resourceLocation": None,
            "parentRequestId": op.op_id,
        }
        return Response(200, body)

    # ---------------------------------------------------------------- experimentation host

    def _exp(self, req: Request, location: str, segs: list[str]) -> Response:
        if len(segs) < 2 or segs[1] != "v1.0":
            raise HttpError(404, "UserError", "No such endpoint")
        service = segs[0]
        ws, rest = self._regional_workspace(segs[2:], location, "history")
        self._method(req, "GET")
        if service == "history":
            return self._history(req, ws, rest, segs)
        if service == "artifact":
            if len(rest) == 5 and rest[:4] == ["artifacts", "origins", "ExperimentRun", "containers"]:
                container = rest[4]
                run_id = container[5:] if container.startswith("dcid.") else container
                table = ws.artifacts.get(run_id)
                if table is None:
                    raise HttpError(404, "UserError", f"Container {container} was not found")
                return self._continuation_page(req, table, "artifacts", segs, _CONT_TOKEN, link=True)
        elif service == "notification":
            if rest == ["tasks"]:
                return self._continuation_page(req, ws.tasks, "tasks", segs, _CONT_TOKEN, link=None)
            if len(rest) == 2 and rest[0] == "tasks":
                return self._item(ws.tasks, rest[1], "Task")
        elif service == "datastore":
            include = not _is_false(req.q("includeSecret"))
            if rest == ["datastores"]:
                return self._continuation_page(
                    req, ws.datastores, "datastores", segs, _CONT_TOKEN, link=True,
                    view=lambda d: datastore_view(d, include), drop_in_link=("includeSecret",),
                )  # fmt: skip
            if len(rest) == 2 and rest[0] == "datastores":
                return Response(200, datastore_view(self._item(ws.datastores, rest[1], "Datastore").body, include))
        raise HttpError(404, "UserError", "No such endpoint")

    def _history(self, req: Request, ws: Workspace, rest: list[str], segs: list[str]) -> Response:
        if rest == ["experiments"]:
            return self._continuation_page(req, ws.experiments, "experiments", segs, _HISTORY_TOKEN, link=False)
        if len(rest) >= 3 and rest[0] == "experiments" and rest[2] in ("runs", "metrics"):
            exp_name, kind = rest[1], rest[2]
            if exp_name not in ws.experiments:
                raise HttpError(404, "UserError", f"Experiment {exp_name} was not found")
            table = (ws.runs if kind == "runs" else ws.metrics)[exp_name]
            if len(rest) == 3:
                return self._continuation_page(req, table, kind, segs, _HISTORY_TOKEN, link=False)
            if len(rest) == 4:
                return self._item(table, rest[3], "Run" if kind == "runs" else "Metric")
        raise HttpError(404, "UserError", "No such endpoint")

    @staticmethod
    def _item(table: Table, item_id: str, label: str) -> Response:
        item = table.get(item_id)
        if item is None:
            raise HttpError(404, "UserError", f"{label} {item_id} was not found")
        return Response(200, item)

    def _continuation_page(
        self,
        req: Request,
        table: Table,
        kind: str,
        segs: list[str],
        token_names: tuple[str, ...],
        link: bool | None,
        view: Callable[[JSON], JSON] | None = None,
        drop_in_link: tuple[str, ...] = (),
    ) -> Response:
        """Run history style: {value, continuationToken[, nextLink]}.

        ``link`` True: nextLink built from the token; False: nextLink always null; None: no nextLink field.
        """
        scope = _scope(kind, segs)
        raw = req.q(*token_names)
        after = -1
        if raw:
            decoded = _decode_token(raw, scope)
            if decoded is None:
                raise HttpError(400, "UserError", "The continuation token is not valid.")
            after = decoded[0]
        items, last, more = table.page(after, self._page_size())
        token = _encode_token(scope, last) if more else None
        body: JSON = {"value": [view(i) for i in items] if view else items, "continuationToken": token}
        if link is False:
            body["nextLink"] = None
        elif link:
            dropped = (*token_names, *drop_in_link)
            body["nextLink"] = _link(req, dropped, "continuationToken", token) if token else None
        return Response(200, body)

    # ---------------------------------------------------------------- pipelines (aether)

    def _aether(self, req: Request, location: str, segs: list[str]) -> Response:
        if len(segs) < 2 or segs[:2] != ["api", "v1.0"]:
            raise HttpError(404, "UserError", "No such pipeline endpoint")
        ws, rest = self._regional_workspace(segs[2:], location, "history")
        self._method(req, "GET")
        segment = next((s for s in AETHER_KINDS if len(rest) == 2 and s.lower() == rest[0].lower()), None)
        if segment is None:
            raise HttpError(404, "UserError", "No such pipeline endpoint")
        item = ws.aether[segment].get(rest[1])
        if item is None:
            raise HttpError(404, "UserError", f"{segment[:-1]} {rest[1]} was not found")
        return Response(200, item)

    # ---------------------------------------------------------------- control API

    def _control(self, req: Request) -> Response:
        action = "/".join(req.segments[1:])
        if action == "requests" and req.method == "GET":
            return Response(200, self.requests())
        if action == "requests" and req.method == "DELETE":
            self.clear_requests()
            return Response(200, {"cleared": True})
        if action == "reset" and req.method == "POST":
            self.reset()
            return Response(200, {"reset": True})
        if action == "config" and req.method in ("GET", "POST"):
            if req.method == "POST":
                try:
                    changes = json.loads(req.body or b"{}")
                    if not isinstance(changes, dict):
                        raise ValueError("expected a JSON object of knobs")
                    self.configure(**changes)
                except (ValueError, TypeError) as exc:
                    raise HttpError(400, "InvalidConfig", str(exc)) from exc
            return Response(200, self.config.to_dict())
        if action == "expected" and req.method == "GET":
            sub, rg, ws = req.q("sub"), req.q("rg"), req.q("ws")
            if not (sub and rg and ws):
                raise HttpError(400, "BadRequest", "sub, rg and ws are required")
            subject = self._subject(req.q("subject"), req.q("emails"))
            ids = self.expected_ids(sub, rg, ws, subject)
            return Response(200, {kind: sorted(values) for kind, values in ids.items()})
        if action == "deletables" and req.method == "GET":
            sub, rg, ws = req.q("sub"), req.q("rg"), req.q("ws")
            if not (sub and rg and ws):
                raise HttpError(400, "BadRequest", "sub, rg and ws are required")
            subject = self._subject(req.q("subject"), req.q("emails"))
            ids = self.expected_deletables(sub, rg, ws, subject)
            return Response(200, {kind: sorted(values) for kind, values in ids.items()})
        if action == "deletions" and req.method == "GET":
            return Response(200, self.workspace_deletions())
        if action == "resource-deletions" and req.method == "GET":
            return Response(200, self.deletions_of_resources())
        if action == "health" and req.method == "GET":
            return Response(200, {"status": "ok"})
        raise HttpError(404, "NotFound", f"no control endpoint {req.method} /_emulator/{action}")

    @staticmethod
    def _subject(value: str | None, emails: str | None = None) -> Subject | None:
        """``jane``, ``john``, an objectId or a UPN; ``emails`` (comma separated) adds e-mail aliases."""
        if not value:
            return None
        aliases = tuple(e.strip() for e in (emails or "").split(",") if e.strip())
        for subject in SUBJECTS:
            if value.lower() in (subject.object_id, (subject.upn or "").lower(), subject.name.split()[0].lower()):
                return dataclasses.replace(subject, emails=aliases) if aliases else subject
        raise HttpError(400, "BadRequest", f"unknown subject {value!r}")
