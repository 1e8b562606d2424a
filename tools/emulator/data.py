"""Deterministic workspace data for the emulator, and the truth that tests compare bundles against.

Everything is generated from ``(seed, scale)``; the same pair always gives the same ids and bodies.
Field shapes follow ``shared/reference/aml-api/*.json``.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import random
import re
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from tools.emulator import data_v2
from tools.emulator.data_v2 import JANE_EMAIL, V2_KINDS, secret_strings
from tools.emulator.tables import CaseInsensitiveTable, Table

JSON = dict[str, Any]

PROVIDER = "Microsoft.MachineLearningServices"
API_VERSION = "2019-11-01"
PIPELINE_RUN_TYPE = "azureml.PipelineRun"
SECRET_MARKER = "SECRET-"

DEMO_SUBSCRIPTION = "00000000-1111-2222-3333-444444444444"
DEMO_RESOURCE_GROUP = "rg-demo"
DEMO_WORKSPACE = "ws-demo"
DEMO_LOCATION = "westeurope"
SECOND_WORKSPACE = "ws-second"
SECOND_LOCATION = "northeurope"
TENANT_ID = "bbbbbbbb-0000-0000-0000-000000000002"

# Kind names of the truth API: contract §1 export kinds (v1), in catalog order, then the v2 kinds of §6.1.
V1_KINDS: tuple[str, ...] = (
    "workspace",
    "computes",
    "experiments",
    "runs",
    "metrics",
    "artifacts",
    "tasks",
    "datastores",
    "models",
    "assets",
    "images",
    "services",
    "pipelineExperiments",
    "pipelineGraphs",
    "pipelineModules",
    "pipelineTemplates",
    "pipelineDataSources",
)
KINDS: tuple[str, ...] = V1_KINDS + V2_KINDS
MMS_KINDS: tuple[str, ...] = ("models", "assets", "images", "services")
AETHER_KINDS: dict[str, str] = {  # URL segment -> truth kind
    "Experiments": "pipelineExperiments",
    "Graphs": "pipelineGraphs",
    "Modules": "pipelineModules",
    "Templates": "pipelineTemplates",
    "DataSources": "pipelineDataSources",
}
# Datastore fields that hold credentials: (section, field). Served only when includeSecret is not false.
DATASTORE_SECRET_FIELDS: tuple[tuple[str, str], ...] = (
    ("azureStorageSection", "credential"),
    ("azureStorageSection", "accountKey"),
    ("azureStorageSection", "sasToken"),
    ("azureStorageSection", "connectionString"),
    ("servicePrincipalSection", "clientSecret"),
)


@dataclass(frozen=True)
class Subject:
    """A person (or the automation principal) who creates records."""

    object_id: str
    tenant_id: str
    upn: str | None
    name: str
    puid: str
    emails: tuple[str, ...] = ()  # e-mail aliases (contract 6.3), matched like the UPN

    def created_by(self) -> JSON:
        """Run history / model management ``createdBy`` (``User``) shape."""
        return {
            "userObjectId": self.object_id,
            "userPuId": self.puid,
            "userIdp": None,
            "userAltSecId": None,
            "userIss": f"https://sts.windows.net/{self.tenant_id}/",
            "userTenantId": self.tenant_id,
            "userName": self.name,
            "upn": self.upn,
        }

    def compute_created_by(self) -> JSON:
        """ARM compute instance ``createdBy`` shape."""
        return {"userName": self.upn or self.name, "userOrgId": self.tenant_id, "userId": self.object_id}


JANE = Subject("aaaaaaaa-0000-0000-0000-000000000001", TENANT_ID, "jane.doe@contoso.com", "Jane Doe", "10030000AAAAAAAA")
JOHN = Subject("aaaaaaaa-0000-0000-0000-000000000007", TENANT_ID, "john.roe@contoso.com", "John Roe", "1003000077777777")
JANE_WITH_EMAIL = dataclasses.replace(JANE, emails=(JANE_EMAIL,))  # Jane as a request naming her alias
AUTOMATION = Subject("cccccccc-0000-0000-0000-000000000009", TENANT_ID, None, "aml-automation", "10030000CCCCCCCC")
SUBJECTS: tuple[Subject, ...] = (JANE, JOHN)
# Jane's object id inside a longer token: a subject matcher must NOT count it as a mention of Jane.
EMBEDDED_GUID_DECOY = f"x{JANE.object_id}y"

_EPOCH = datetime(2020, 1, 1, tzinfo=UTC)


def _ts(minutes: int, millis: bool = False) -> str:
    moment = _EPOCH + timedelta(minutes=minutes)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.000Z" if millis else "%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Workspace:
    subscription: str
    resource_group: str
    name: str
    location: str
    arm: JSON
    computes: CaseInsensitiveTable = field(default_factory=CaseInsensitiveTable)
    experiments: Table = field(default_factory=Table)  # by experiment name
    runs: dict[str, Table] = field(default_factory=dict)  # experiment name -> runs by runId
    metrics: dict[str, Table] = field(default_factory=dict)  # experiment name -> metrics by metricId
    artifacts: dict[str, Table] = field(default_factory=dict)  # runId -> artifacts by artifactId
    tasks: Table = field(default_factory=Table)
    datastores: Table = field(default_factory=Table)  # stored with secrets
    mms: dict[str, Table] = field(default_factory=lambda: {kind: Table() for kind in MMS_KINDS})
    aether: dict[str, dict[str, JSON]] = field(default_factory=lambda: {kind: {} for kind in AETHER_KINDS})
    v2: dict[str, Table] = field(default_factory=lambda: data_v2.empty_v2_tables()[0])  # family segment -> items
    v2_children: dict[str, dict[str, Table]] = field(default_factory=lambda: data_v2.empty_v2_tables()[1])
    secret_bodies: dict[tuple[str, str], JSON] = field(default_factory=dict)  # (lower id, lower action) -> answer

    @property
    def key(self) -> tuple[str, str, str]:
        return workspace_key(self.subscription, self.resource_group, self.name)

    @property
    def path(self) -> str:
        return workspace_path(self.subscription, self.resource_group, self.name)

    def find_run(self, run_id: str) -> JSON | None:
        for runs in self.runs.values():
            run = runs.get(run_id)
            if run is not None:
                return run
        return None

    def all_runs(self) -> Iterator[JSON]:
        for runs in self.runs.values():
            yield from runs.values()


def workspace_key(subscription: str, resource_group: str, workspace: str) -> tuple[str, str, str]:
    return subscription.lower(), resource_group.lower(), workspace.lower()


def workspace_path(subscription: str, resource_group: str, workspace: str) -> str:
    return f"/subscriptions/{subscription}/resourceGroups/{resource_group}/providers/{PROVIDER}/workspaces/{workspace}"


def datastore_view(datastore: JSON, include_secret: bool) -> JSON:
    """A datastore as served: with its credentials unless ``include_secret`` is false (then they are null)."""
    view = copy.deepcopy(datastore)
    if not include_secret:
        for section, name in DATASTORE_SECRET_FIELDS:
            if isinstance(view.get(section), dict) and name in view[section]:
                view[section][name] = None
    return view


# ----------------------------------------------------------------------------------------- generation


@dataclass(frozen=True)
class _Spec:
    name: str
    location: str
    friendly: str
    owner: Subject
    computes: tuple[str, ...]
    experiments: tuple[str, ...]
    runs_per_experiment: int
    metrics_per_experiment: int
    tasks: int
    datastores: tuple[str, ...]
    models: tuple[str, ...]
    assets: int
    images: tuple[str, ...]
    services: tuple[str, ...]
    demo: bool  # carries the mention / decoy anchors


_SPECS: tuple[_Spec, ...] = (
    _Spec(
        name=DEMO_WORKSPACE,
        location=DEMO_LOCATION,
        friendly="Demo",
        owner=JANE,
        computes=("ci-jane", "ci-john", "cpu-cluster"),
        experiments=("churn-training", "mnist-tuning", "fraud-pipeline"),
        runs_per_experiment=4,
        metrics_per_experiment=3,
        tasks=3,
        datastores=("workspaceblobstore", "workspacefilestore", "adls_curated"),
        models=("churn-model:1", "churn-model:2", "sklearn_mnist:1", "sklearn_mnist:2", "fraud-detector:1"),
        assets=3,
        images=("churn-image:1", "churn-image:2", "mnist-image:1"),
        services=("churn-svc", "mnist-svc", "fraud-svc"),
        demo=True,
    ),
    _Spec(
        name=SECOND_WORKSPACE,
        location=SECOND_LOCATION,
        friendly="Second",
        owner=JOHN,
        computes=("cpu-small",),
        experiments=("forecast",),
        runs_per_experiment=2,
        metrics_per_experiment=2,
        tasks=1,
        datastores=("workspaceblobstore",),
        models=("forecast-model:1", "forecast-model:2"),
        assets=1,
        images=("forecast-image:1",),
        services=("forecast-svc",),
        demo=False,
    ),
)


def _scaled(base: int, scale: float) -> int:
    """``base`` multiplied by ``scale``; never below ``base``, so the named items always exist."""
    return max(base, round(base * scale))


def _names(anchors: tuple[str, ...], scale: float, extra: str) -> list[str]:
    """The anchor names, plus generated ones when ``scale`` asks for more."""
    names = list(anchors)
    for i in range(len(anchors), _scaled(len(anchors), scale)):
        names.append(extra.format(i=i + 1))
    return names


class _Gen:
    def __init__(self, seed: int, spec: _Spec) -> None:
        self.rng = random.Random(f"aml-dsr-emulator:{seed}:{spec.name}")

    def guid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def hex(self, digits: int) -> str:
        return f"{self.rng.getrandbits(4 * digits):0{digits}x}"


# The many-workspace tenant (knob ``tenant_workspaces``): subscriptions, and the default management groups.
TENANT_SUBSCRIPTIONS: tuple[str, ...] = (
    "11111111-aaaa-0000-0000-000000000001",
    "11111111-aaaa-0000-0000-000000000002",
    "11111111-aaaa-0000-0000-000000000003",
)
DEFAULT_MANAGEMENT_GROUPS: dict[str, list[str]] = {
    "mg-research": [DEMO_SUBSCRIPTION, TENANT_SUBSCRIPTIONS[0]],
    "mg-production": [TENANT_SUBSCRIPTIONS[1], TENANT_SUBSCRIPTIONS[2]],
}
WORKSPACE_KINDS: tuple[str, ...] = ("Default", "Hub", "Project")
_TENANT_LOCATIONS: tuple[str, ...] = (DEMO_LOCATION, SECOND_LOCATION, "eastus")


def tenant_workspace(i: int) -> tuple[str, str, str, str, str, bool]:
    """Workspace ``i`` (0-based) of the many-workspace tenant: (subscription, resource group, name, location,
    kind, holds Jane's data). Spread over 3 subscriptions and 2 resource groups each; every third holds Jane's."""
    sub = TENANT_SUBSCRIPTIONS[i % len(TENANT_SUBSCRIPTIONS)]
    rg = f"rg-team-{(i // len(TENANT_SUBSCRIPTIONS)) % 2 + 1}"
    kind = WORKSPACE_KINDS[(i // 2) % len(WORKSPACE_KINDS)]
    return sub, rg, f"ws-t{i + 1:03d}", _TENANT_LOCATIONS[i % len(_TENANT_LOCATIONS)], kind, i % 3 == 1


def generate(seed: int = 1, scale: float = 1.0, tenant_workspaces: int = 0) -> dict[tuple[str, str, str], Workspace]:
    """All workspaces of the emulator, keyed by ``workspace_key``: the two demo workspaces, then
    ``tenant_workspaces`` more (see ``tenant_workspace``)."""
    workspaces = [_build(spec, seed, scale) for spec in _SPECS]
    for i in range(tenant_workspaces):
        sub, rg, name, location, kind, janes = tenant_workspace(i)
        spec = _Spec(name, location, name, AUTOMATION, (), (), 0, 0, 0, ("workspaceblobstore",), (), 0, (), (), False)
        ws = _build(spec, seed, scale, sub, rg)
        ws.arm["kind"] = kind
        data_v2.populate_small(ws, AUTOMATION, JANE if janes else None)
        workspaces.append(ws)
    return {ws.key: ws for ws in workspaces}


def _build(spec: _Spec, seed: int, scale: float, sub: str = DEMO_SUBSCRIPTION, rg: str = DEMO_RESOURCE_GROUP) -> Workspace:
    g = _Gen(seed, spec)
    ws_path = workspace_path(sub, rg, spec.name)
    rg_path = f"/subscriptions/{sub}/resourceGroups/{rg}"
    creator, creator_type = (spec.owner.upn, "User") if spec.owner.upn else (spec.owner.object_id, "Application")
    arm = {
        "id": ws_path,
        "name": spec.name,
        "type": f"{PROVIDER}/workspaces",
        "location": spec.location,
        "sku": {"name": "Basic", "tier": "Basic"},
        "identity": {"type": "SystemAssigned", "principalId": g.guid(), "tenantId": TENANT_ID},
        "properties": {
            "workspaceId": g.guid(),
            "friendlyName": spec.friendly,
            "description": f"{spec.friendly} workspace",
            "creationTime": "2019-12-01T10:00:00.0000000Z",
            "provisioningState": "Succeeded",
            "keyVault": f"{rg_path}/providers/Microsoft.KeyVault/vaults/kv-{spec.name}",
            "applicationInsights": f"{rg_path}/providers/microsoft.insights/components/ai-{spec.name}",
            "containerRegistry": f"{rg_path}/providers/Microsoft.ContainerRegistry/registries/acr{spec.name.replace('-', '')}",
            "storageAccount": f"{rg_path}/providers/Microsoft.Storage/storageAccounts/sa{spec.name.replace('-', '')}",
            "discoveryUrl": f"https://{spec.location}.experiments.azureml.net/discovery",
        },
        "systemData": {
            "createdBy": creator,
            "createdByType": creator_type,
            "createdAt": "2019-12-01T10:00:00Z",
            "lastModifiedBy": creator,
            "lastModifiedByType": creator_type,
            "lastModifiedAt": "2019-12-01T10:00:00Z",
        },
    }
    ws = Workspace(sub, rg, spec.name, spec.location, arm)
    _computes(ws, g, spec, scale)
    _experiments(ws, g, spec, scale)
    _tasks(ws, g, spec, scale)
    _datastores(ws, g, spec, scale)
    _mms(ws, g, spec, scale)
    if spec.demo:
        _compute_assigned_to_jane(ws)
        data_v2.populate_demo(ws, JANE, JOHN, AUTOMATION)
    elif spec.name == SECOND_WORKSPACE:
        data_v2.populate_small(ws, JOHN)
    _workspace_secrets(ws)
    return ws


def _compute_assigned_to_jane(ws: Workspace) -> None:
    """A compute instance John created for Jane (added after the runs, so their targets do not change)."""
    props = copy.deepcopy(ws.computes.get("ci-jane") or {}).get("properties", {})
    props["description"] = "notebook VM set up by John for Jane"
    props["properties"]["createdBy"] = JOHN.compute_created_by()
    props["properties"]["personalComputeInstanceSettings"] = {
        "assignedUser": {"objectId": JANE.object_id, "tenantId": JANE.tenant_id}
    }
    ws.computes.add(
        "ci-for-jane",
        {
            "id": f"{ws.path}/computes/ci-for-jane",
            "type": f"{PROVIDER}/workspaces/computes",
            "name": "ci-for-jane",
            "location": ws.location,
            "properties": props,
            "systemData": {"createdBy": JOHN.upn, "createdByType": "User", "createdAt": _ts(600)},
        },
    )


def _workspace_secrets(ws: Workspace) -> None:
    """Answers of the secret-returning POST actions on the workspace and its computes (never to be called)."""
    tag = f"{ws.name}"
    ws.secret_bodies[(ws.arm["id"].lower(), "listkeys")] = {
        "userStorageKey": f"{SECRET_MARKER}userStorageKey-{tag}",
        "userStorageResourceId": ws.arm["properties"]["storageAccount"],
        "appInsightsInstrumentationKey": f"{SECRET_MARKER}appInsightsKey-{tag}",
        "containerRegistryCredentials": {
            "location": ws.location,
            "username": f"acr{tag}",
            "passwords": [{"name": "password", "value": f"{SECRET_MARKER}acrPassword-{tag}"}],
        },
        "notebookAccessKeys": {"primaryAccessKey": f"{SECRET_MARKER}notebookKey-{tag}", "secondaryAccessKey": None},
    }
    for compute in ws.computes.values():
        name = compute["name"]
        ws.secret_bodies[(compute["id"].lower(), "listkeys")] = {
            "computeType": compute["properties"]["computeType"],
            "adminUserName": "azureuser",
            "adminUserPassword": f"{SECRET_MARKER}adminPassword-{tag}-{name}",
            "sshPrivateKey": f"{SECRET_MARKER}sshPrivateKey-{tag}-{name}",
        }
        ws.secret_bodies[(compute["id"].lower(), "listnodes")] = {
            "nodes": [
                {
                    "nodeId": f"tvm-{name}-1",
                    "privateIpAddress": "10.0.0.4",
                    "publicIpAddress": "203.0.113.10",
                    "port": 50000,
                    "nodeState": "idle",
                }
            ],
            "nextLink": None,
        }


def _computes(ws: Workspace, g: _Gen, spec: _Spec, scale: float) -> None:
    for i, name in enumerate(_names(spec.computes, scale, "cluster-{i}")):
        owner = JANE if name == "ci-jane" else JOHN if name == "ci-john" else None
        props: JSON
        if owner is not None:
            props = {
                "computeType": "ComputeInstance",
                "description": f"notebook VM of {owner.name}",
                "createdOn": _ts(60 * i),
                "provisioningState": "Succeeded",
                "properties": {
                    "vmSize": "STANDARD_DS3_V2",
                    "state": "Running",
                    "sshSettings": {"sshPublicAccess": "Disabled", "adminUserName": "azureuser"},
                    "createdBy": owner.compute_created_by(),
                    "computeInstanceAuthorizationType": "personal",
                    "personalComputeInstanceSettings": {
                        "assignedUser": {"objectId": owner.object_id, "tenantId": owner.tenant_id}
                    },
                },
            }
        else:
            props = {
                "computeType": "AmlCompute",
                "description": "training cluster",
                "createdOn": _ts(60 * i),
                "provisioningState": "Succeeded",
                "properties": {
                    "vmSize": "STANDARD_D2_V2",
                    "scaleSettings": {"minNodeCount": 0, "maxNodeCount": 4},
                },
            }
        item: JSON = {
            "id": f"{ws.path}/computes/{name}",
            "type": f"{PROVIDER}/workspaces/computes",
            "name": name,
            "location": ws.location,
            "properties": props,
        }
        if owner is not None:
            item["systemData"] = {
                "createdBy": owner.upn,
                "createdByType": "User",
                "createdAt": _ts(60 * i),
            }
        ws.computes.add(name, item)


_RUN_CREATORS: tuple[Subject, ...] = (JANE, JOHN, JANE, AUTOMATION)


def _experiments(ws: Workspace, g: _Gen, spec: _Spec, scale: float) -> None:
    n_runs = _scaled(spec.runs_per_experiment, scale)
    n_metrics = _scaled(spec.metrics_per_experiment, scale)
    pipeline_index = 0
    computes = ws.computes.keys()
    for ei, exp_name in enumerate(_names(spec.experiments, scale, "experiment-{i}")):
        exp_id = g.guid()
        runs = Table()
        pipeline_slot = min(2, n_runs - 1)
        for ri in range(n_runs):
            minute = 1000 * ei + 30 * ri
            epoch = int((_EPOCH + timedelta(minutes=minute)).timestamp())
            is_pipeline = ri == pipeline_slot
            creator = (JANE if ei % 2 == 0 else JOHN) if is_pipeline else _RUN_CREATORS[ri % len(_RUN_CREATORS)]
            run_id = g.guid() if is_pipeline else f"{exp_name}_{epoch}_{g.hex(8)}"
            description: str | None = None
            tags: JSON = {}
            if spec.demo and ei == 0 and creator is JOHN and not is_pipeline:
                description = f"Retrained at the request of {JANE.object_id} (see ticket)"
            if spec.demo and ei == 0 and creator is AUTOMATION:
                tags = {"batch": EMBEDDED_GUID_DECOY}
            run: JSON = {
                "runNumber": ri + 1,
                "rootRunId": run_id,
                "experimentId": exp_id,
                "createdUtc": _ts(minute, millis=True),
                "createdBy": creator.created_by(),
                "userId": creator.object_id,
                "token": None,
                "tokenExpiryTimeUtc": None,
                "error": None,
                "warnings": None,
                "revision": 7,
                "runId": run_id,
                "parentRunId": None,
                "status": "Completed",
                "startTimeUtc": _ts(minute, millis=True),
                "endTimeUtc": _ts(minute + 5, millis=True),
                "heartbeatEnabled": False,
                "options": {"generateDataContainerIdIfNotSpecified": True},
                "name": None,
                "dataContainerId": f"dcid.{run_id}",
                "description": description,
                "hidden": False,
                "runType": PIPELINE_RUN_TYPE if is_pipeline else "azureml.scriptrun",
                "properties": (
                    {"azureml.runsource": PIPELINE_RUN_TYPE, "azureml.pipelineComponent": "pipelinerun"}
                    if is_pipeline
                    else {"azureml.git.repository_uri": "https://example.invalid/repo.git"}
                ),
                "scriptName": None if is_pipeline else "train.py",
                "target": None if is_pipeline else computes[ri % len(computes)],
                "tags": tags,
                "runDefinition": None,
                "createdFrom": None,
                "cancelUri": None,
                "diagnosticsUri": None,
            }
            runs.add(run_id, run)
            _artifacts(ws, run, minute)
            if is_pipeline:
                _pipeline(ws, g, run, exp_name, creator, pipeline_index)
                pipeline_index += 1
        last = runs.values()[-1]
        ws.experiments.add(
            exp_name,
            {
                "experimentId": exp_id,
                "name": exp_name,
                "description": None,
                "createdUtc": _ts(1000 * ei),
                "tags": {},
                "archivedTime": None,
                "latestCreatedRunCreatedUtc": last["createdUtc"],
                "latestCreatedRunId": last["runId"],
            },
        )
        ws.runs[exp_name] = runs
        metrics = Table()
        run_list = [r for r in runs.values() if r["runType"] != PIPELINE_RUN_TYPE] or runs.values()
        names = ("accuracy", "loss", "auc", "f1")
        for mi in range(n_metrics):
            run = run_list[mi % len(run_list)]
            metric_name = names[mi % len(names)]
            metric_id = g.guid()
            metrics.add(
                metric_id,
                {
                    "runId": run["runId"],
                    "metricId": metric_id,
                    "dataContainerId": run["dataContainerId"],
                    "metricType": "azureml.v1.scalar",
                    "createdUtc": _ts(1000 * ei + mi + 1),
                    "name": metric_name,
                    "description": "",
                    "label": "",
                    "numCells": 1,
                    "dataLocation": None,
                    "cells": [{metric_name: round(0.5 + g.rng.random() / 2, 4)}],
                    "schema": {
                        "numProperties": 1,
                        "properties": [{"propertyId": metric_name, "name": metric_name, "type": "float"}],
                    },
                },
            )
        ws.metrics[exp_name] = metrics


def _artifacts(ws: Workspace, run: JSON, minute: int) -> None:
    container = run["dataContainerId"]
    if run["runType"] == PIPELINE_RUN_TYPE:
        paths = ("logs/azureml/executionlogs.txt", "logs/azureml/stderrlogs.txt")
    else:
        paths = ("outputs/model.pkl", "logs/azureml/70_driver_log.txt")
    table = Table()
    for i, path in enumerate(paths):
        artifact_id = f"ExperimentRun/{container}/{path}"
        table.add(
            artifact_id,
            {
                "artifactId": artifact_id,
                "origin": "ExperimentRun",
                "container": container,
                "path": path,
                "etag": f'"0x8D7{minute:06d}{i}"',
                "createdTime": _ts(minute + 5),
                "dataPath": None,
            },
        )
    ws.artifacts[run["runId"]] = table


def _pipeline(ws: Workspace, g: _Gen, run: JSON, exp_name: str, creator: Subject, index: int) -> None:
    """Aether objects for one pipeline run. Graph i uses modules i and i+1 and data source i//2, so
    neighbouring graphs share modules and data sources; every other pipeline has a template."""
    modules = ws.aether["Modules"]
    sources = ws.aether["DataSources"]
    templates = ws.aether["Templates"]
    prefix = ws.name

    def module(i: int) -> str:
        module_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{prefix}/module/{i}"))
        if module_id not in modules:
            modules[module_id] = {
                "id": module_id,
                "name": ("prep-data", "train-model", "evaluate", "register")[i % 4] + f"-{i}",
                "description": "pipeline step",
                "version": "1",
                "moduleType": "None",
                "entityStatus": "Active",
                "createdDate": _ts(10 * i),
                "familyId": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{prefix}/family/{i % 4}")),
                "createdBy": {"userObjectId": creator.object_id, "userTenantId": creator.tenant_id, "userName": creator.name},
            }
        return module_id

    def source(i: int) -> str:
        source_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{prefix}/datasource/{i}"))
        if source_id not in sources:
            sources[source_id] = {
                "id": source_id,
                "name": f"dataset-{i}",
                "dataSourceType": "DataReference",
                "description": "registered input",
                "dataLocation": {
                    "storageType": "AzureBlob",
                    "dataStoreName": "workspaceblobstore",
                    "relativePath": f"datasets/input-{i}",
                },
                "createdDate": _ts(20 * i),
            }
        return source_id

    graph_id = g.guid()
    module_ids = [module(index), module(index + 1)]
    source_ids = [source(index // 2)]
    ws.aether["Graphs"][graph_id] = {
        "id": graph_id,
        "moduleNodes": [{"id": g.hex(8), "moduleId": mid, "comment": None} for mid in module_ids],
        "datasourceNodes": [{"id": g.hex(8), "dataSourceId": sid} for sid in source_ids],
        "edges": [
            {
                "sourceOutputPort": {"nodeId": "source", "portName": "output"},
                "destinationInputPort": {"nodeId": "step", "portName": "input"},
            }
        ],
        "entityInterface": {"parameters": []},
    }
    experiment: JSON = {
        "id": run["runId"],
        "name": f"{exp_name} pipeline run",
        "graphId": graph_id,
        "experimentName": exp_name,
        "runHistoryExperimentName": exp_name,
        "status": {"statusCode": "Finished", "runStatus": "Completed"},
        "createdBy": {"userObjectId": creator.object_id, "userTenantId": creator.tenant_id, "userName": creator.name},
        "submittedBy": creator.name,
        "createdDate": run["createdUtc"],
        "description": None,
    }
    if index % 2 == 0:
        template_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{prefix}/template/{index}"))
        templates[template_id] = {
            "id": template_id,
            "name": f"{exp_name}-template",
            "description": "published pipeline template",
            "graphId": graph_id,
            "createdDate": run["createdUtc"],
        }
        experiment["templateId"] = template_id
    ws.aether["Experiments"][run["runId"]] = experiment
    if index == 0:  # an object nothing references: must not count as reachable
        orphan = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{prefix}/module/orphan"))
        modules[orphan] = {"id": orphan, "name": "orphan-module", "version": "1", "moduleType": "None"}


_TASK_CREATORS: tuple[Subject, ...] = (JANE, JOHN, AUTOMATION)


def _tasks(ws: Workspace, g: _Gen, spec: _Spec, scale: float) -> None:
    runs = list(ws.all_runs())
    for i in range(_scaled(spec.tasks, scale)):
        creator = _TASK_CREATORS[i % len(_TASK_CREATORS)]
        run = runs[i % len(runs)]
        task_id = g.guid()
        recipients = [creator.upn] if creator.upn else []
        ws.tasks.add(
            task_id,
            {
                "id": task_id,
                "name": f"notify-{i + 1}",
                "taskType": "RunCompletionNotification",
                "status": "Active",
                "createdTime": _ts(5000 + i),
                "createdBy": creator.created_by(),
                "target": {"experimentName": _experiment_of(ws, run["runId"]), "runId": run["runId"]},
                "recipients": recipients,
                "message": "Your run has completed.",
            },
        )


def _experiment_of(ws: Workspace, run_id: str) -> str | None:
    for exp_name, runs in ws.runs.items():
        if run_id in runs:
            return exp_name
    return None


def _datastores(ws: Workspace, g: _Gen, spec: _Spec, scale: float) -> None:
    account = f"sa{ws.name.replace('-', '')}"
    for i, name in enumerate(_names(spec.datastores, scale, "datastore_{i}")):
        kind = ("AzureBlob", "AzureFile", "AzureDataLakeGen2")[i % 3]
        secret = g.hex(12)
        ws.datastores.add(
            name,
            {
                "name": name,
                "dataStoreType": kind,
                "hasBeenValidated": True,
                "tags": {},
                "azureStorageSection": {
                    "accountName": account,
                    "containerName": f"azureml-{name}-{g.hex(8)}",
                    "endpoint": "core.windows.net",
                    "protocol": "https",
                    "credentialType": "AccountKey",
                    "credential": f"{SECRET_MARKER}credential-{ws.name}-{name}-{secret}",
                    "accountKey": f"{SECRET_MARKER}accountKey-{ws.name}-{name}-{secret}",
                    "sasToken": f"?sv=2019-02-02&sig={SECRET_MARKER}sasToken-{ws.name}-{name}-{secret}",
                    "connectionString": (
                        f"DefaultEndpointsProtocol=https;AccountName={account};"
                        f"AccountKey={SECRET_MARKER}connectionString-{ws.name}-{name}-{secret}"
                    ),
                    "blobCacheTimeout": 0,
                    "isSas": False,
                },
                "servicePrincipalSection": {
                    "authorityUrl": "https://login.microsoftonline.com",
                    "resourceUri": "https://storage.azure.com/",
                    "tenantId": TENANT_ID,
                    "clientId": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{ws.name}/sp/{name}")),
                    "clientSecret": f"{SECRET_MARKER}clientSecret-{ws.name}-{name}-{secret}",
                },
                "createdTime": _ts(4000 + i),
            },
        )


_MMS_CREATORS: tuple[Subject, ...] = (JANE, JANE, JOHN, JOHN, AUTOMATION)


def _mms(ws: Workspace, g: _Gen, spec: _Spec, scale: float) -> None:
    script_runs = [(exp, r) for exp, runs in ws.runs.items() for r in runs.values() if r["runType"] != PIPELINE_RUN_TYPE]
    models = ws.mms["models"]
    for i, model_id in enumerate(_names(spec.models, scale, "model-{i}:1")):
        name, _, version = model_id.rpartition(":")
        creator = _MMS_CREATORS[i % len(_MMS_CREATORS)]
        exp_name, run = script_runs[i % len(script_runs)]
        tags: JSON = {"owner": creator.name.split()[0].lower()}
        if spec.demo and model_id == "churn-model:1":
            tags["reviewer"] = JOHN.upn  # a mention of John in a record created by Jane
        asset_hex = g.hex(16)
        models.add(
            model_id,
            {
                "id": model_id,
                "name": name,
                "version": int(version),
                "framework": "ScikitLearn",
                "frameworkVersion": "0.22",
                "description": f"{name} model",
                "mimeType": "application/json",
                "url": f"aml://asset/{asset_hex}",
                "createdTime": _ts(6000 + i, millis=True),
                "modifiedTime": _ts(6000 + i, millis=True),
                "unpack": False,
                "runId": run["runId"],
                "experimentName": exp_name,
                "kvTags": tags,
                "properties": {},
                "datasets": [],
                "createdBy": creator.created_by(),
            },
        )
    assets = ws.mms["assets"]
    for i in range(_scaled(spec.assets, scale)):
        asset_id = g.hex(16)
        creator = _MMS_CREATORS[(i + 2) % len(_MMS_CREATORS)]
        _, run = script_runs[i % len(script_runs)]
        description = f"checksum {EMBEDDED_GUID_DECOY}" if spec.demo and i == 0 else None
        assets.add(
            asset_id,
            {
                "id": asset_id,
                "name": f"asset-{i + 1}",
                "description": description,
                "artifacts": [{"id": f"ExperimentRun/{run['dataContainerId']}/outputs/model.pkl", "prefix": None}],
                "kvTags": {},
                "properties": {},
                "runid": run["runId"],
                "meta": {},
                "createdTime": _ts(6500 + i, millis=True),
                "createdBy": creator.created_by(),
            },
        )
    model_ids = models.keys()
    images = ws.mms["images"]
    for i, image_id in enumerate(_names(spec.images, scale, "image-{i}:1")):
        name, _, version = image_id.rpartition(":")
        creator = _MMS_CREATORS[i % len(_MMS_CREATORS)]
        images.add(
            image_id,
            {
                "id": image_id,
                "name": name,
                "version": int(version),
                "description": "",
                "kvTags": {},
                "properties": {},
                "createdTime": _ts(7000 + i),
                "modifiedTime": _ts(7000 + i),
                "autoDelete": True,
                "imageType": "Docker",
                "imageFlavor": "WebApiContainer",
                "creationState": "Succeeded",
                "modelIds": [model_ids[i % len(model_ids)]],
                "imageLocation": f"acr{ws.name.replace('-', '')}.azurecr.io/{name}:{version}",
                "imageBuildLogUri": f"https://sa{ws.name.replace('-', '')}.blob.core.windows.net/logs/{name}.txt",
                "operationId": g.guid(),
                "driverProgram": "score.py",
                "targetRuntime": {"targetArchitecture": "Amd64", "osType": "Linux", "runtimeType": "Python"},
                "createdBy": creator.created_by(),
            },
        )
    image_ids = images.keys()
    services = ws.mms["services"]
    for i, service_id in enumerate(_names(spec.services, scale, "service-{i}")):
        creator = _MMS_CREATORS[(i * 2) % len(_MMS_CREATORS)]
        services.add(
            service_id,
            {
                "id": service_id,
                "name": service_id,
                "description": None,
                "kvTags": {},
                "properties": {},
                "operationId": g.guid(),
                "state": "Healthy",
                "createdTime": _ts(8000 + i),
                "updatedTime": _ts(8000 + i),
                "error": None,
                "computeType": "ACI",
                "deploymentType": "HttpRealtimeEndpoint",
                "imageId": image_ids[i % len(image_ids)],
                "scoringUri": f"http://{service_id}.{ws.location}.azurecontainer.io/score",
                "authEnabled": False,
                "sslEnabled": False,
                "appInsightsEnabled": False,
                "createdBy": creator.created_by(),
            },
        )


# --------------------------------------------------------------------------------------------- truth


def pipeline_ids(ws: Workspace) -> dict[str, set[str]]:
    """Aether ids reachable from pipeline runs, by truth kind (what a client can find)."""
    found: dict[str, set[str]] = {kind: set() for kind in AETHER_KINDS.values()}
    for run in ws.all_runs():
        if run.get("runType") != PIPELINE_RUN_TYPE:
            continue
        experiment = ws.aether["Experiments"].get(run["runId"])
        if experiment is None:
            continue
        found["pipelineExperiments"].add(experiment["id"])
        template_id = experiment.get("templateId")
        if template_id and template_id in ws.aether["Templates"]:
            found["pipelineTemplates"].add(template_id)
        graph = ws.aether["Graphs"].get(experiment.get("graphId") or "")
        if graph is None:
            continue
        found["pipelineGraphs"].add(graph["id"])
        for node in graph.get("moduleNodes", []):
            if node["moduleId"] in ws.aether["Modules"]:
                found["pipelineModules"].add(node["moduleId"])
        for node in graph.get("datasourceNodes", []):
            if node["dataSourceId"] in ws.aether["DataSources"]:
                found["pipelineDataSources"].add(node["dataSourceId"])
    return found


def records(ws: Workspace) -> Iterator[tuple[str, str, JSON]]:
    """Every record of a workspace as a client would export it: (kind, id, served body)."""
    yield "workspace", ws.arm["id"], ws.arm
    for compute in ws.computes.values():
        yield "computes", compute["id"], compute
    for experiment in ws.experiments.values():
        yield "experiments", experiment["experimentId"], experiment
    for run in ws.all_runs():
        yield "runs", run["runId"], run
    for metrics in ws.metrics.values():
        for metric in metrics.values():
            yield "metrics", metric["metricId"], metric
    for artifacts in ws.artifacts.values():
        for artifact in artifacts.values():
            yield "artifacts", artifact["artifactId"], artifact
    for task in ws.tasks.values():
        yield "tasks", task["id"], task
    for datastore in ws.datastores.values():
        yield "datastores", datastore["name"], datastore_view(datastore, include_secret=False)
    for kind in MMS_KINDS:
        for item in ws.mms[kind].values():
            yield kind, item["id"], item
    reachable = pipeline_ids(ws)
    for segment, kind in AETHER_KINDS.items():
        for item_id in sorted(reachable[kind]):
            yield kind, item_id, ws.aether[segment][item_id]
    yield from data_v2.v2_records(ws)


def empty_ids() -> dict[str, set[str]]:
    return {kind: set() for kind in KINDS}


def _mention_pattern(value: str) -> re.Pattern[str]:
    return re.compile(r"(?<![0-9A-Za-z_.+-])" + re.escape(value) + r"(?![0-9A-Za-z_-])", re.IGNORECASE)


def names_subject(record: JSON, object_id: str, upn: str | None = None, emails: Iterable[str] = ()) -> bool:
    """True when any string in ``record`` contains the object id, UPN or an e-mail alias as a whole token
    (any letter case).

    ``xaaaaaaaa-...-000000000001y`` is not a mention of ``aaaaaaaa-...-000000000001``, ``mjane@...`` not of ``jane@...``.
    """
    values = [object_id, *([upn] if upn else []), *emails]
    text = json.dumps(record, ensure_ascii=False)
    return any(_mention_pattern(v).search(text) for v in values)


def expected_ids(ws: Workspace | None, subject: Subject | None = None) -> dict[str, set[str]]:
    """Ids per kind of the workspace's current data; with ``subject``, only records that name them."""
    result = empty_ids()
    if ws is None:
        return result
    for kind, item_id, body in records(ws):
        if subject is None or names_subject(body, subject.object_id, subject.upn, subject.emails):
            result[kind].add(item_id)
    return result


def all_secret_values(workspaces: Iterable[Workspace]) -> set[str]:
    """Every credential value the emulator can serve (to grep an export bundle for): v1 datastores, v2
    datastore and connection ``credentials``, and the answers of listKeys / listSecrets / token / listNodes."""
    values: set[str] = set()
    for ws in workspaces:
        for datastore in ws.datastores.values():
            for section, name in DATASTORE_SECRET_FIELDS:
                value = datastore.get(section, {}).get(name)
                if isinstance(value, str):
                    values.add(value)
        for family in ws.v2.values():
            values.update(secret_strings(family.values()))
        values.update(secret_strings(list(ws.secret_bodies.values())))
    return values
