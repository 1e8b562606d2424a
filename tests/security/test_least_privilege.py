"""Least privilege and bundles: export needs only reads; a delete without delete rights is a coded failure per
item, not a crash; bundles sit in private containers and the outcome names blobs, never a URL or a SAS.

The identity's rights are simulated by a reverse proxy in front of the workspace emulator that answers what
Azure answers an identity holding only Reader: 403 AuthorizationFailed to every DELETE.
"""

from __future__ import annotations

import json
import re
from urllib.parse import parse_qs, urlsplit

import pytest

from shared.service.processor import handle
from tests.support.bundles import DEMO_TARGET, app_services, blob_container
from tests.support.loopback import Reply, Seen

pytestmark = pytest.mark.integration


def reader_only(seen: Seen) -> Reply | None:
    if seen.method in ("DELETE", "PUT", "PATCH", "POST"):
        return Reply(
            403,
            {},
            {
                "error": {
                    "code": "AuthorizationFailed",
                    "message": "The client 'x' with object id "
                    "'y' does not have authorization to perform action "
                    "'Microsoft.MachineLearningServices/workspaces/models/delete'",
                }
            },
        )
    return None


def test_an_export_needs_only_read_rights(proxy, emulator, dsr_env, make_request, publisher):
    # GIVEN an identity that may only read
    proxy.intercept = reader_only
    # WHEN a full export runs
    event = handle(json.dumps(make_request()), app_services(publisher))
    # THEN it completes, and it never asked for anything but GET
    assert event["data"]["status"] == "completed", event["data"]["errors"]
    assert {s.method for s in proxy.seen} == {"GET"}


def test_a_delete_without_delete_rights_fails_per_item_with_a_code(proxy, emulator, dsr_env, make_request, publisher):
    # GIVEN an identity that may only read, and a workspace with deletable items
    proxy.intercept = reader_only
    before = emulator.expected_ids()
    v2 = emulator.expected_deletables()
    # WHEN a delete (with a confirmed workspace purge) runs
    body = make_request(operation="delete", deleteWorkspace=True, confirmWorkspace=DEMO_TARGET["workspace"])
    event = handle(json.dumps(body), app_services(publisher))
    # THEN nothing is gone, the outcome is a coded failure, and each item names its own `forbidden` error
    assert event["type"] == "aml.dsr.delete.failed"
    planned = sum(len(before[k]) for k in ("models", "assets", "images", "services"))
    planned += sum(len(ids) for kind, ids in v2.items() if not kind.endswith("Containers"))  # containers: versions_remain
    forbidden = [e for e in event["data"]["errors"] if e["code"] == "forbidden"]
    assert len(forbidden) == planned and all(e.get("id") and e["kind"] for e in forbidden)
    assert "workspace_delete_skipped" in {e["code"] for e in event["data"]["errors"]}  # no purge after failures
    assert emulator.expected_ids() == before
    assert all(item["result"] == "failed" for item in event["data"]["items"])


def test_bundles_are_private_and_the_outcome_names_blobs_not_urls(services, dsr_env, emulator, make_request, publisher):
    body = make_request(resourceKinds=["models", "datastores"])
    event = handle(json.dumps(body), services)
    assert event["data"]["status"] == "completed"
    container = blob_container(dsr_env)
    # private: no anonymous read access at the container level
    assert container.get_container_properties().public_access is None
    # the outcome names the container, prefix, manifest, page and zip: blob names, no URL, no SAS, no account name,
    # except the one download link (contract 6.4): read-only, one blob, the zip, with an expiry
    bundle = dict(event["data"]["bundle"])
    download = bundle.pop("download")
    rid = body["requestId"]
    assert bundle == {
        "container": dsr_env["DSR_EXPORT_CONTAINER"],
        "prefix": f"{rid}/",
        "manifest": f"{rid}/manifest.json",
        "report": f"{rid}/index.html",
        "zip": f"{rid}/{rid}.zip",
    }
    link = urlsplit(download["url"])
    query = parse_qs(link.query)
    assert link.path.endswith(f"/{rid}/{rid}.zip") and query["sp"] == ["r"] and query["sr"] == ["b"] and query["se"]
    text = json.dumps({**event, "data": {**event["data"], "bundle": bundle}})
    assert "://" not in text and "sig=" not in text and "devstoreaccount1" not in text
    # blob names are built only from validated fields: requestId/sub/rg/ws/kind.jsonl, and the page, zip and manifest
    names = [b.name for b in container.list_blobs(name_starts_with=rid + "/")]
    shape = re.compile(
        rf"^{re.escape(rid)}/({DEMO_TARGET['subscriptionId']}/{DEMO_TARGET['resourceGroup']}/"
        rf"{DEMO_TARGET['workspace']}/[A-Za-z]+\.jsonl|manifest\.json|index\.html|{re.escape(rid)}\.zip)$"
    )
    assert names and all(shape.match(n) for n in names), names
