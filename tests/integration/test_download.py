"""A finished export as a data subject receives it: one read-only link to one zip (Azurite, account-key SAS)."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from shared.service.processor import handle
from tests.support.bundles import blob_container

pytestmark = pytest.mark.integration


def test_the_outcome_links_a_zip_that_matches_the_manifest_and_the_link_only_reads(services, dsr_env, make_request) -> None:
    # GIVEN a finished export
    body = make_request()
    rid = body["requestId"]
    outcome = handle(json.dumps(body), services)
    assert outcome["data"]["status"] == "completed", outcome["data"]["errors"]
    bundle = outcome["data"]["bundle"]
    # THEN the outcome names the page and the zip, and carries a download link valid DSR_DOWNLOAD_HOURS (168 by default)
    assert bundle["report"] == f"{rid}/index.html"
    assert bundle["zip"] == f"{rid}/{rid}.zip"
    url = bundle["download"]["url"]
    query = parse_qs(urlsplit(url).query)
    assert query["sp"] == ["r"] and query["sr"] == ["b"] and "sig" in query
    assert query["se"][0][:13] == bundle["download"]["expiresAt"][:13]
    # WHEN the link is opened without any other credential
    answer = requests.get(url, timeout=30)
    # THEN it serves the zip, which holds the manifest, the page and every file, each matching the manifest's sha256
    assert answer.status_code == 200
    container = blob_container(dsr_env)
    manifest_bytes = container.download_blob(f"{rid}/manifest.json").readall()
    manifest = json.loads(manifest_bytes)
    with zipfile.ZipFile(io.BytesIO(answer.content)) as archive:
        assert archive.read(f"{rid}/manifest.json") == manifest_bytes
        page = archive.read(f"{rid}/index.html")
        assert page == container.download_blob(f"{rid}/index.html").readall()
        assert len(manifest["files"]) > 10
        for entry in manifest["files"]:
            assert hashlib.sha256(archive.read(entry["name"])).hexdigest() == entry["sha256"], entry["name"]
    assert (
        container.get_blob_client(f"{rid}/index.html").get_blob_properties().content_settings.content_type.startswith("text/html")
    )
    # AND the page shows the workspace's kinds with their counts
    text = page.decode()
    for kind, count in next(iter(outcome["data"]["counts"].values())).items():
        if count:
            assert f"{kind} ({count})" in text
    # AND the link cannot write or delete
    assert requests.put(url, data=b"x", headers={"x-ms-blob-type": "BlockBlob"}, timeout=30).status_code == 403
    assert requests.delete(url, timeout=30).status_code == 403


def test_a_failed_export_writes_no_page_and_no_zip(services, dsr_env, make_request) -> None:
    body = make_request(targets=[{**make_request()["targets"][0], "location": "eastus"}])
    outcome = handle(json.dumps(body), services)
    assert outcome["data"]["status"] == "failed"
    assert "report" not in outcome["data"]["bundle"] and "download" not in outcome["data"]["bundle"]
    names = [b.name for b in blob_container(dsr_env).list_blobs(name_starts_with=body["requestId"] + "/")]
    assert names == [f"{body['requestId']}/manifest.json"]
