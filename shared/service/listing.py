"""Reading Azure ML lists and items, shared by export and delete: URLs from the catalog, paging, ids."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import urljoin

from shared.domain.catalog import Catalog, Kind, build_path, workspace_path
from shared.domain.contract import LOCATION, Target
from shared.domain.errors import BadResponseError
from shared.domain.urls import check_same_collection, with_query
from shared.ports import AzureML

MAX_PAGES = 100_000


class Endpoints:
    """Base URLs per family, with ``{location}`` filled for a target."""

    def __init__(self, templates: dict[str, str] | Any) -> None:
        self._templates = dict(templates)

    def base(self, family: str, target: Target) -> str:
        return str(self._templates[family]).replace("{location}", target.location).rstrip("/")


def url_for(
    catalog: Catalog,
    endpoints: Endpoints,
    kind: Kind | Any,
    template: str,
    target: Target,
    values: dict[str, str],
    *,
    query: bool = True,
    listing: bool = False,
) -> str:
    """A catalog URL for a target; ``listing``: a list's first page (its ``listQuery`` too, e.g. listViewType=All)."""
    path = build_path(template, workspace_path(catalog, target), values)
    url = f"{endpoints.base(kind.family, target)}/{path}"
    params = {**kind.query, **(getattr(kind, "listQuery", None) or {})} if listing else dict(kind.query)
    return with_query(url, params) if query and params else url


def next_page_url(kind: Kind, url: str, list_url: str, body: dict[str, Any], page: int) -> str | None:
    """The next page of a list: its nextLink (with our fixed query re-imposed, since a nextLink may drop
    ``includeSecret=false``), else the first page's URL with the continuation token; None at the end.
    A nextLink off the collection's own path raises ``UntrustedUrlError`` (``untrusted_url``)."""
    next_link = body.get("nextLink")
    token = body.get("continuationToken")
    if isinstance(next_link, str) and next_link:
        next_link = urljoin(url, next_link)  # a relative nextLink is relative to the page that gave it
        check_same_collection(next_link, list_url)  # untrusted_url: never another workspace's or kind's path
        fixed = {**kind.query, **kind.listQuery}
        nxt = with_query(next_link, fixed, override=True) if fixed else next_link
    elif isinstance(token, str) and token:
        nxt = with_query(list_url, {p: token for p in kind.tokenParams}, override=True)
    else:
        return None
    if nxt == url or page >= MAX_PAGES:
        raise BadResponseError("the list kept returning the same next page; stopped paging", code="paging_loop")
    return nxt


def list_records(aml: AzureML, kind: Kind, first_url: str) -> Iterator[Any]:
    """Every record of a list, page after page (for callers that need the whole list, like a delete plan)."""
    url: str | None = first_url
    page = 1
    while url:
        body = aml.get(url).body
        if not isinstance(body, dict) or "value" not in body or not isinstance(body["value"] or [], list):
            raise BadResponseError("a list page is not a JSON object with a 'value' array")
        yield from body.get("value") or []
        url = next_page_url(kind, url, first_url, body, page)
        page += 1


def workspace_problem(target: Target, body: Any) -> tuple[str, str] | None:
    """Why a workspace GET's answer does not let us go on with this target (None: it does)."""
    if not isinstance(body, dict):
        return "bad_response", "the workspace GET did not return a JSON object"
    actual = str(body.get("location", "")).replace(" ", "").lower()
    if actual and actual != target.location:
        # the server's text is echoed only when it is a region name (our words otherwise)
        where = repr(actual) if re.fullmatch(LOCATION, actual) else "another location"
        return "location_mismatch", f"the workspace is in {where}, not in the request's location {target.location!r}"
    return None


def record_id(kind: Kind, record: Any) -> str:
    """The record's id from the kind's id field (then its fallbacks); a content hash when it has none."""
    if isinstance(record, dict):
        for name in ((kind.idField,) if kind.idField else ()) + kind.idFallbacks:
            value = record.get(name)
            if isinstance(value, (str, int)) and not isinstance(value, bool) and str(value):
                return str(value)
    digest = hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()[:32]
    return f"sha256:{digest}"
