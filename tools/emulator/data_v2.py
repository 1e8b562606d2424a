"""Azure ML "v2" ARM resources of a workspace (jobs, assets, endpoints, schedules, feature store, connections),
and their truth for tests (``v2_records``, ``expected_deletables``).

Shapes follow the 2024-10-01 examples of Azure/azure-rest-api-specs
(``specification/machinelearningservices/resource-manager/Microsoft.MachineLearningServices/stable/2024-10-01``).
Every item is stored as served: ARM ``id``, ``name``, ``type``, ``properties``, ``systemData`` (and ``tags``,
``location`` for tracked resources: endpoints and deployments).
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tools.emulator.tables import Table

if TYPE_CHECKING:
    from tools.emulator.data import Subject, Workspace

JSON = dict[str, Any]
PROVIDER = "Microsoft.MachineLearningServices"
SECRET_MARKER = "SECRET-"  # same marker as the v1 datastore secrets

# Jane's e-mail alias (not her UPN) and a look-alike that must never count as Jane.
JANE_EMAIL = "jane@contoso.com"
JANE_EMAIL_DECOY = "mjane@contoso.com"


@dataclass(frozen=True)
class Family:
    """One v2 resource family under ``.../workspaces/{ws}/{segment}``."""

    segment: str  # URL segment under the workspace
    kind: str | None  # truth kind of the top-level items (None: served, but not an export kind)
    child_segment: str | None = None  # "versions" or "deployments"
    child_kind: str | None = None
    view: str | None = None  # "archive": listViewType ActiveOnly|ArchivedOnly|All; "schedule": EnabledOnly|DisabledOnly|All
    delete: str = "sync"  # "sync" (200/204), "lro" (202 + Location), "none" (405)
    child_delete: str = "sync"
    actions: tuple[str, ...] = ()  # secret-returning POST actions on a top-level item (compared lower-case)


_ASSETS = (("models", "model"), ("data", "data"), ("environments", "environment"), ("components", "component"), ("codes", "code"))

FAMILIES: tuple[Family, ...] = (
    Family("jobs", "jobs", view="archive", delete="lro"),
    *(
        Family(seg, f"{name}Containers", "versions", f"{name}Versions", view="archive", delete="sync", child_delete="sync")
        for seg, name in _ASSETS
    ),
    Family("featuresets", "featuresetContainers", "versions", "featuresetVersions", "archive", "lro", "lro"),
    Family(
        "featurestoreEntities", "featurestoreEntityContainers", "versions", "featurestoreEntityVersions", "archive", "lro", "lro"
    ),
    Family("onlineEndpoints", "onlineEndpoints", "deployments", "onlineDeployments", None, "lro", "lro", ("listkeys", "token")),
    Family("batchEndpoints", "batchEndpoints", "deployments", "batchDeployments", None, "lro", "lro", ("listkeys",)),
    Family("schedules", "schedules", view="schedule", delete="lro"),
    Family("connections", "connections", delete="none", actions=("listsecrets",)),
    Family("datastores", None, delete="none", actions=("listsecrets",)),
)
FAMILY_BY_SEGMENT: dict[str, Family] = {f.segment.lower(): f for f in FAMILIES}

# Kind names of contract 6.1, in its order.
V2_KINDS: tuple[str, ...] = (
    "jobs",
    "modelContainers",
    "modelVersions",
    "dataContainers",
    "dataVersions",
    "environmentContainers",
    "environmentVersions",
    "componentContainers",
    "componentVersions",
    "codeContainers",
    "codeVersions",
    "connections",
    "onlineEndpoints",
    "onlineDeployments",
    "batchEndpoints",
    "batchDeployments",
    "schedules",
    "featuresetContainers",
    "featuresetVersions",
    "featurestoreEntityContainers",
    "featurestoreEntityVersions",
)
V2_DELETE_KINDS: tuple[str, ...] = (
    "jobs",
    "modelVersions",
    "dataVersions",
    "environmentVersions",
    "componentVersions",
    "codeVersions",
    "onlineDeployments",
    "onlineEndpoints",
    "batchDeployments",
    "batchEndpoints",
    "schedules",
    "featuresetVersions",
    "featurestoreEntityVersions",
    "computeInstances",
)
# Containers deleted along with their versions (contract 6.1: "counted under its *Containers kind").
V2_CONTAINER_KINDS: tuple[str, ...] = tuple(f.kind for f in FAMILIES if f.child_segment == "versions" and f.kind)


# --------------------------------------------------------------------------------------------- helpers


def _stamp(minutes: int) -> str:
    day, minute = divmod(minutes, 24 * 60)
    return f"2024-{1 + day // 28:02d}-{1 + day % 28:02d}T{minute // 60:02d}:{minute % 60:02d}:00.000Z"


def system_data(creator: Subject | str, minutes: int) -> JSON:
    """ARM ``systemData``: a user by sign-in name (UPN, or an e-mail alias given as a string), an app by id."""
    if isinstance(creator, str):
        who, kind = creator, "User"
    elif creator.upn:
        who, kind = creator.upn, "User"
    else:
        who, kind = creator.object_id, "Application"
    return {
        "createdAt": _stamp(minutes),
        "createdBy": who,
        "createdByType": kind,
        "lastModifiedAt": _stamp(minutes + 5),
        "lastModifiedBy": who,
        "lastModifiedByType": kind,
    }


def _secret(ws_name: str, what: str) -> str:
    return f"{SECRET_MARKER}{what}-{ws_name}-{zlib.crc32(f'{ws_name}/{what}'.encode()):08x}"


class _Builder:
    """Adds items to one workspace's v2 tables; every item gets its full ARM id."""

    def __init__(self, ws: Workspace) -> None:
        self.ws = ws
        self.minute = 0

    def _next(self) -> int:
        self.minute += 37
        return self.minute

    def top(self, segment: str, name: str, creator: Subject | str, properties: JSON, tracked: bool = False) -> JSON:
        family = FAMILY_BY_SEGMENT[segment.lower()]
        item: JSON = {
            "id": f"{self.ws.path}/{family.segment}/{name}",
            "name": name,
            "type": f"{PROVIDER}/workspaces/{family.segment}",
            "properties": properties,
            "systemData": system_data(creator, self._next()),
        }
        if tracked:
            item.update({"location": self.ws.location, "tags": {}, "kind": "Managed"})
        self.ws.v2[family.segment].add(name, item)
        self.ws.v2_children[family.segment][name] = self.ws.v2_children[family.segment].get(name) or Table()
        return item

    def child(
        self, segment: str, parent: str, name: str, creator: Subject | str, properties: JSON, tracked: bool = False
    ) -> JSON:
        family = FAMILY_BY_SEGMENT[segment.lower()]
        item: JSON = {
            "id": f"{self.ws.path}/{family.segment}/{parent}/{family.child_segment}/{name}",
            "name": name,
            "type": f"{PROVIDER}/workspaces/{family.segment}/{family.child_segment}",
            "properties": properties,
            "systemData": system_data(creator, self._next()),
        }
        if tracked:
            item.update({"location": self.ws.location, "tags": {}, "kind": "Managed", "sku": {"name": "Default", "capacity": 1}})
        self.ws.v2_children[family.segment][parent].add(name, item)
        return item

    def secret(self, item_id: str, action: str, body: JSON) -> None:
        self.ws.secret_bodies[(item_id.lower(), action.lower())] = body


def empty_v2_tables() -> tuple[dict[str, Table], dict[str, dict[str, Table]]]:
    return {f.segment: Table() for f in FAMILIES}, {f.segment: {} for f in FAMILIES}


# ----------------------------------------------------------------------------------------- generation


def _job(b: _Builder, name: str, creator: Subject | str, *, emails: list[str] | None = None, tags: JSON | None = None,
         archived: bool = False, job_type: str = "Command") -> JSON:  # fmt: skip
    props: JSON = {
        "description": f"{name} job",
        "tags": tags or {},
        "properties": {"azureml.runsource": "azureml.job"},
        "displayName": name,
        "status": "Completed",
        "experimentName": "v2-experiments",
        "computeId": f"{b.ws.path}/computes/cpu-cluster",
        "jobType": job_type,
        "isArchived": archived,
        "identity": {"identityType": "AMLToken"},
        "services": {"Studio": {"jobServiceType": "Studio", "endpoint": f"https://ml.azure.com/runs/{name}"}},
    }
    if job_type == "Command":
        props.update({"command": "python train.py", "environmentId": "azureml:sklearn-env:1", "environmentVariables": {}})
    if emails is not None:
        props["notificationSetting"] = {"emails": emails, "emailOn": ["JobCompleted", "JobFailed"]}
    return b.top("jobs", name, creator, props)


def _asset(b: _Builder, segment: str, name: str, creator: Subject | str, versions: list[tuple[str, Subject | str, JSON]],
           *, archived: bool = False, description: str | None = None) -> None:  # fmt: skip
    latest = versions[-1][0] if versions else None
    b.top(segment, name, creator, {
        "description": description or f"{name} ({segment})",
        "tags": {},
        "properties": {},
        "isArchived": archived,
        "latestVersion": latest,
        "nextVersion": str(int(latest) + 1) if latest and latest.isdigit() else None,
    })  # fmt: skip
    for version, who, extra in versions:
        props: JSON = {
            "description": f"{name}:{version}",
            "tags": {},
            "properties": {},
            "isAnonymous": False,
            "isArchived": False,
        }
        if segment == "models":
            props.update({"modelType": "custom_model", "modelUri": f"azureml://jobs/{name}/outputs/model", "flavors": {}})
        elif segment == "data":
            props.update({"dataType": "uri_folder", "dataUri": f"azureml://datastores/workspaceblobstore/paths/{name}/"})
        elif segment == "environments":
            props.update({"image": "mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu20.04", "osType": "Linux"})
        elif segment == "components":
            props.update({"componentSpec": {"name": name, "type": "command", "command": "python step.py"}})
        elif segment == "codes":
            props.update({"codeUri": f"https://sa.blob.core.windows.net/code/{name}/{version}"})
        elif segment in ("featuresets", "featurestoreEntities"):
            props.update({"stage": "Production", "provisioningState": "Succeeded"})
        props.update(extra)
        b.child(segment, name, version, who, props)


def _endpoint(
    b: _Builder, segment: str, name: str, creator: Subject | str, deployments: list[tuple[str, Subject | str, str]]
) -> None:
    auth = "Key" if segment == "onlineEndpoints" else "AADToken"
    host = "inference.ml.azure.com"
    item = b.top(segment, name, creator, {
        "description": f"{name} endpoint",
        "properties": {},
        "authMode": auth,
        "scoringUri": f"https://{name}.{b.ws.location}.{host}/score",
        "provisioningState": "Succeeded",
        "traffic": {d: 100 // max(1, len(deployments)) for d, _, _ in deployments} if segment == "onlineEndpoints" else None,
    }, tracked=True)  # fmt: skip
    item["identity"] = {"type": "SystemAssigned", "principalId": "00000000-0000-0000-0000-00000000e001", "tenantId": None}
    b.secret(item["id"], "listKeys", {"primaryKey": _secret(b.ws.name, f"{name}-primaryKey"),
                                      "secondaryKey": _secret(b.ws.name, f"{name}-secondaryKey")})  # fmt: skip
    if segment == "onlineEndpoints":
        b.secret(item["id"], "token", {"accessToken": _secret(b.ws.name, f"{name}-accessToken"), "tokenType": "Bearer",
                                       "expiryTimeUtc": 1893456000, "refreshAfterTimeUtc": 1893452400})  # fmt: skip
    for dname, who, model_id in deployments:
        props: JSON = {
            "description": f"{name}/{dname}",
            "properties": {},
            "model": model_id,
            "environmentId": f"{b.ws.path}/environments/sklearn-env/versions/1",
            "environmentVariables": {},
            "provisioningState": "Succeeded",
        }
        if segment == "onlineEndpoints":
            props.update({"endpointComputeType": "Managed", "instanceType": "Standard_DS3_v2", "appInsightsEnabled": False})
        else:
            props.update({"compute": f"{b.ws.path}/computes/cpu-cluster", "maxConcurrencyPerInstance": 1})
        b.child(segment, name, dname, who, props, tracked=True)


def _schedule(b: _Builder, name: str, creator: Subject | str, emails: list[str], enabled: bool) -> None:
    b.top("schedules", name, creator, {
        "description": f"{name} schedule",
        "tags": {},
        "properties": {},
        "displayName": name,
        "isEnabled": enabled,
        "provisioningState": "Succeeded",
        "trigger": {"triggerType": "Cron", "expression": "0 2 * * *", "timeZone": "UTC"},
        "action": {
            "actionType": "CreateJob",
            "jobDefinition": {
                "jobType": "Command",
                "command": "python retrain.py",
                "environmentId": "azureml:sklearn-env:1",
                "notificationSetting": {"emails": emails, "emailOn": ["JobFailed"]},
            },
        },
    })  # fmt: skip


def _connection(b: _Builder, name: str, creator: Subject | str, auth: str, credentials: JSON, metadata: JSON) -> None:
    item = b.top("connections", name, creator, {
        "authType": auth,
        "category": "AzureOpenAI" if auth == "ApiKey" else "AzureSqlDb",
        "target": f"https://{name}.example.invalid/",
        "isSharedToAll": False,
        "metadata": metadata,
        "credentials": credentials,
    })  # fmt: skip
    b.secret(item["id"], "listsecrets", item)


def _datastores(b: _Builder, creator: Subject) -> None:
    """The workspace's (v1) datastores as ARM resources; the credentials carry the same secrets."""
    for i, ds in enumerate(b.ws.datastores.values()):
        section = ds["azureStorageSection"]
        creds = {"credentialsType": "AccountKey", "secrets": {"secretsType": "AccountKey", "key": section["accountKey"]}}
        item = b.top("datastores", ds["name"], creator, {
            "description": f"{ds['name']} datastore",
            "tags": {},
            "properties": None,
            "isDefault": i == 0,
            "credentials": creds,
            "datastoreType": ds["dataStoreType"],
            "accountName": section["accountName"],
            "containerName": section["containerName"],
            "endpoint": "core.windows.net",
            "protocol": "https",
        })  # fmt: skip
        b.secret(item["id"], "listSecrets", creds["secrets"])


def populate_demo(ws: Workspace, jane: Subject, john: Subject, app: Subject) -> None:
    """The demo workspace: every v2 kind, with Jane's and John's records, an app's, decoys and secrets."""
    b = _Builder(ws)
    path = ws.path
    _job(b, "job-jane-train", jane, emails=[JANE_EMAIL])
    _job(b, "job-jane-archived", JANE_EMAIL, tags={"reviewer": john.upn}, archived=True)
    _job(b, "job-john-sweep", john, emails=[jane.upn or ""], job_type="Sweep")
    _job(b, "job-app-nightly", app, tags={"contact": JANE_EMAIL_DECOY}, job_type="Pipeline")
    _job(b, "job-john-archived", john, archived=True)

    churn1 = f"{path}/models/churn-model/versions/1"
    fraud1 = f"{path}/models/fraud-model/versions/1"
    fraud2 = f"{path}/models/fraud-model/versions/2"
    _asset(
        b, "models", "churn-model", jane, [("1", jane, {"tags": {"reviewer": john.upn}}), ("2", JANE_EMAIL, {"isArchived": True})]
    )
    _asset(b, "models", "fraud-model", john, [("1", john, {}), ("2", jane, {})])
    _asset(b, "models", "legacy-model", jane, [("1", jane, {"isArchived": True})], archived=True)
    _asset(b, "data", "customers", jane, [("1", jane, {}), ("2", john, {})])
    _asset(b, "data", "transactions", app, [("1", app, {})], description=f"owner {JANE_EMAIL_DECOY}")
    _asset(b, "environments", "sklearn-env", app, [("1", app, {}), ("2", jane, {})])
    _asset(b, "components", "train-step", jane, [("1", jane, {})])
    _asset(b, "codes", "3f1c9a52-code", jane, [("1", jane, {})])
    _asset(b, "codes", "7b2e4d10-code", john, [("1", john, {})])
    _asset(b, "featuresets", "customer-features", jane, [("1", jane, {}), ("2", john, {"isArchived": True})])
    _asset(b, "featurestoreEntities", "customer", app, [("1", app, {}), ("2", JANE_EMAIL, {})])

    _endpoint(b, "onlineEndpoints", "fraud-ep", john, [("blue", john, fraud1)])
    _endpoint(b, "onlineEndpoints", "churn-ep", JANE_EMAIL, [("green", jane, churn1)])
    _endpoint(b, "batchEndpoints", "batch-scoring", jane, [("default", jane, fraud2)])

    _schedule(b, "sched-nightly-retrain", app, ["Jane@Contoso.com"], enabled=True)  # Jane's alias, other letter case
    _schedule(b, "sched-jane-weekly", jane, [jane.upn or ""], enabled=False)
    _schedule(b, "sched-john-daily", john, [john.upn or ""], enabled=True)

    _connection(b, "openai-conn", jane, "ApiKey", {"key": _secret(ws.name, "openai-conn-key")}, {"ApiType": "Azure"})
    _connection(b, "sql-conn", app, "UsernamePassword",
                {"username": "svc-reader", "password": _secret(ws.name, "sql-conn-password")},
                {"owner": JANE_EMAIL_DECOY})  # fmt: skip
    _datastores(b, jane)


def populate_small(ws: Workspace, creator: Subject, with_subject: Subject | None = None) -> None:
    """A little v2 data: one job and one model version by ``creator``; and, if given, a job and a model
    version created by ``with_subject``."""
    b = _Builder(ws)
    _job(b, f"job-{ws.name}-1", creator)
    versions: list[tuple[str, Subject | str, JSON]] = [("1", creator, {})]
    if with_subject is not None:
        _job(b, f"job-{ws.name}-2", with_subject, emails=[with_subject.upn or ""])
        versions.append(("2", with_subject, {}))
    _asset(b, "models", f"model-{ws.name}", creator, versions)
    _datastores(b, creator)


# --------------------------------------------------------------------------------------------- truth


def v2_records(ws: Workspace) -> Iterator[tuple[str, str, JSON]]:
    """Every v2 record of the truth kinds (archived and disabled included): (kind, ARM id, served body)."""
    for family in FAMILIES:
        if family.kind is None:
            continue
        for item in ws.v2[family.segment].values():
            yield family.kind, item["id"], item
            children = ws.v2_children[family.segment].get(item["name"])
            if family.child_kind and children is not None:
                for child in children.values():
                    yield family.child_kind, child["id"], child


def created_by(body: JSON, subject: Subject) -> bool:
    """``systemData.createdBy`` is the subject's UPN or one of their e-mail aliases (any letter case)."""
    who = str((body.get("systemData") or {}).get("createdBy") or "").lower()
    names = {n.lower() for n in (subject.upn, *subject.emails) if n}
    return bool(who) and who in names


def assigned_to(compute: JSON, subject: Subject) -> bool:
    props = (compute.get("properties") or {}).get("properties") or {}
    user = (props.get("personalComputeInstanceSettings") or {}).get("assignedUser") or {}
    return str(user.get("objectId") or "").lower() == subject.object_id.lower()


def is_compute_instance(compute: JSON) -> bool:
    return (compute.get("properties") or {}).get("computeType") == "ComputeInstance"


def expected_deletables(ws: Workspace | None, subject: Subject | None = None) -> dict[str, set[str]]:
    """ARM ids per delete kind of contract 6.1 (plus the ``*Containers`` deleted along with all their versions).

    Workspace scope (``subject`` None): everything of those kinds; compute instances, never clusters.
    Subject scope: what the subject created (``systemData.createdBy`` = UPN or alias), and the compute
    instances assigned to them whoever created them; a container only when it has versions and all are theirs.
    """
    result: dict[str, set[str]] = {kind: set() for kind in (*V2_DELETE_KINDS, *V2_CONTAINER_KINDS)}
    if ws is None:
        return result
    for kind, item_id, body in v2_records(ws):
        if kind in V2_DELETE_KINDS and (subject is None or created_by(body, subject)):
            result[kind].add(item_id)
    for compute in ws.computes.values():
        if is_compute_instance(compute) and (subject is None or assigned_to(compute, subject)):
            result["computeInstances"].add(compute["id"])
    for family in FAMILIES:
        if family.child_segment != "versions" or not family.kind or not family.child_kind:
            continue
        for container in ws.v2[family.segment].values():
            versions = {v["id"] for v in ws.v2_children[family.segment][container["name"]].values()}
            if subject is None or (versions and versions <= result[family.child_kind]):
                result[family.kind].add(container["id"])
    return result


def secret_strings(value: Any) -> Iterator[str]:
    """Every string holding the secret marker, anywhere in ``value``."""
    if isinstance(value, str):
        if SECRET_MARKER in value:
            yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from secret_strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from secret_strings(item)


def json_mentions(body: JSON, value: str) -> bool:
    """Whether ``value`` appears as a whole JSON string somewhere in ``body`` (a deployment naming a version id)."""
    return json.dumps(value) in json.dumps(body)
