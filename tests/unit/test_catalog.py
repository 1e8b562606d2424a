"""The catalog is data: it loads under a strict schema and covers every row of the reference endpoints.md."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from pydantic import ValidationError

import shared.domain.catalog
from shared.domain.catalog import Catalog, build_path, encode_segment, field_values, load_catalog, scalar_ids, workspace_path
from shared.domain.contract import DELETE_KINDS, EXPORT_KINDS, Target
from shared.domain.errors import InvalidIdError

ENDPOINTS_MD = Path(__file__).parents[1] / "fixtures" / "reference" / "endpoints.md"
ROW_KIND = {
    "workspaces": "workspace",
    "workspace (entire)": "workspaceDelete",
    "notification tasks": "tasks",
    "pipeline experiments": "pipelineExperiments",
    "pipeline graphs": "pipelineGraphs",
    "pipeline modules": "pipelineModules",
    "pipeline templates": "pipelineTemplates",
    "pipeline data sources": "pipelineDataSources",
}
FAMILY = {"ARM": "arm", "MMS": "modelmanagement", "EXP": "experiments", "AETHER": "aether"}
# Rows we deliberately do not call, and why.
NOT_CALLED = {
    ("workspaces", "list"): "the target workspace is read by its own GET; listing the resource group would "
    "read other workspaces (data minimisation)",
}


WS_PATH = "subscriptions/{}/resourceGroups/{}/providers/Microsoft.MachineLearningServices/workspaces/{}"


def _canonical(path: str) -> str:
    return re.sub(r"{[A-Za-z]*}", "{}", path)


def _normalise(url: str) -> tuple[str, str]:
    """('family', 'path with every placeholder as {}') from an endpoints.md cell."""
    url = url.strip().strip("`").split("?")[0]
    family, _, path = url.partition("/")
    return FAMILY[family], _canonical(re.sub(r"(?<![A-Za-z])WS(?![A-Za-z])", WS_PATH, path))


def _catalog_paths(catalog: Catalog, kind_name: str) -> dict[str, tuple[str, str]]:
    def canon(template: str) -> str:
        return _canonical(template.replace("{ws}", catalog.workspacePath))

    if kind_name == "workspaceDelete":
        return {"delete": (catalog.workspaceDelete.family, canon(catalog.workspaceDelete.item))}
    kind = catalog.kinds[kind_name]
    return {column: (kind.family, canon(template)) for column, template in (("list", kind.list), ("item", kind.item)) if template}


def _rows() -> list[tuple[str, str, str, str]]:
    """(section, kind cell, column, url) for every URL cell of endpoints.md."""
    rows = []
    section = ""
    for line in ENDPOINTS_MD.read_text(encoding="utf-8").splitlines():
        if line.startswith("## "):
            section = line[3:].split()[0].lower()
        if not line.startswith("| ") or line.startswith(("| kind", "|---")):
            continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        for column, cell in zip(("list", "item"), cells[1:3], strict=True):
            if cell.startswith("`"):
                rows.append((section, cells[0], column, cell.split("`")[1]))
    return rows


def test_catalog_loads_and_covers_the_contract_kinds():
    catalog = load_catalog()
    for kind in EXPORT_KINDS:
        assert "export" in catalog.kinds[kind].operations
    for kind in DELETE_KINDS:
        assert "delete" in catalog.kinds[kind].operations
    assert catalog.kinds["datastores"].query["includeSecret"] == "false"
    assert catalog.workspaceDelete.query["forceToPurge"] == "true"


@pytest.mark.parametrize(("section", "kind_cell", "column", "url"), _rows())
def test_every_endpoint_row_is_in_the_catalog(section, kind_cell, column, url):
    catalog = load_catalog()
    kind_name = ROW_KIND.get(kind_cell, kind_cell)
    if kind_name == "workspaceDelete":
        column = "delete"
    key = (kind_cell, column)
    if key in NOT_CALLED:
        pytest.skip(NOT_CALLED[key])
    family, path = _normalise(url)
    paths = _catalog_paths(catalog, kind_name)
    assert paths.get(column) == (family, path), f"{section} {kind_cell} {column}: {url}"
    if section == "delete":
        assert kind_name == "workspaceDelete" or "delete" in catalog.kinds[kind_name].operations


def test_the_reference_has_as_many_rows_as_we_think():
    rows = _rows()
    assert len([r for r in rows if r[0] == "export"]) == 27
    assert len([r for r in rows if r[0] == "delete"]) == 9


def test_a_catalog_with_an_unknown_field_or_dangling_reference_is_refused():
    raw = json.loads((Path(shared.domain.catalog.__file__).with_name("catalog.json")).read_text())
    typo = json.loads(json.dumps(raw))
    typo["kinds"]["models"]["paging_style"] = "nextLink"
    with pytest.raises(ValidationError, match="paging_style"):
        Catalog.model_validate(typo)
    dangling = json.loads(json.dumps(raw))
    dangling["kinds"]["runs"]["from"]["kind"] = "experiment"
    with pytest.raises(ValidationError, match="source kind"):
        Catalog.model_validate(dangling)
    unbound = json.loads(json.dumps(raw))
    unbound["kinds"]["metrics"]["list"] = "history/v1.0/{ws}/experiments/{experiment}/metrics"
    with pytest.raises(ValidationError, match="bound by nothing"):
        Catalog.model_validate(unbound)


def test_paths_encode_ids_as_single_segments():
    catalog = load_catalog()
    target = Target(
        subscriptionId="00000000-1111-2222-3333-444444444444", resourceGroup="rg(1).x", workspace="ws-1", location="westeurope"
    )
    ws = workspace_path(catalog, target)
    assert ws.endswith("/resourceGroups/rg(1).x/providers/Microsoft.MachineLearningServices/workspaces/ws-1")
    assert build_path("api/{ws}/models/{id}", ws, {"id": "churn-model:1"}).endswith("/models/churn-model:1")
    assert build_path("api/{ws}/models/{id}", ws, {"id": "a/b?c#d"}).endswith("/models/a%2Fb%3Fc%23d")
    assert encode_segment("x y%") == "x%20y%25"
    assert encode_segment("a..b") == "a..b" and encode_segment("...") == "..."


@pytest.mark.parametrize("value", [".", "..", "%2E", "%2e%2E", ".%2e", "%252E%252E", "%25252e"])
def test_an_id_that_is_or_decodes_to_a_dot_segment_is_refused(value):
    # GIVEN an item id a server handed us that is, or decodes to, '.' or '..'
    # WHEN it is put into a path THEN it is refused as invalid_id: requests and servers turn %2E%2E back into '..'
    with pytest.raises(InvalidIdError) as info:
        build_path("api/{ws}/models/{id}", "ws", {"id": value})
    assert info.value.code == "invalid_id"


def test_references_are_read_from_records():
    graph = {
        "moduleNodes": [{"moduleId": "m1"}, {"moduleId": "m2"}, {"moduleId": "m1"}, {"x": 1}],
        "datasourceNodes": "not a list",
    }
    assert scalar_ids(graph, "moduleNodes[*].moduleId") == ["m1", "m2"]
    assert scalar_ids(graph, "datasourceNodes[*].dataSourceId") == []
    assert field_values({"a": {"b": [1, 2]}}, "a.b") == [[1, 2]]
    assert scalar_ids({"templateId": None}, "templateId") == []
