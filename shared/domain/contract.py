"""Contract v1 (see ../shared/contract.md): the request message and its validation. No I/O.

``parse_request`` turns the bytes of a Service Bus body (or a CLI file) into a ``DsrRequest`` or raises
``RequestRejected`` carrying one ``Violation`` per broken rule, each with a stable code and the field.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    model_serializer,
    model_validator,
)
from pydantic_core import PydanticCustomError

from shared.domain.documents import nests_deeper_than
from shared.domain.errors import RequestRejected, Violation

SCHEMA_VERSION = "1"
MAX_MESSAGE_BYTES = 64 * 1024
MAX_DEPTH = 8
MAX_VIOLATIONS = 20

EXPORT_KINDS: tuple[str, ...] = (
    "workspace",
    "computes",
    "experiments",
    "runs",
    "metrics",
    "artifacts",
    "tasks",
    "datastores",
    "models",
    "assets",
    "images",
    "services",
    "pipelineExperiments",
    "pipelineGraphs",
    "pipelineModules",
    "pipelineTemplates",
    "pipelineDataSources",
    # today's Azure ML (v2, ARM child resources of the workspace): contract 6.1
    "jobs",
    "modelContainers",
    "modelVersions",
    "dataContainers",
    "dataVersions",
    "environmentContainers",
    "environmentVersions",
    "componentContainers",
    "componentVersions",
    "codeContainers",
    "codeVersions",
    "connections",
    "onlineEndpoints",
    "onlineDeployments",
    "batchEndpoints",
    "batchDeployments",
    "schedules",
    "featuresetContainers",
    "featuresetVersions",
    "featurestoreEntityContainers",
    "featurestoreEntityVersions",
)
DELETE_KINDS: tuple[str, ...] = (
    "models",
    "assets",
    "images",
    "services",
    # v2 (contract 6.1); a container goes with all its versions, counted under its *Containers kind
    "jobs",
    "modelVersions",
    "dataVersions",
    "environmentVersions",
    "componentVersions",
    "codeVersions",
    "onlineDeployments",
    "onlineEndpoints",
    "batchDeployments",
    "batchEndpoints",
    "schedules",
    "featuresetVersions",
    "featurestoreEntityVersions",
    "computeInstances",
)

GUID = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
REQUEST_ID = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
RESOURCE_GROUP = r"^[A-Za-z0-9._()-]*[A-Za-z0-9_()-]$"
WORKSPACE = r"^[A-Za-z0-9][A-Za-z0-9_-]*$"
LOCATION = r"^[a-z][a-z0-9]{1,39}$"
MANAGEMENT_GROUP = r"^[A-Za-z0-9][A-Za-z0-9._()-]{0,89}$"
MAX_DISCOVER_SUBSCRIPTIONS = 1000
MAX_DISCOVER_MANAGEMENT_GROUPS = 50
UPN = r"^[^@\s]{1,128}@[^@\s]{1,253}$"
# C0, DEL and C1 controls, the Unicode line/paragraph separators, and the bidi embedding/override/isolate
# characters ("Trojan Source"): none belongs in an id, a name or a one-line free text, and each can
# forge or hide content in a log line or a ticket. (RLM/LRM marks stay allowed: RTL names use them.)
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
# Lone surrogates: a JSON "\ud800" escape decodes to one, and no UTF-8 writer (log, blob, stdout) can encode it.
_SURROGATE = re.compile(r"[\ud800-\udfff]")
MAX_FIELD_NAME_IN_ERROR = 64

_Strict = ConfigDict(extra="forbid", strict=True, frozen=True)


class Target(BaseModel):
    model_config = _Strict
    subscriptionId: Annotated[str, Field(pattern=GUID)]
    resourceGroup: Annotated[str, Field(min_length=1, max_length=90, pattern=RESOURCE_GROUP)]
    workspace: Annotated[str, Field(min_length=3, max_length=33, pattern=WORKSPACE)]
    location: Annotated[str, Field(pattern=LOCATION)]

    @property
    def resource_id(self) -> str:
        return (
            f"/subscriptions/{self.subscriptionId}/resourceGroups/{self.resourceGroup}"
            f"/providers/Microsoft.MachineLearningServices/workspaces/{self.workspace}"
        )

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.subscriptionId.lower(), self.resourceGroup.lower(), self.workspace.lower())


class Subject(BaseModel):
    model_config = _Strict
    objectId: Annotated[str, Field(pattern=GUID)]
    tenantId: Annotated[str | None, Field(pattern=GUID)] = None
    upn: Annotated[str | None, Field(max_length=256, pattern=UPN)] = None
    emails: Annotated[list[Annotated[str, Field(max_length=254, pattern=UPN)]] | None, Field(min_length=1, max_length=10)] = None


class Discover(BaseModel):
    """Contract 6.2: the scope in which Azure Resource Graph finds the workspaces (exactly one of the two)."""

    model_config = _Strict
    subscriptions: (
        Annotated[list[Annotated[str, Field(pattern=GUID)]], Field(min_length=1, max_length=MAX_DISCOVER_SUBSCRIPTIONS)] | None
    ) = None
    managementGroups: (
        Annotated[
            list[Annotated[str, Field(pattern=MANAGEMENT_GROUP)]], Field(min_length=1, max_length=MAX_DISCOVER_MANAGEMENT_GROUPS)
        ]
        | None
    ) = None

    @model_validator(mode="after")
    def _one_scope(self) -> Discover:
        given = [name for name in ("subscriptions", "managementGroups") if getattr(self, name) is not None]
        if len(given) != 1:
            raise _rule(
                "discover_scope",
                "discover",
                "must hold exactly one of subscriptions (1-1000 GUIDs) and managementGroups (1-50 names)",
            )
        for name in given:
            values: list[str] = getattr(self, name)
            if len({v.lower() for v in values}) != len(values):
                raise _rule("duplicate_value", f"discover.{name}", "names the same value more than once")
        return self


class DsrRequest(BaseModel):
    model_config = _Strict
    schemaVersion: Literal["1"]
    requestId: Annotated[str, Field(min_length=1, max_length=64, pattern=REQUEST_ID)]
    operation: Literal["export", "delete"]
    # left out (empty) only when ``discover`` finds the workspaces; an explicit [] is too few
    targets: Annotated[list[Target], Field(default_factory=list, min_length=1, max_length=100)]
    discover: Discover | None = None
    resourceKinds: list[str] | None = None
    scope: Literal["workspace", "subject"] = "workspace"
    subject: Subject | None = None
    dryRun: bool = False
    deleteWorkspace: bool = False
    confirmWorkspace: str | None = None
    requestedBy: Annotated[str | None, Field(max_length=128)] = None
    dueBy: Annotated[str | None, Field(max_length=40)] = None

    @model_validator(mode="after")
    def _cross_field_rules(self) -> DsrRequest:
        if self.dueBy is not None and parse_rfc3339(self.dueBy) is None:
            raise _rule("invalid_format", "dueBy", "must be an RFC 3339 date-time with a time zone, like 2026-12-31T17:00:00Z")
        allowed = EXPORT_KINDS if self.operation == "export" else DELETE_KINDS
        if self.resourceKinds is not None:
            if not self.resourceKinds:
                raise _rule("too_few", "resourceKinds", "must name at least one kind, or be left out for every kind")
            for i, kind in enumerate(self.resourceKinds):
                if kind in allowed:
                    continue
                if self.operation == "delete" and kind in EXPORT_KINDS:
                    raise _rule(
                        "kind_not_deletable",
                        f"resourceKinds[{i}]",
                        f"{kind!r} can be exported but not deleted; deletable kinds: {', '.join(DELETE_KINDS)}"
                        + (" (the workspace itself only through deleteWorkspace)" if kind == "workspace" else ""),
                    )
                raise _rule(
                    "unknown_kind",
                    f"resourceKinds[{i}]",
                    f"{kind[:40]!r} is not a kind of {self.operation}; allowed: {', '.join(allowed)}",
                )
            if len(set(self.resourceKinds)) != len(self.resourceKinds):
                raise _rule("duplicate_value", "resourceKinds", "names a kind more than once")
        if self.discover is not None:
            if self.targets:
                raise _rule("targets_or_discover", "discover", "give either targets or discover, not both")
            if self.scope != "subject":
                raise _rule(
                    "discover_needs_subject_scope",
                    "scope",
                    "must be 'subject' with discover (a workspace-wide request names its workspaces in targets)",
                )
            if self.deleteWorkspace:
                raise _rule(
                    "discover_forbids_workspace_delete",
                    "deleteWorkspace",
                    "is not allowed with discover; name the workspace in targets",
                )
        elif not self.targets:
            raise _rule("missing_field", "targets", "is required (or discover, to find the workspaces with Resource Graph)")
        seen: set[tuple[str, str, str]] = set()
        for i, target in enumerate(self.targets):
            if target.key in seen:
                raise _rule("duplicate_target", f"targets[{i}]", "names the same workspace as an earlier target")
            seen.add(target.key)
        if self.scope == "subject" and self.subject is None:
            raise _rule("subject_required", "subject", "is required when scope is 'subject'")
        if self.operation == "export":
            for name in ("dryRun", "deleteWorkspace"):
                if getattr(self, name):
                    raise _rule("delete_only", name, "applies to delete requests only")
            if self.confirmWorkspace is not None:
                raise _rule("delete_only", "confirmWorkspace", "applies to delete requests only")
        if self.deleteWorkspace:
            if self.scope == "subject":
                # a subject's request never destroys a workspace other people share
                raise _rule(
                    "workspace_delete_subject_scope",
                    "deleteWorkspace",
                    "cannot be combined with scope 'subject': a person's request never purges a shared workspace",
                )
            if len(self.targets) != 1:
                raise _rule("workspace_delete_single_target", "targets", "deleteWorkspace needs exactly one target")
            if self.confirmWorkspace != self.targets[0].workspace:
                raise _rule(
                    "workspace_delete_unconfirmed",
                    "confirmWorkspace",
                    "must equal the target workspace's name to delete the workspace itself",
                )
        elif self.confirmWorkspace is not None:
            raise _rule("confirm_without_delete", "confirmWorkspace", "is only meaningful with deleteWorkspace: true")
        return self

    @model_serializer(mode="wrap")
    def _omit_unused(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """The message as it may be sent again (continuations, re-enqueues): ``targets`` or ``discover``."""
        data: dict[str, Any] = handler(self)
        if self.discover is not None:
            data.pop("targets", None)
            data["discover"] = {k: v for k, v in data["discover"].items() if v is not None}
        else:
            data.pop("discover", None)
        return data

    @property
    def fleet(self) -> bool:
        """Runs as one child per workspace (fan-out): discovered, or more than one target."""
        return self.discover is not None or len(self.targets) > 1

    def for_workspace(self, target: Target) -> DsrRequest:
        """The same request narrowed to one workspace (same requestId: one bundle, one audit log)."""
        return self.model_copy(update={"targets": [target], "discover": None})

    @property
    def kinds(self) -> tuple[str, ...]:
        """The requested kinds in catalog order (the default: every kind of the operation)."""
        allowed = EXPORT_KINDS if self.operation == "export" else DELETE_KINDS
        if self.resourceKinds is None:
            return allowed
        return tuple(k for k in allowed if k in self.resourceKinds)


_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$")


def parse_rfc3339(text: str) -> datetime | None:
    """An RFC 3339 date-time with its offset (``Z`` or ``+hh:mm``) as an aware datetime; ``None`` if it is not one."""
    if not _RFC3339.match(text):
        return None
    head, dot, tail = text.upper().replace(" ", "T").partition(".")
    if dot:  # Python takes at most 6 fractional digits
        digits = tail[: len(tail) - len(tail.lstrip("0123456789"))]
        head = f"{head}.{digits[:6]}{tail[len(digits) :]}"
    try:
        return datetime.fromisoformat(head.replace("Z", "+00:00"))
    except ValueError:
        return None


def _rule(code: str, field: str, message: str) -> PydanticCustomError:
    return PydanticCustomError(code, "{field}: {message}", {"field": field, "message": message})


# pydantic error type -> (our stable code, message)
_PYDANTIC_CODES: dict[str, tuple[str, str]] = {
    "missing": ("missing_field", "is required"),
    "extra_forbidden": ("unknown_field", "is not a field of this message (check the spelling)"),
    "string_type": ("wrong_type", "must be a string"),
    "bool_type": ("wrong_type", "must be true or false (a JSON boolean)"),
    "list_type": ("wrong_type", "must be a JSON array"),
    "model_type": ("wrong_type", "must be a JSON object"),
    "model_attributes_type": ("wrong_type", "must be a JSON object"),
    "dict_type": ("wrong_type", "must be a JSON object"),
    "none_required": ("wrong_type", "must be null"),
    "string_pattern_mismatch": ("invalid_format", "has characters or a form that is not allowed"),
    "string_too_short": ("too_short", "is too short"),
    "string_too_long": ("too_long", "is too long"),
    "too_short": ("too_few", "has too few entries"),
    "too_long": ("too_many", "has too many entries"),
    "literal_error": ("invalid_value", "is not one of the allowed values"),
}

_FIELD_RULES: dict[str, str] = {
    "requestId": "1-64 characters: letters, digits, '.', '_', '-', starting with a letter or digit",
    "subscriptionId": "a GUID",
    "objectId": "a GUID",
    "tenantId": "a GUID",
    "resourceGroup": "1-90 letters, digits, '._-()', not ending in '.'",
    "workspace": "3-33 letters, digits, '_', '-', starting with a letter or digit",
    "location": "an Azure region name: a lowercase letter then 1-39 lowercase letters or digits",
    "upn": "a user principal name like name@domain",
    "emails": "1 to 10 e-mail addresses",
    "emails[]": "an e-mail address like name@domain, at most 254 characters",
    "schemaVersion": '"1"',
    "operation": '"export" or "delete"',
    "scope": '"workspace" or "subject"',
    "targets": "1 to 100 workspaces",
    "subscriptions": "1 to 1000 subscription GUIDs",
    "managementGroups": "1 to 50 management group names: letters, digits, '._()-', at most 90, starting with a letter or digit",
    "requestedBy": "at most 128 characters",
    "dueBy": "an RFC 3339 date-time with a time zone",
}


def _short_name(name: str) -> str:
    """A field name as echoed in an error: an attacker's 60 KiB key must not come back in full."""
    return name if len(name) <= MAX_FIELD_NAME_IN_ERROR else name[:MAX_FIELD_NAME_IN_ERROR] + "..."


def _field_path(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += ("." if path else "") + _short_name(str(part))
    return path


def _violations(error: ValidationError) -> list[Violation]:
    out: list[Violation] = []
    for err in error.errors(include_url=False):
        etype = err["type"]
        ctx = err.get("ctx") or {}
        if "field" in ctx and "message" in ctx and etype not in _PYDANTIC_CODES:
            out.append(Violation(etype, str(ctx["field"]), f"{ctx['field']} {ctx['message']}"))
            continue
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith(("function-", "literal["))))
        field = _field_path(loc) or "(message)"
        code, text = _PYDANTIC_CODES.get(etype, ("invalid_value", "is not valid"))
        if etype == "literal_error" and not isinstance(err.get("input"), str):
            code, text = "wrong_type", "must be a string"  # 1 for "1" is a wrong type, not a wrong value
        named = [p for p in loc if isinstance(p, str)]
        in_discover = len(named) >= 2 and named[-2] == "discover"  # discover.subscriptions[3]: the list's rule
        if in_discover:
            name = named[-1]
        elif len(loc) > 1 and isinstance(loc[-1], int):  # subject.emails[0]: the rule of one element
            name = str(loc[-2]) + "[]"
        else:
            name = str(loc[-1]) if loc else ""
        rule = _FIELD_RULES.get(name, "")
        message = f"{field} {text}" + (f"; expected {rule}" if rule and code not in ("missing_field", "unknown_field") else "")
        out.append(Violation(code, field, message))
    return out


def _reject(code: str, field: str, message: str, raw: Any = None) -> RequestRejected:
    request_id, operation = _salvage(raw)
    return RequestRejected([Violation(code, field, message)], request_id=request_id, operation=operation)


def _salvage(raw: Any) -> tuple[str | None, str | None]:
    """The requestId and operation of a rejected message, when they themselves are valid."""
    if not isinstance(raw, dict):
        return None, None
    rid = raw.get("requestId")
    op = raw.get("operation")
    rid_ok = isinstance(rid, str) and len(rid) <= 64 and re.fullmatch(REQUEST_ID, rid) is not None
    return (rid if rid_ok else None), (op if op in ("export", "delete") else None)


def _bad_text(text: str) -> str | None:
    if _SURROGATE.search(text):
        return "invalid_encoding"
    if _CONTROL.search(text):
        return "control_character"
    return None


def _bad_characters(value: Any) -> tuple[str, str] | None:
    """(code, field) of the first string or key holding a control character or a lone surrogate.

    A bad key is reported at its parent, so no field path ever carries one back into an event or a log.
    """
    stack: list[tuple[Any, str]] = [(value, "")]
    while stack:
        item, where = stack.pop()
        if isinstance(item, str):
            code = _bad_text(item)
            if code:
                return code, where or "(message)"
        elif isinstance(item, dict):
            for key in item:
                code = _bad_text(key)
                if code:
                    return code, where or "(message)"
            for key, child in item.items():
                name = _short_name(key)
                stack.append((child, f"{where}.{name}" if where else name))
        elif isinstance(item, list):
            stack.extend((child, f"{where}[{i}]") for i, child in enumerate(item))
    return None


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key[:40]!r}")
        result[key] = value
    return result


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def decode_json(body: bytes | str) -> Any:
    """Bytes -> JSON value with the input-boundary checks that precede any field rule."""
    if isinstance(body, str):
        try:
            raw = body.encode("utf-8")
        except UnicodeEncodeError:  # a str holding lone surrogates has no UTF-8 form
            raise _reject("invalid_encoding", "(message)", "the message is not valid Unicode text") from None
    else:
        raw = bytes(body)
    if len(raw) > MAX_MESSAGE_BYTES:
        raise _reject("too_large", "(message)", f"the message is {len(raw)} bytes; at most {MAX_MESSAGE_BYTES} are accepted")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise _reject("invalid_encoding", "(message)", "the message is not UTF-8") from None
    if text.startswith("\ufeff"):
        text = text[1:]
    try:
        value = json.loads(text, object_pairs_hook=_no_duplicate_keys, parse_constant=_no_constants)
    except RecursionError:
        raise _reject("too_deep", "(message)", f"the message nests deeper than {MAX_DEPTH} levels") from None
    except ValueError as exc:
        reason = str(exc).split(":")[0] if not str(exc).startswith("duplicate key") else str(exc)
        code = "duplicate_field" if str(exc).startswith("duplicate key") else "invalid_json"
        raise _reject(code, "(message)", f"the message is not valid JSON ({reason})") from None
    return value


def unwrap_envelope(value: Any) -> tuple[Any, str | None]:
    """A request delivered by Event Grid is the ``data`` of a CloudEvent or an Event Grid event."""
    if not isinstance(value, dict):
        raise _reject("wrong_type", "(message)", "the message must be a JSON object")
    if "specversion" in value:
        if value.get("specversion") != "1.0":
            raise _reject("invalid_envelope", "specversion", 'specversion must be "1.0" (CloudEvents 1.0)')
        for name in ("id", "source", "type"):
            if not isinstance(value.get(name), str) or not value[name]:
                raise _reject("invalid_envelope", name, f"{name} is required in a CloudEvent envelope")
        if "data_base64" in value and "data" in value:
            # CloudEvents 1.0: data and data_base64 are mutually exclusive; the request is JSON in data only
            raise _reject(
                "invalid_envelope",
                "data_base64",
                "data and data_base64 are mutually exclusive (CloudEvents 1.0); send the request as JSON data",
            )
        if not isinstance(value.get("data"), dict):
            raise _reject("invalid_envelope", "data", "data of the CloudEvent must be the request, a JSON object")
        return value["data"], "cloudevent"
    if "eventType" in value and "data" in value:
        for name in ("id", "eventType"):
            if not isinstance(value.get(name), str) or not value[name]:
                raise _reject("invalid_envelope", name, f"{name} is required in an Event Grid event")
        if not isinstance(value.get("data"), dict):
            raise _reject("invalid_envelope", "data", "data of the Event Grid event must be the request, a JSON object")
        return value["data"], "eventgrid"
    return value, None


def parse_request(body: bytes | str) -> DsrRequest:
    """Validate a request message (docs/contract.md §1). Raises ``RequestRejected``; performs no I/O."""
    value = decode_json(body)
    if nests_deeper_than(value, MAX_DEPTH):
        raise _reject("too_deep", "(message)", f"the message nests deeper than {MAX_DEPTH} levels")
    request, _envelope = unwrap_envelope(value)
    bad = _bad_characters(request)
    if bad is not None:
        code, where = bad
        what = "a control character" if code == "control_character" else "an unpaired surrogate (not valid Unicode)"
        raise _reject(code, where, f"{where} contains {what}", request)
    if isinstance(request, dict) and "schemaVersion" in request and request["schemaVersion"] != SCHEMA_VERSION:
        if isinstance(request["schemaVersion"], str):
            raise _reject(
                "unsupported_schema_version",
                "schemaVersion",
                f'schemaVersion {request["schemaVersion"][:16]!r} is not supported; this app reads "1"',
                request,
            )
    try:
        return DsrRequest.model_validate(request)
    except ValidationError as exc:
        rid, op = _salvage(request)
        violations = _violations(exc)
        if len(violations) > MAX_VIOLATIONS:
            # 5,000 unknown fields fit in 64 KiB; their rejection must still fit in one outcome message
            rest = len(violations) - MAX_VIOLATIONS
            violations = [
                *violations[:MAX_VIOLATIONS],
                Violation("too_many_errors", "(message)", f"{rest} more violations are not listed"),
            ]
        raise RequestRejected(violations, request_id=rid, operation=op) from None


def request_identity(body: bytes | str) -> tuple[str | None, str | None]:
    """The requestId and operation of a message, as far as they can be read (each ``None`` when not)."""
    try:
        request = parse_request(body)
    except RequestRejected as rejection:
        return rejection.request_id, rejection.operation
    return request.requestId, request.operation
