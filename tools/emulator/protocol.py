"""Request, Response, errors and page-token helpers shared by the emulator's route modules."""

from __future__ import annotations

import base64
import binascii
import json
import uuid
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, quote, unquote

JSON = dict[str, Any]


@dataclass
class Request:
    method: str
    target: str  # the request target as received: path[?query]
    headers: dict[str, str]  # lower-case names
    body: bytes = b""

    def __post_init__(self) -> None:
        path, _, raw_query = self.target.partition("?")
        self.raw_path = path
        # Split on "/" first, then percent-decode each segment: "churn-model%3A1" names "churn-model:1".
        self.segments = [unquote(s) for s in path.split("/")[1:]]
        if self.segments and self.segments[-1] == "":
            self.segments.pop()
        self.query = parse_qsl(raw_query, keep_blank_values=True)

    def q(self, *names: str) -> str | None:
        """The first query value among ``names`` (case-insensitive names)."""
        wanted = [n.lower() for n in names]
        for name in wanted:
            for key, value in self.query:
                if key.lower() == name:
                    return value
        return None

    @property
    def base_url(self) -> str:
        return f"http://{self.headers.get('host', '127.0.0.1')}"

    def query_dict(self) -> dict[str, str]:
        return dict(self.query)


@dataclass
class Response:
    status: int
    body: Any = None  # JSON value; None = no body
    headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False  # close the connection without answering


class HttpError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


def error_body(style: str, status: int, code: str, message: str, location: str | None = None) -> JSON:
    """An error in the shape of the family: ARM, model management (flat) or run history."""
    if style == "arm":
        return {"error": {"code": code, "message": message, "details": []}}
    if style == "mms":
        return {"code": code, "statusCode": status, "message": message, "details": []}
    if style == "msi":
        return {"statusCode": status, "message": message, "correlationId": str(uuid.uuid4())}
    return {
        "error": {"code": code, "message": message, "target": None, "details": [], "innerError": None},
        "correlation": {"operation": uuid.uuid4().hex, "request": uuid.uuid4().hex[:16]},
        "environment": location,
        "location": location,
        "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
    }


# ------------------------------------------------------------------------------------- page tokens


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _encode_token(scope: str, after: int, empty: bool = False) -> str:
    raw = json.dumps({"s": scope, "a": after, "e": int(empty)}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_token(token: str, scope: str) -> tuple[int, bool] | None:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        data = json.loads(raw)
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return None
    if not isinstance(data, dict) or data.get("s") != scope:
        return None
    after, empty = data.get("a"), data.get("e")
    if not isinstance(after, int) or isinstance(after, bool) or empty not in (0, 1):
        return None
    return after, bool(empty)


def _scope(kind: str, segments: list[str]) -> str:
    """Tokens are bound to the list they came from."""
    return f"{kind}:{zlib.crc32('/'.join(segments).lower().encode()):08x}"


def _link(req: Request, drop: Iterable[str], name: str, value: str) -> str:
    """An absolute next-page URL back to this server: the request's query minus ``drop``, plus name=value."""
    dropped = {d.lower() for d in drop}
    params = [(k, v) for k, v in req.query if k.lower() not in dropped] + [(name, value)]
    query = "&".join(f"{quote(k, safe='$')}={quote(v, safe='')}" for k, v in params)
    return f"{req.base_url}{req.raw_path}?{query}"


def _is_false(value: str | None) -> bool:
    return value is not None and value.strip().lower() == "false"
