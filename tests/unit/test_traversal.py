"""The export's traversal rules (pure: catalog + step + what it read -> steps) and the checkpoint's encoding of
the steps waiting, without a server."""

from __future__ import annotations

from dataclasses import replace

from shared.domain.catalog import load_catalog
from shared.domain.contract import Target
from shared.service.checkpoint import decode_pending, encode_pending
from shared.service.listing import Endpoints
from shared.service.traversal import Step, TraversalRules

TARGET = Target.model_validate(
    {
        "subscriptionId": "00000000-0000-0000-0000-000000000001",
        "resourceGroup": "rg",
        "workspace": "ws1",
        "location": "westeurope",
    }
)
ENDPOINTS = Endpoints(
    {
        "arm": "https://management.azure.com",
        "modelmanagement": "https://{location}.api.azureml.ms",
        "experiments": "https://{location}.api.azureml.ms",
        "aether": "https://{location}.api.azureml.ms",
    }
)


def rules(*kinds: str) -> TraversalRules:
    catalog = load_catalog()
    return TraversalRules(catalog, ENDPOINTS, requested=set(kinds), needed=catalog.closure(kinds))


def test_an_experiment_leads_to_its_runs_list_bound_to_its_name():
    # GIVEN the rules of an export of runs, and an experiment record with and one without a name
    r = rules("runs")
    named = {"experimentId": "e1", "name": "train"}
    # WHEN the children of each are asked for
    steps, problems = r.children(TARGET, "experiments", named, {}, inherited=False, first_sight=lambda *_: True)
    unnamed, _ = r.children(TARGET, "experiments", {"experimentId": "e2"}, {}, inherited=False, first_sight=lambda *_: True)
    # THEN the named one leads to the first page of its runs list, the other to nothing
    assert problems == [] and unnamed == []
    assert [(s.kind, s.op, s.bindings) for s in steps] == [("runs", "list", (("experimentName", "train"),))]
    assert steps[0].url == steps[0].list_url and "/experiments/train/runs" in steps[0].url
    assert r.lane(steps[0]) == ("experiments", "westeurope")


def test_the_steps_waiting_survive_a_checkpoint_and_stay_small():
    # GIVEN a runs list's first page, its next page (a continuation token), and a run that page still has to GET
    r = rules("runs")
    first = r.children(TARGET, "experiments", {"name": "train"}, {}, inherited=False, first_sight=lambda *_: True)[0][0]
    page2 = r.next_page(first, {"value": [], "continuationToken": "tok"})
    assert page2 is not None and page2.page == 2 and r.is_next_page(page2)
    run = Step(TARGET, "runs", "item", "", first.bindings, "r1", {"runId": "r1"}, listed_from=page2.url)
    run = replace(run, url=r.derived_url(run) or "")
    # WHEN they are encoded into a checkpoint and decoded again
    encoded = encode_pending([first, page2, run], r, {TARGET.resource_id: 0})
    decoded = decode_pending(encoded, r, [TARGET])
    # THEN the first page is said by its kind and bindings, the next page by its token, the run as a relist of
    # its page (its listed record is read again, not stored); and each comes back with its URL
    assert [(p.op, p.url, p.ids) for p in encoded] == [("list", None, []), ("list", "~tok", []), ("relist", "~tok", ["r1"])]
    assert [(s.op, s.url, s.page, s.only) for s in decoded] == [
        ("list", first.url, 1, ()),
        ("list", page2.url, 2, ()),
        ("relist", page2.url, 1, ("r1",)),
    ]
