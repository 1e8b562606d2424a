"""The Azure ML custom roles (infra/roles/*.json) grant no secret, no write and no wildcard beyond reads.

aml-dsr reads and deletes; it never needs a POST action, so no action may end in ``/action`` (that is where
``listKeys``, ``listSecrets``, ``token``, ``listNodes`` and ``regenerateKeys`` live). Pure: reads JSON only.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ROLES = ROOT / "infra" / "roles"
OPERATOR = ROLES / "aml-dsr-operator.json"
PURGE = ROLES / "aml-dsr-purge.json"
AML = "Microsoft.MachineLearningServices/"

SECRET_WORDS = re.compile(r"listkeys|listsecrets|secrets|token|listnodes|regeneratekeys|getkeys|credentials", re.IGNORECASE)


def granted(role: dict) -> list[str]:
    return list(role["Actions"]) + list(role["DataActions"])


def problems(role: dict) -> list[str]:
    """What is wrong with one role definition (empty when nothing is)."""
    found = []
    for action in granted(role):
        lowered = action.lower()
        if lowered.endswith("/action"):
            found.append(f"{action}: an /action (secret-returning or otherwise) is never needed")
        if SECRET_WORDS.search(action) and not lowered.endswith("/read"):
            found.append(f"{action}: names a secret")
        if "*" in action and not lowered.endswith("/read"):
            found.append(f"{action}: a wildcard is allowed on reads only")
        if lowered.endswith("/write"):
            found.append(f"{action}: aml-dsr writes nothing in Azure ML")
        if not action.startswith(AML):
            found.append(f"{action}: outside {AML}")
    if any("*" in a for a in role["Actions"]):
        excluded = {a.lower() for a in role["NotActions"]}
        if f"{AML}workspaces/metadata/secrets/read".lower() not in excluded:
            found.append("a wildcard read must exclude workspaces/metadata/secrets/read")
    return found


def load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


@pytest.mark.parametrize("path", sorted(ROLES.glob("*.json")), ids=lambda p: p.name)
def test_each_role_is_a_complete_definition_without_secret_write_or_wildcard_rights(path):
    role = load(path)
    assert {
        "Name",
        "IsCustom",
        "Description",
        "Actions",
        "NotActions",
        "DataActions",
        "NotDataActions",
        "AssignableScopes",
    } <= role.keys()
    assert role["IsCustom"] is True
    assert role["AssignableScopes"]
    assert problems(role) == []


def test_the_operator_reads_everything_in_a_workspace_and_deletes_only_named_kinds():
    role = load(OPERATOR)
    actions = set(role["Actions"])
    assert f"{AML}workspaces/read" in actions
    assert f"{AML}workspaces/*/read" in actions
    deletes = {a for a in actions if a.endswith("/delete")}
    assert f"{AML}workspaces/models/delete" in deletes
    assert f"{AML}workspaces/jobs/delete" in deletes
    assert f"{AML}workspaces/delete" not in deletes, "purging a workspace is the separate aml-dsr-purge role"
    assert role["DataActions"] == []


def test_the_purge_role_holds_the_workspace_delete_and_nothing_else():
    assert set(load(PURGE)["Actions"]) == {f"{AML}workspaces/read", f"{AML}workspaces/delete"}


def test_the_bicep_module_deploys_these_same_files():
    bicep = (ROOT / "infra" / "modules" / "aml-role.bicep").read_text(encoding="utf-8")
    assert "loadJsonContent('../roles/aml-dsr-operator.json')" in bicep
    assert "loadJsonContent('../roles/aml-dsr-purge.json')" in bicep


@pytest.mark.parametrize(
    "bad",
    [
        f"{AML}workspaces/listKeys/action",
        f"{AML}workspaces/datastores/listSecrets/action",
        f"{AML}workspaces/onlineEndpoints/token/action",
        f"{AML}workspaces/*/delete",
        f"{AML}workspaces/*",
        f"{AML}workspaces/models/write",
        "Microsoft.Authorization/roleAssignments/write",
        "*",
    ],
)
def test_the_checker_catches_a_bad_action(bad):
    role = load(OPERATOR)
    role["Actions"] = [*role["Actions"], bad]
    assert problems(role)


def test_the_checker_catches_a_wildcard_read_that_would_reach_secrets():
    role = load(OPERATOR)
    role["NotActions"] = []
    assert problems(role) == ["a wildcard read must exclude workspaces/metadata/secrets/read"]
