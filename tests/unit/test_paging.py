"""Paging rules: nextLink (opaque, through empty pages, our fixed query re-imposed) and continuation tokens."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from shared.domain.catalog import load_catalog
from shared.domain.errors import BadResponseError, NotFoundError, UntrustedUrlError
from shared.ports import ApiResponse
from shared.service.listing import list_records, next_page_url


class ScriptedAzureML:
    """A fake of shared.ports.AzureML serving fixed pages by URL."""

    def __init__(self, pages: dict[str, Any]) -> None:
        self.pages = pages
        self.calls: list[str] = []

    def get(self, url: str) -> ApiResponse:
        self.calls.append(url)
        if url not in self.pages:
            raise NotFoundError("no such page")
        return ApiResponse(200, {}, self.pages[url])

    def delete(self, url: str) -> ApiResponse:
        raise AssertionError("paging never deletes")


def test_next_link_is_followed_through_empty_pages_until_absent():
    kind = load_catalog().kinds["models"]
    first = "https://mms/api/ws/models?api-version=2019-11-01"
    pages = {
        first: {"value": [], "nextLink": "https://mms/api/ws/models?$skipToken=a&api-version=2019-11-01"},
        "https://mms/api/ws/models?$skipToken=a&api-version=2019-11-01": {
            "value": [{"id": "m:1"}],
            "nextLink": "https://mms/api/ws/models?$skipToken=b",
        },
        "https://mms/api/ws/models?$skipToken=b&api-version=2019-11-01": {"value": [{"id": "m:2"}], "nextLink": None},
    }
    fake = ScriptedAzureML(pages)
    assert [r["id"] for r in list_records(fake, kind, first)] == ["m:1", "m:2"]
    assert len(fake.calls) == 3


def test_a_next_link_that_drops_include_secret_gets_it_back():
    kind = load_catalog().kinds["datastores"]
    url = next_page_url(
        kind,
        "https://exp/ds?includeSecret=false",
        "https://exp/ds?includeSecret=false",
        {"value": [], "nextLink": "https://exp/ds?continuationToken=t2", "continuationToken": "t2"},
        1,
    )
    assert url is not None
    query = parse_qs(urlsplit(url).query)
    assert query["includeSecret"] == ["false"] and query["continuationToken"] == ["t2"]
    # and a nextLink asking for secrets is overruled
    first = "https://exp/ds?includeSecret=false"
    link = "https://exp/ds?includeSecret=true&continuationToken=t3"
    url = next_page_url(kind, first, first, {"value": [], "nextLink": link}, 1)
    assert parse_qs(urlsplit(url or "").query)["includeSecret"] == ["false"]


def test_a_continuation_token_alone_is_sent_back_on_the_first_pages_url():
    kind = load_catalog().kinds["runs"]
    first = "https://exp/history/v1.0/ws/experiments/e1/runs"
    url = next_page_url(kind, first, first, {"value": [{"runId": "r1"}], "continuationToken": "tok/+=", "nextLink": None}, 1)
    assert url is not None
    query = parse_qs(urlsplit(url).query)
    assert query["$continuationtoken"] == ["tok/+="] and query["continuationToken"] == ["tok/+="]
    second = next_page_url(kind, url, first, {"value": [], "continuationToken": "tok2"}, 2)
    assert parse_qs(urlsplit(second or "").query)["continuationToken"] == ["tok2"]


def test_the_end_of_a_list():
    kind = load_catalog().kinds["runs"]
    for body in (
        {"value": []},
        {"value": [], "nextLink": None, "continuationToken": None},
        {"value": [], "nextLink": "", "continuationToken": ""},
    ):
        assert next_page_url(kind, "u", "u", body, 1) is None


def test_a_page_pointing_to_itself_is_a_coded_error_not_a_loop():
    kind = load_catalog().kinds["models"]
    first = "https://mms/api/ws/models?api-version=2019-11-01"
    fake = ScriptedAzureML({first: {"value": [{"id": "m:1"}], "nextLink": first}})
    with pytest.raises(BadResponseError) as caught:
        list(list_records(fake, kind, first))
    assert caught.value.code == "paging_loop"


def test_a_page_without_a_value_array_is_a_bad_response():
    kind = load_catalog().kinds["models"]
    fake = ScriptedAzureML({"u": {"items": []}})
    with pytest.raises(BadResponseError):
        list(list_records(fake, kind, "u"))


def test_a_relative_next_link_is_resolved_against_its_page():
    kind = load_catalog().kinds["models"]
    url = next_page_url(
        kind,
        "https://mms/api/ws/models?api-version=2019-11-01",
        "https://mms/api/ws/models?api-version=2019-11-01",
        {"value": [], "nextLink": "models?$skipToken=b"},
        1,
    )
    assert url == "https://mms/api/ws/models?$skipToken=b&api-version=2019-11-01"


def test_ids_fall_back_when_the_id_field_is_missing():
    from shared.service.listing import record_id

    kinds = load_catalog().kinds
    assert record_id(kinds["tasks"], {"id": "t1"}) == "t1"
    assert record_id(kinds["tasks"], {"taskId": "t2"}) == "t2"
    assert record_id(kinds["models"], {"id": "m:1", "name": "m"}) == "m:1"
    anonymous = record_id(kinds["tasks"], {"subject": "x"})
    assert anonymous.startswith("sha256:") and anonymous == record_id(kinds["tasks"], {"subject": "x"})


FIRST = "https://mms.example/api/subscriptions/s1/workspaces/ws/models?api-version=2019-11-01"


@pytest.mark.parametrize(
    "link",
    [
        "https://mms.example/api/subscriptions/s2/workspaces/ws/models?$skipToken=a",  # another subscription
        "https://mms.example/api/subscriptions/s1/workspaces/other/models?$skipToken=a",  # another workspace
        "https://mms.example/api/subscriptions/s1/workspaces/ws/images?$skipToken=a",  # another kind
        "https://mms.example/api/subscriptions/s1/workspaces/ws/models-x?$skipToken=a",  # a prefix that is not a segment
        "https://mms.example/api/subscriptions/s1/workspaces/ws/models/../../other/models",  # dot segments
        "https://mms.example/api/subscriptions/s1/workspaces/ws/models/%2E%2E/%2e%2e/other/models",  # encoded
        "../other/models?$skipToken=a",  # relative, leaving the collection
        "https://mms.example:8443/api/subscriptions/s1/workspaces/ws/models?$skipToken=a",  # another port
        "http://mms.example/api/subscriptions/s1/workspaces/ws/models?$skipToken=a",  # another scheme
    ],
)
def test_a_next_link_off_the_collections_own_path_stops_paging(link):
    # GIVEN a list page whose nextLink leaves the listed collection (same host or not)
    kind = load_catalog().kinds["models"]
    # WHEN the next page is worked out THEN paging stops with untrusted_url; nothing is called
    with pytest.raises(UntrustedUrlError) as info:
        next_page_url(kind, FIRST, FIRST, {"value": [], "nextLink": link}, 1)
    assert info.value.code == "untrusted_url"


@pytest.mark.parametrize(
    "link",
    [
        "https://mms.example/api/subscriptions/s1/workspaces/ws/models?$skipToken=a",
        "https://MMS.example/api/Subscriptions/s1/workspaces/WS/models?$skipToken=a",  # ARM's case-insensitive paths
        "https://mms.example:443/api/subscriptions/s1/workspaces/ws/models/page/2",  # below the collection
    ],
)
def test_a_next_link_on_the_collections_own_path_is_followed(link):
    kind = load_catalog().kinds["models"]
    assert next_page_url(kind, FIRST, FIRST, {"value": [], "nextLink": link}, 1)
