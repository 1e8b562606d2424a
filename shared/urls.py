"""Outbound URL policy: which origins may receive our bearer token. Pure; no I/O.

Every URL we call, ours or one a response handed us (nextLink, Location, Azure-AsyncOperation,
Operation-Location), must be https (http only on loopback) and on a host of a configured endpoint family.
A ``{location}`` in a template admits any region name on that family's domain, never another domain.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from shared.errors import UntrustedUrlError
from shared.settings import is_loopback_host

_REGION = "[a-z][a-z0-9]{1,39}"


class UrlPolicy:
    def __init__(self, templates: Mapping[str, str]) -> None:
        self._patterns: list[re.Pattern[str]] = []
        for template in templates.values():
            parts = urlsplit(template.replace("{location}", "region-placeholder"))
            host = re.escape((parts.hostname or "").lower()).replace("region\\-placeholder", _REGION)
            port = parts.port or (443 if parts.scheme == "https" else 80)
            self._patterns.append(re.compile(rf"{parts.scheme}://{host}:{port}"))

    def check(self, url: str) -> str:
        try:
            parts = urlsplit(url)
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            raise UntrustedUrlError("a URL could not be parsed; it was not called") from None
        host = (parts.hostname or "").lower()
        if parts.scheme != "https" and not (parts.scheme == "http" and is_loopback_host(host)):
            raise UntrustedUrlError(f"refused a {parts.scheme or 'relative'} URL: only https (or http on loopback) is called")
        if parts.username or parts.password:
            raise UntrustedUrlError("refused a URL with credentials in it")
        origin = f"{parts.scheme}://{host}:{port}"
        if not any(p.fullmatch(origin) for p in self._patterns):
            raise UntrustedUrlError(f"refused to call host {host!r}: it is not a configured Azure ML endpoint")
        return url


def strip_query(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def with_query(url: str, params: Mapping[str, str], *, override: bool = False) -> str:
    """Add query parameters; an existing parameter is kept unless ``override``."""
    parts = urlsplit(url)
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    present = {k.lower() for k, _ in pairs}
    if override:
        names = {n.lower() for n in params}
        pairs = [(k, v) for k, v in pairs if k.lower() not in names]
        present -= names
    pairs += [(k, v) for k, v in params.items() if k.lower() not in present]
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(pairs, safe="$:"), parts.fragment))


def redact_url(url: str) -> str:
    """A URL fit for a log or an audit line: the path, and the query's names without their values."""
    parts = urlsplit(url)
    names = [k for k, _ in parse_qsl(parts.query, keep_blank_values=True)]
    keep = {"api-version", "includesecret", "forcetopurge"}
    query = "&".join(k if k.lower() not in keep else f"{k}={dict(parse_qsl(parts.query))[k]}" for k in names)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, ""))
