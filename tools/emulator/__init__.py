"""Workspace emulator: a loopback HTTP server that impersonates the Azure ML endpoints aml-dsr calls
(``shared/reference/endpoints.md``) and the App Service managed-identity token endpoint.

    from tools.emulator import EmulatorServer, EmulatorConfig
    with EmulatorServer(EmulatorConfig(faults={"429": 0.1}, seed=7)) as emu:
        os.environ.update(emu.settings())
        ...
        assert exported_ids == emu.expected_ids(sub, rg, ws)

CLI: ``python -m tools.emulator --help`` (``tools.emulator.cli.main(argv)``).
"""

from tools.emulator.cli import main
from tools.emulator.config import EmulatorConfig, parse_faults
from tools.emulator.core import MANAGEMENT_RESOURCE, SYSTEM_ASSIGNED_CLIENT_ID
from tools.emulator.data import (
    AUTOMATION,
    DEFAULT_MANAGEMENT_GROUPS,
    DEMO_LOCATION,
    DEMO_RESOURCE_GROUP,
    DEMO_SUBSCRIPTION,
    DEMO_WORKSPACE,
    EMBEDDED_GUID_DECOY,
    JANE,
    JANE_WITH_EMAIL,
    JOHN,
    KINDS,
    PIPELINE_RUN_TYPE,
    SECOND_LOCATION,
    SECOND_WORKSPACE,
    SECRET_MARKER,
    TENANT_ID,
    TENANT_SUBSCRIPTIONS,
    V1_KINDS,
    WORKSPACE_KINDS,
    Subject,
    names_subject,
    tenant_workspace,
)
from tools.emulator.data_v2 import (
    FAMILIES,
    JANE_EMAIL,
    JANE_EMAIL_DECOY,
    V2_CONTAINER_KINDS,
    V2_DELETE_KINDS,
    V2_KINDS,
)
from tools.emulator.server import EmulatorServer

__all__ = [
    "AUTOMATION",
    "DEFAULT_MANAGEMENT_GROUPS",
    "DEMO_LOCATION",
    "DEMO_RESOURCE_GROUP",
    "DEMO_SUBSCRIPTION",
    "DEMO_WORKSPACE",
    "EMBEDDED_GUID_DECOY",
    "FAMILIES",
    "JANE",
    "JANE_EMAIL",
    "JANE_EMAIL_DECOY",
    "JANE_WITH_EMAIL",
    "JOHN",
    "KINDS",
    "MANAGEMENT_RESOURCE",
    "PIPELINE_RUN_TYPE",
    "SECOND_LOCATION",
    "SECOND_WORKSPACE",
    "SECRET_MARKER",
    "SYSTEM_ASSIGNED_CLIENT_ID",
    "TENANT_ID",
    "TENANT_SUBSCRIPTIONS",
    "V1_KINDS",
    "V2_CONTAINER_KINDS",
    "V2_DELETE_KINDS",
    "V2_KINDS",
    "WORKSPACE_KINDS",
    "EmulatorConfig",
    "EmulatorServer",
    "Subject",
    "main",
    "names_subject",
    "parse_faults",
    "tenant_workspace",
]
