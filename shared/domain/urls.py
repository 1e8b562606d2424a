"""Outbound URL policy: which origins may receive our bearer token. Pure; no I/O.

Every URL we call, ours or one a response handed us (nextLink, Location, Azure-AsyncOperation,
Operation-Location), must be https (http only on loopback) and on a host of a configured endpoint family.
A ``{location}`` in a template admits any region name on that family's domain, never another domain.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from urllib.parse import parse_qsl, quote, unquote, unquote_plus, urlsplit, urlunsplit

from shared.domain.errors import UntrustedUrlError

_REGION = "[a-z][a-z0-9]{1,39}"
_UNSAFE_CHARS = re.compile(r"[\x00-\x20\x7f\\]")


def is_loopback_host(host: str | None) -> bool:
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _port(scheme: str, port: int | None) -> int:
    """The port a client connects to (an explicit :0 is not the default port)."""
    if port is not None:
        return port
    return 443 if scheme == "https" else 80


class UrlPolicy:
    def __init__(self, templates: Mapping[str, str]) -> None:
        self.templates = dict(templates)
        self._patterns: list[re.Pattern[str]] = []
        self._bases = {
            name: re.compile(re.escape(template.rstrip("/")).replace(re.escape("{location}"), _REGION) + r"(?=[/?]|$)", re.I)
            for name, template in templates.items()
        }
        for template in templates.values():
            parts = urlsplit(template.replace("{location}", "region-placeholder"))
            host = re.escape((parts.hostname or "").lower()).replace("region\\-placeholder", _REGION)
            port = _port(parts.scheme, parts.port)
            self._patterns.append(re.compile(rf"{parts.scheme}://{host}:{port}"))

    def family(self, url: str) -> str:
        """The endpoint family (``arm``, ``experiments`` ...) whose base URL ``url`` starts with, else ``other``."""
        best, length = "other", -1
        for name, pattern in self._bases.items():
            found = pattern.match(url)
            if found and found.end() > length:
                best, length = name, found.end()
        return best

    def check(self, url: str) -> str:
        if not isinstance(url, str) or not url.isascii() or _UNSAFE_CHARS.search(url):
            # urlsplit drops tabs and newlines and lowercases non-ASCII look-alikes (the Kelvin sign K is
            # "k"), while the HTTP client may read the same text differently: refuse what the two could
            # disagree on. Our URLs are percent-encoded ASCII; Azure's nextLinks and Locations are too.
            raise UntrustedUrlError("refused a URL with whitespace, control or non-ASCII characters")
        try:
            parts = urlsplit(url)
            port = _port(parts.scheme, parts.port)
        except ValueError:
            raise UntrustedUrlError("a URL could not be parsed; it was not called") from None
        host = (parts.hostname or "").lower()
        if parts.scheme != "https" and not (parts.scheme == "http" and is_loopback_host(host)):
            raise UntrustedUrlError(f"refused a {parts.scheme or 'relative'} URL: only https (or http on loopback) is called")
        if "@" in parts.netloc:  # even an empty user info: the host must be the only thing before the path
            raise UntrustedUrlError("refused a URL with credentials in it")
        origin = f"{parts.scheme}://{host}:{port}"
        if not any(p.fullmatch(origin) for p in self._patterns):
            raise UntrustedUrlError(f"refused to call host {host!r}: it is not a configured Azure ML endpoint")
        return url


def is_dot_segment(value: str) -> bool:
    """True for ``.`` and ``..``, and for anything that decodes to one of them (``%2E%2E``, ``%252e.``):
    HTTP clients and servers normalise dot segments, encoded or not, so ``/models/..`` is the workspace."""
    for _ in range(4):  # a server, a proxy and a framework may each decode once
        if value in (".", ".."):
            return True
        decoded = unquote(value)
        if decoded == value:
            return False
        value = decoded
    return value in (".", "..") or "%" in value  # still decoding after four rounds: refuse, do not guess


def check_same_collection(link: str, collection_url: str) -> str:
    """A nextLink must stay on the listed collection: same scheme, host and port, and a path equal to the
    collection's path or below it, with no dot segment (encoded or not). Anything else (another
    subscription's, workspace's or kind's path on the same host) raises ``UntrustedUrlError``: our token
    must not fetch it, and its data must not land in this workspace's bundle. Paths are compared
    case-insensitively after decoding, as ARM itself does."""
    try:
        got, want = urlsplit(link), urlsplit(collection_url)
        same_origin = (got.scheme.lower(), (got.hostname or "").lower(), _port(got.scheme, got.port)) == (
            want.scheme.lower(),
            (want.hostname or "").lower(),
            _port(want.scheme, want.port),
        )
    except ValueError:
        raise UntrustedUrlError("a next-page link could not be parsed; paging stopped") from None
    if not same_origin:
        raise UntrustedUrlError("a next-page link points to another host; paging stopped")
    segments = got.path.split("/")
    if any(is_dot_segment(s) for s in segments):
        raise UntrustedUrlError("a next-page link has a dot segment in its path; paging stopped")
    path = unquote(got.path).lower().rstrip("/")
    base = unquote(want.path).lower().rstrip("/")
    if path != base and not path.startswith(base + "/"):
        raise UntrustedUrlError("a next-page link leaves the listed collection's path; paging stopped")
    return link


RESOURCE_GRAPH_PATH = "/providers/microsoft.resourcegraph/resources"


def check_post(policy: UrlPolicy, url: str) -> str:
    """A POST may only query Azure Resource Graph: every other POST of ARM is an action (``listKeys``,
    ``listSecrets``, ``token``...) that an export must never call."""
    policy.check(url)
    if not urlsplit(url).path.lower().rstrip("/").endswith(RESOURCE_GRAPH_PATH):
        raise UntrustedUrlError("refused a POST: only the Resource Graph query endpoint may be posted to")
    return url


def strip_query(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def with_query(url: str, params: Mapping[str, str], *, override: bool = False) -> str:
    """Add query parameters; an existing parameter is kept unless ``override``. The other parts of the
    query are kept byte for byte: a nextLink is opaque, and re-encoding it could change a token."""
    if not params:
        return url
    parts = urlsplit(url)
    raw = [p for p in parts.query.split("&") if p] if parts.query else []
    names = {n.lower() for n in params}

    def name_of(part: str) -> str:
        return unquote_plus(part.split("=", 1)[0]).lower()

    if override:
        raw = [p for p in raw if name_of(p) not in names]
    present = {name_of(p) for p in raw}
    raw += [f"{quote(k, safe='$')}={quote(v, safe='')}" for k, v in params.items() if k.lower() not in present]
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "&".join(raw), parts.fragment))


_KEEP_VALUES = frozenset({"api-version", "includesecret", "forcetopurge"})


def redact_url(url: str) -> str:
    """A URL fit for a log or an audit line: no user info, the path, and the query's names without their
    values (except a few harmless switches), no fragment. Never raises: a log line must not crash."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except (ValueError, TypeError, AttributeError):
        return "(unparsable URL)"
    netloc = (f"[{host}]" if ":" in host else host) + (f":{port}" if port is not None else "")
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    query = "&".join(f"{k}={v}" if k.lower() in _KEEP_VALUES else k for k, v in pairs)
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))
