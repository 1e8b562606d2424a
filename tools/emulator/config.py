"""Knobs of the workspace emulator: one dataclass, settable from CLI flags, Python and the control API."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

FAULT_DROP = "drop"


def parse_faults(spec: str | dict[str, Any] | None) -> dict[str, float]:
    """Parse ``429=0.1,503=0.05,drop=0.02`` (or a dict) into ``{kind: probability}``.

    A kind is ``drop`` (close the connection without a response) or an HTTP status 400-599.
    """
    if spec is None:
        return {}
    items: list[tuple[str, Any]]
    if isinstance(spec, str):
        items = []
        for part in spec.split(","):
            part = part.strip()
            if not part:
                continue
            name, sep, value = part.partition("=")
            if not sep:
                raise ValueError(f"fault {part!r}: expected KIND=PROBABILITY")
            items.append((name.strip(), value.strip()))
    elif isinstance(spec, dict):
        items = list(spec.items())
    else:
        raise ValueError("faults: expected a string like '429=0.1,drop=0.02' or a mapping")
    faults: dict[str, float] = {}
    for raw_name, raw_value in items:
        name = str(raw_name).strip().lower()
        if name != FAULT_DROP and not (name.isdigit() and 400 <= int(name) <= 599):
            raise ValueError(f"fault {raw_name!r}: expected 'drop' or an HTTP status 400-599")
        try:
            probability = float(raw_value)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"fault {raw_name!r}: probability {raw_value!r} is not a number") from exc
        if not 0.0 <= probability <= 1.0 or math.isnan(probability):
            raise ValueError(f"fault {raw_name!r}: probability must be within [0, 1]")
        if probability > 0:
            faults[name] = probability
    if sum(faults.values()) > 1.0 + 1e-9:
        raise ValueError("faults: probabilities add up to more than 1")
    return faults


@dataclass
class EmulatorConfig:
    """Every knob of the emulator. ``EmulatorServer.configure(**knobs)`` merges changes at run time.

    Changing ``seed`` or ``scale`` at run time regenerates the data (the request log is kept).
    """

    host: str = "127.0.0.1"
    port: int = 0  # 0 = a free port
    seed: int = 1  # data generation and fault draws
    scale: float = 1.0  # multiplies item counts (the named demo items always exist)
    page_size: int = 2  # items per page of every list (client hints such as count/$top are ignored)
    latency_ms: int = 0  # sleep per AML request
    rate: float | None = None  # token bucket refill, AML requests per second; None = no rate limit
    burst: int | None = None  # token bucket size; default max(1, rate)
    rate_families: list[str] | None = None  # families with a bucket each ("arm", "exp", ...); None = one for all
    rate_headers: bool = False  # remaining counts on every family's answers, not only ARM's
    arm_headers: bool = True  # remaining counts on ARM's answers (False, with rate_headers False: on none)
    faults: dict[str, float] = field(default_factory=dict)  # {"429": 0.1, "503": 0.05, "drop": 0.02}
    retry_after: int = 0  # Retry-After (seconds) of injected 429/503 faults
    lro_polls: int = 1  # ARM workspace delete: polls answered InProgress/202 before Succeeded
    lro_retry_after: int = 0  # Retry-After (seconds) on the ARM 202 responses
    service_delete_polls: int = 1  # MMS service delete: polls answered Running before Succeeded
    drop_delete_response: list[str] | int = field(default_factory=list)  # ids, or a count of deletes
    v2_lro_polls: int = 2  # v2 / compute deletes (202 + Location): polls answered InProgress/202 before Succeeded
    rate_per_subscription: bool = True  # one token bucket per subscription (ARM's rule); False = one for all
    tenant_workspaces: int = 0  # extra workspaces over 3 subscriptions (see data.tenant_workspace)
    management_groups: dict[str, list[str]] | None = None  # Resource Graph: group -> subscriptions; None = default map
    rg_quota: int = 15  # Resource Graph queries per caller ...
    rg_window_seconds: float = 5.0  # ... in any window of this many seconds; 429 beyond
    rg_page_size: int = 1000  # Resource Graph rows per page at most (options.$top can only lower it)
    token_ttl: int = 3600  # lifetime (seconds) of issued access tokens
    identity_header: str | None = None  # IDENTITY_HEADER secret; random when None

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        self.faults = parse_faults(self.faults)
        if self.page_size < 1:
            raise ValueError("page_size must be >= 1")
        if self.scale <= 0:
            raise ValueError("scale must be > 0")
        if self.latency_ms < 0:
            raise ValueError("latency_ms must be >= 0")
        if self.rate is not None and self.rate <= 0:
            self.rate = None
        if self.burst is not None and self.burst < 1:
            raise ValueError("burst must be >= 1")
        for name in ("retry_after", "lro_polls", "lro_retry_after", "service_delete_polls", "v2_lro_polls", "tenant_workspaces"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        if self.rg_quota < 1 or self.rg_window_seconds <= 0 or not 1 <= self.rg_page_size <= 1000:
            raise ValueError("rg_quota must be >= 1, rg_window_seconds > 0, rg_page_size within [1, 1000]")
        groups = self.management_groups
        if groups is not None and (not isinstance(groups, dict) or not all(isinstance(v, list | tuple) for v in groups.values())):
            raise ValueError("management_groups: expected {group name: [subscription id, ...]}")
        if self.token_ttl < 60:
            raise ValueError("token_ttl must be >= 60")
        drop = self.drop_delete_response
        if isinstance(drop, bool) or not isinstance(drop, int | list | tuple):
            raise ValueError("drop_delete_response: expected a list of ids or a count")
        if isinstance(drop, tuple):
            self.drop_delete_response = list(drop)
        if isinstance(drop, int) and drop < 0:
            raise ValueError("drop_delete_response: a count must be >= 0")

    @property
    def effective_burst(self) -> int:
        if self.burst is not None:
            return self.burst
        return max(1, math.ceil(self.rate or 1))

    def merged(self, changes: dict[str, Any]) -> EmulatorConfig:
        """A new, validated config with ``changes`` applied; unknown knobs are an error."""
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise ValueError(f"unknown emulator knob(s): {', '.join(unknown)}")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data.pop("identity_header", None)  # a secret: never echoed by the control API
        return data
