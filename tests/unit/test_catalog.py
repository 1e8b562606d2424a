"""The catalog is data: it loads under a strict schema and covers every row of the reference endpoints.md."""

from __future__ import annotations

import itertools
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


# -- today's Azure ML (v2): every row of the reference aml-v2.md ---------------------------------------------
AML_V2_MD = Path(__file__).parents[1] / "fixtures" / "reference" / "aml-v2.md"
V2_ROW_KINDS = {
    "jobs": ("jobs",),
    "models": ("modelContainers", "modelVersions"),
    "data": ("dataContainers", "dataVersions"),
    "environments": ("environmentContainers", "environmentVersions"),
    "components": ("componentContainers", "componentVersions"),
    "codes": ("codeContainers", "codeVersions"),
    "connections": ("connections",),
    "computes (v2 view)": ("computes", "computeInstances"),
    "onlineEndpoints": ("onlineEndpoints",),
    "onlineDeployments": ("onlineEndpoints", "onlineDeployments"),
    "batchEndpoints": ("batchEndpoints",),
    "batchDeployments": ("batchEndpoints", "batchDeployments"),
    "schedules": ("schedules",),
    "featuresets": ("featuresetContainers", "featuresetVersions"),
    "featurestoreEntities": ("featurestoreEntityContainers", "featurestoreEntityVersions"),
}
V2_NOT_CALLED = {
    "datastores": "the workspace's datastores are the v1 kind `datastores` (data plane, includeSecret=false): the same "
    "records; the ARM view adds nothing personal",
}


def _v2_rows() -> list[tuple[str, list[str], str]]:
    """(kind cell, URLs of the list/item/delete cells with '...' expanded, delete cell) of the v2 table."""
    rows = []
    in_table = False
    for line in AML_V2_MD.read_text(encoding="utf-8").splitlines():
        if line.startswith("## "):
            in_table = line.startswith("## The v2 kinds")
        if not in_table or not line.startswith("| ") or line.startswith(("| kind", "|---")):
            continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        urls: list[str] = []
        for cell in cells[1:4]:
            for quoted in cell.split("`")[1::2]:
                if quoted.startswith("ARM/"):
                    urls.append(quoted)
                elif quoted.startswith(".../") and urls:  # relative to the URL before it, overlapping or not
                    prev, rest = urls[-1].split("?")[0], quoted[4:]
                    first = rest.split("/")[0]
                    if prev.endswith("/" + first):
                        prev = prev[: -len(first) - 1]
                    urls.append(f"{prev}/{rest}")
        same_shape = re.search(r"same shape under `(\w+)`", cells[1])
        if same_shape:
            seg = same_shape.group(1)
            urls = [
                f"ARM/WS/{seg}?listViewType=All",
                f"ARM/WS/{seg}/{{name}}/versions?listViewType=All",
                f"ARM/WS/{seg}/{{name}}/versions/{{version}}",
                f"ARM/WS/{seg}/{{name}}",
            ]
        rows.append((cells[0], urls, cells[3]))
    return rows


@pytest.mark.parametrize(("kind_cell", "urls", "delete_cell"), _v2_rows())
def test_every_v2_row_is_in_the_catalog(kind_cell, urls, delete_cell):
    """Paths, listViewType=All where the reference asks for it, the DELETE's own query, and who may be deleted."""
    if kind_cell in V2_NOT_CALLED:
        pytest.skip(V2_NOT_CALLED[kind_cell])
    catalog = load_catalog()
    kinds = V2_ROW_KINDS[kind_cell]
    assert urls, kind_cell
    for url in urls:
        path, _, query = url.partition("?")
        family, canon = _normalise(path)
        found = [
            (name, column)
            for name in kinds
            for column, where in _catalog_paths(catalog, name).items()
            if where == (family, canon)
        ]
        assert found, f"{kind_cell}: {url} is not in the catalog"
        for pair in query.split("&") if query else []:
            key, _, value = pair.partition("=")
            sent = [
                (catalog.kinds[name].listQuery if column == "list" else catalog.kinds[name].deleteQuery).get(key)
                for name, column in found
            ]
            assert value in sent, f"{kind_cell}: {url} must be sent with {pair}"
        for name, _column in found:
            assert catalog.kinds[name].family == "arm"
            if name != "computes":  # the v1 kind keeps its own api-version
                assert catalog.kinds[name].query["api-version"] == "2024-10-01"
            assert catalog.kinds[name].idField == "id"  # the ARM resource id
    if "(export only)" in delete_cell:
        assert all("delete" not in catalog.kinds[name].operations for name in kinds)
    elif kind_cell != "computes (v2 view)":
        assert "delete" in catalog.kinds[kinds[-1]].operations
    else:
        assert "delete" not in catalog.kinds["computes"].operations
        assert catalog.kinds["computeInstances"].where == {"properties.computeType": "ComputeInstance"}


def test_the_v2_reference_has_as_many_rows_as_we_think():
    rows = _v2_rows()
    assert len(rows) == 16
    assert {cell for cell, _, _ in rows} == set(V2_ROW_KINDS) | set(V2_NOT_CALLED)


def test_the_v2_api_version_is_a_setting_and_every_v2_kind_is_identified_by_its_arm_id():
    bumped = load_catalog(parameters=(("DSR_ARM_ML_API_VERSION", "2025-01-01-preview"),))
    v2 = [name for name, kind in load_catalog().kinds.items() if "${DSR_ARM_ML_API_VERSION}" in _raw_query(name)]
    assert "jobs" in v2 and "computeInstances" in v2 and len(v2) == 22
    for name in v2:
        assert bumped.kinds[name].query["api-version"] == "2025-01-01-preview"
        assert "systemData.createdBy" in bumped.kinds[name].identityFields
    assert bumped.kinds["computes"].query["api-version"] == "2019-11-01"  # the v1 kinds keep theirs


def _raw_query(name: str) -> str:
    raw = json.loads((Path(shared.domain.catalog.__file__).with_name("catalog.json")).read_text())
    return json.dumps(raw["kinds"][name].get("query", {}))


def test_subject_delete_owner_fields_are_the_creator_or_the_assigned_user():
    catalog = load_catalog()
    for name in DELETE_KINDS:
        kind = catalog.kinds[name]
        if kind.family == "arm":
            expected = (
                ("properties.properties.personalComputeInstanceSettings.assignedUser.objectId",)
                if name == "computeInstances"
                else ("systemData.createdBy",)
            )
            assert kind.owner_fields == expected, name


def test_delete_levels_follow_the_contract_order():
    catalog = load_catalog()
    level = {name: catalog.kinds[name].deleteLevel for name in catalog.kinds}
    order = [
        ["schedules"],
        ["onlineDeployments", "batchDeployments"],
        ["onlineEndpoints", "batchEndpoints"],
        ["jobs"],
        ["modelVersions", "dataVersions", "featuresetVersions", "featurestoreEntityVersions"],
        ["modelContainers", "codeContainers", "featurestoreEntityContainers"],
    ]
    for earlier, later in itertools.pairwise(order):
        assert max(level[k] for k in earlier) < min(level[k] for k in later), (earlier, later)


def test_an_undeclared_catalog_parameter_is_refused(tmp_path):
    raw = json.loads((Path(shared.domain.catalog.__file__).with_name("catalog.json")).read_text())
    raw["kinds"]["jobs"]["query"]["api-version"] = "${DSR_NOT_DECLARED}"
    path = tmp_path / "catalog.json"
    path.write_text(json.dumps(raw))
    with pytest.raises(ValueError, match="DSR_NOT_DECLARED"):
        load_catalog(str(path))
