"""The hostile-message corpus (tests/fixtures/hostile/cases.json) as bytes, one message per case."""

from __future__ import annotations

import base64
import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CORPUS = Path(__file__).parents[1] / "fixtures" / "hostile" / "cases.json"


@dataclass(frozen=True)
class HostileCase:
    name: str
    why: str
    body: bytes
    code: str
    field: str

    def __repr__(self) -> str:  # pytest ids and failure messages: not 64 KiB of brackets
        return f"HostileCase({self.name!r}, {self.code!r}, {self.field!r}, {len(self.body)} bytes)"


def _generate(spec: dict[str, Any], base: dict[str, Any]) -> bytes:
    if "pad" in spec:
        return json.dumps({**base, "requestedBy": "x" * spec["pad"]}).encode()
    if "nest" in spec:
        return b"[" * spec["nest"] + b"]" * spec["nest"]
    if "digits" in spec:
        return b'{"schemaVersion": "1", "requestId": "HOSTILE-000", "dryRun": ' + b"9" * spec["digits"] + b"}"
    if "fields" in spec:
        return json.dumps({**base, **{f"f{i:04d}": 0 for i in range(spec["fields"])}}).encode()
    if "targets" in spec:
        target = base["targets"][0]
        targets = [{**target, "workspace": f"ws-{i:03d}"} for i in range(spec["targets"])]
        return json.dumps({**base, "targets": targets}).encode()
    raise ValueError(f"unknown generator {spec}")


def _wrap(value: Any, envelope: str) -> Any:
    if envelope == "cloudevent":
        return {"specversion": "1.0", "id": "evt-1", "source": "/hostile", "type": "Dsr.Request", "data": value}
    if envelope == "eventgrid":
        return {"id": "evt-1", "eventType": "Dsr.Request", "subject": "x", "dataVersion": "1", "data": value}
    raise ValueError(envelope)


def message_bytes(case: dict[str, Any], base: dict[str, Any]) -> bytes:
    if "base64" in case:
        return base64.b64decode(case["base64"])
    if "text" in case:
        return case["text"].encode("utf-8", "surrogatepass")
    if "generate" in case:
        return _generate(case["generate"], base)
    if "body" in case:
        value: Any = case["body"]
    else:
        value = copy.deepcopy(base)
        value.update(case.get("patch", {}))
        if "target" in case:
            value["targets"][0].update(case["target"])
    if "envelope" in case:
        value = _wrap(value, case["envelope"])
    return json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")


def load() -> tuple[dict[str, Any], list[HostileCase]]:
    """The valid base message and every hostile case."""
    doc = json.loads(CORPUS.read_text(encoding="utf-8"))
    base = doc["base"]
    cases = [
        HostileCase(c["name"], c["why"], message_bytes(c, base), c["expect"]["code"], c["expect"]["field"]) for c in doc["cases"]
    ]
    return base, cases


BASE, CASES = load()
