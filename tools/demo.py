"""`make demo`: Azurite + the workspace emulator on free loopback ports, then an export, a dry-run delete
and a real delete through the real pipeline (`dsr process`, exactly what an operator runs), a short
human summary of each, and the bundle copied to ./demo-output/. Everything started is stopped, also on
Ctrl-C.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from azure.storage.blob import BlobServiceClient

from shared.domain.catalog import load_catalog
from tools.azurite import ROOT, Azurite
from tools.emulator import DEMO_LOCATION, DEMO_RESOURCE_GROUP, DEMO_SUBSCRIPTION, DEMO_WORKSPACE, EmulatorServer

OUTPUT = Path(os.environ.get("DSR_DEMO_OUTPUT") or ROOT / "demo-output").resolve()
TARGET = {
    "subscriptionId": DEMO_SUBSCRIPTION,
    "resourceGroup": DEMO_RESOURCE_GROUP,
    "workspace": DEMO_WORKSPACE,
    "location": DEMO_LOCATION,
}
BOLD, DIM, GREEN, RED, RESET = (
    ("\033[1m", "\033[2m", "\033[32m", "\033[31m", "\033[0m") if sys.stdout.isatty() else ("", "", "", "", "")
)


def _dsr() -> str:
    candidate = Path(sys.executable).with_name("dsr")
    return str(candidate) if candidate.exists() else "dsr"


def run_request(env: dict[str, str], request: dict[str, Any], log_file: Path) -> tuple[int, dict[str, Any], float]:
    started = time.monotonic()
    with log_file.open("ab") as log:
        proc = subprocess.run(
            [_dsr(), "process", "-"], input=json.dumps(request).encode(), env=env, stdout=subprocess.PIPE, stderr=log, check=False
        )
    elapsed = time.monotonic() - started
    line = proc.stdout.decode().strip().splitlines()[-1]
    with (OUTPUT / "outcome-events.jsonl").open("a") as events:
        events.write(line + "\n")
    return proc.returncode, json.loads(line), elapsed


def _status_line(event: dict[str, Any], code: int, elapsed: float) -> str:
    status = event["data"]["status"]
    color = GREEN if status == "completed" else RED
    compact = json.dumps(
        {k: v for k, v in event.items() if k != "data"}
        | {"data": {k: event["data"][k] for k in ("requestId", "operation", "status", "errors") if k in event["data"]}}
    )
    return f"{color}{BOLD}{event['type']}{RESET}  (exit {code}, {elapsed:.1f} s)\n  {DIM}event: {compact}{RESET}"


def _family(kind: str) -> str:
    """'v2' for today's Azure ML kinds (ARM child resources of the workspace), 'v1' for the 2020 ones."""
    return "v2" if load_catalog().kinds[kind].family == "arm" and kind not in ("workspace", "computes") else "v1"


def _short(item_id: str) -> str:
    """An ARM id without its workspace prefix, for the screen."""
    return item_id.split("/workspaces/", 1)[-1].split("/", 1)[-1] if "/workspaces/" in item_id else item_id


def show_export(env: dict[str, str], event: dict[str, Any], code: int, elapsed: float) -> None:
    print(_status_line(event, code, elapsed))
    for workspace, counts in event["data"]["counts"].items():
        print(f"  {DIM}{workspace}{RESET}")
        for family in ("v1", "v2"):
            shown = [f"{kind} {n}" for kind, n in counts.items() if _family(kind) == family]
            print(f"    {family}: " + " · ".join(shown))
    bundle = event["data"]["bundle"]
    container = BlobServiceClient.from_connection_string(env["DSR_STORAGE"]).get_container_client(bundle["container"])
    local = OUTPUT / bundle["prefix"].rstrip("/")
    for blob in container.list_blobs(name_starts_with=bundle["prefix"]):
        path = OUTPUT / blob.name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(container.download_blob(blob.name).readall())
    print(f"  bundle: blob container {bundle['container']!r}, manifest {bundle['manifest']!r}")
    print(f"  copied to: {BOLD}{local.relative_to(OUTPUT.parent)}/{RESET}  (open manifest.json first)")


def show_delete(event: dict[str, Any], code: int, elapsed: float) -> None:
    print(_status_line(event, code, elapsed))
    for workspace, kinds in event["data"]["counts"].items():
        print(f"  {DIM}{workspace}{RESET}")
        for kind, c in kinds.items():
            if not c["planned"]:
                continue
            if event["data"]["dryRun"]:
                print(f"    {_family(kind)} {kind:<28} would delete {c['planned']:>3}")
            else:
                print(
                    f"    {_family(kind)} {kind:<28} planned {c['planned']:>3}  deleted {c['deleted']:>3}  "
                    f"absent {c['absent']:>3}  failed {c['failed']:>3}  verified gone {c['verified']:>3}"
                )
    listing = event["data"].get("plan") or event["data"].get("items") or []
    shown = [i for i in listing if _family(i["kind"]) == "v1"][:3] + [i for i in listing if _family(i["kind"]) == "v2"][:5]
    for item in shown:
        mark = "" if "verified" not in item else ("  verified" if item["verified"] else "  NOT verified")
        print(f"      {item['kind']:<18} {_short(item['id']):<44} {item['result']}{mark}")
    if len(listing) > len(shown):
        print(
            f"      ... and {len(listing) - len(shown)} more (every action is in the audit blob "
            f"{event['data']['audit']['container']}/{event['data']['audit']['blob']})"
        )


def main() -> int:
    OUTPUT.mkdir(exist_ok=True)
    log_file = OUTPUT / "dsr.log"
    log_file.write_bytes(b"")
    (OUTPUT / "outcome-events.jsonl").write_text("")
    azurite = Azurite()
    emulator = EmulatorServer()

    def stop(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        print(f"{BOLD}aml-dsr demo{RESET}: starting Azurite and the workspace emulator on free loopback ports ...")
        azurite.start()
        emulator.start()
        env = {**os.environ, **emulator.settings(), "DSR_STORAGE": azurite.connection_string, "DSR_LRO_DEADLINE_SECONDS": "60"}
        env.pop("ServiceBusConnection__fullyQualifiedNamespace", None)
        print(
            f"  Azurite blob  {azurite.blob_endpoint}\n  emulator      {emulator.base_url}  "
            f"(managed identity at {emulator.settings()['IDENTITY_ENDPOINT']})\n"
        )

        print(f"{BOLD}1. Export everything in {DEMO_WORKSPACE}, v1 and v2 kinds{RESET}  (dsr process, request DEMO-EXPORT-1)")
        code, event, elapsed = run_request(
            env,
            {
                "schemaVersion": "1",
                "requestId": "DEMO-EXPORT-1",
                "operation": "export",
                "targets": [TARGET],
                "requestedBy": "make demo",
            },
            log_file,
        )
        show_export(env, event, code, elapsed)

        print(f"\n{BOLD}2. Delete every deletable kind, dry run{RESET}  (request DEMO-DELETE-1, dryRun: true)")
        delete = {
            "schemaVersion": "1",
            "requestId": "DEMO-DELETE-1",
            "operation": "delete",
            "targets": [TARGET],
            "dryRun": True,  # every delete kind: v1 models/assets/images/services and the v2 kinds, in dependency order
            "requestedBy": "make demo",
        }
        code, event, elapsed = run_request(env, delete, log_file)
        show_delete(event, code, elapsed)

        print(f"\n{BOLD}3. Delete for real{RESET}  (request DEMO-DELETE-2): delete, then read each item back")
        code, event, elapsed = run_request(env, {**delete, "requestId": "DEMO-DELETE-2", "dryRun": False}, log_file)
        show_delete(event, code, elapsed)

        print(f"\nOutcome events (CloudEvents): {(OUTPUT / 'outcome-events.jsonl').relative_to(OUTPUT.parent)}")
        print(f"Logs (JSON lines) of the three runs: {log_file.relative_to(OUTPUT.parent)}")
        print("Next: README.md, 'Run it as an Azure Functions app'.")
        return 0
    except KeyboardInterrupt:
        print("\ninterrupted: stopping what the demo started", file=sys.stderr)
        return 130
    finally:
        emulator.stop()
        azurite.stop()


if __name__ == "__main__":
    sys.exit(main())
