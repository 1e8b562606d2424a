"""The folders are the layers, and imports point inward (docs/contract.md names the outside; this the inside).

    entry points (handlers/, shared/cli/) -> shared.bootstrap -> service -> domain
    adapters -> ports (+ domain, settings, logs); nothing deployed imports tools/ or tests/
    the export's scheduler imports no app module; its traversal rules only the domain and listing (NARROWER)

A shortcut (an adapter reaching into the service layer, the domain importing I/O, a cycle) fails here.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEPLOYED = [ROOT / "function_app.py", *sorted((ROOT / "handlers").rglob("*.py")), *sorted((ROOT / "shared").rglob("*.py"))]

# layer -> the layers of the app it may import (its own layer always allowed)
ALLOWED: dict[str, set[str]] = {
    "shared": set(),  # the package marker only
    "shared.domain": set(),
    "shared.ports": {"shared.domain"},
    "shared.logs": {"shared.domain"},
    "shared.telemetry": set(),  # the OpenTelemetry API hooks (shared.telemetry), like shared.logs
    "shared.settings": {"shared.domain"},
    "shared.service": {"shared.domain", "shared.ports", "shared.settings", "shared.logs", "shared.telemetry"},
    "shared.adapters": {"shared.domain", "shared.ports", "shared.settings", "shared.logs", "shared.telemetry"},
    "shared.bootstrap": {
        "shared.domain",
        "shared.ports",
        "shared.settings",
        "shared.logs",
        "shared.telemetry",
        "shared.service",
        "shared.adapters",
    },
    "shared.cli": {"shared.domain", "shared.ports", "shared.settings", "shared.logs", "shared.service", "shared.bootstrap"},
    "handlers": {"shared.domain", "shared.service", "shared.bootstrap", "shared.logs", "shared.ports"},
    "function_app": {"handlers"},
}
SDKS = ("azure", "requests", "urllib3", "msal")  # only adapters talk to the outside (handlers: azure.functions)
# OpenTelemetry: the API (``opentelemetry`` itself: trace, metrics, context, propagation) is a vendor-neutral
# interface with a no-op default, like ``logging``, so any layer may write spans and metrics through
# ``shared.telemetry``; the SDK, its exporters and the wire format do I/O and are adapters' business.
SDK_MODULES = ("opentelemetry.sdk", "opentelemetry.exporter", "opentelemetry.proto", "opentelemetry._logs")

# The export pipeline's parts keep to their part: the scheduler knows nothing of the app (steps are opaque to it),
# the traversal rules do no I/O (no port, no telemetry), and neither knows the export that composes them.
NARROWER: dict[str, set[str]] = {
    "shared.service.scheduler": set(),
    "shared.service.traversal": {"shared.domain", "shared.service.listing"},
}

# Modules whose imports inside functions are deliberate: a Functions worker indexes function_app at cold
# start, so the SDKs (about 0.4 s of imports) load on the first message, not at indexing.
LAZY_IMPORTS_ALLOWED = {
    "shared.bootstrap",
    "shared.adapters.eventgrid",
    "shared.adapters.identity",
    "shared.adapters.telemetry",  # the OpenTelemetry SDK and exporters: only when an exporter is configured
    "handlers.servicebus",
    "handlers.timers",
    "handlers.http",
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_of(module: str) -> str | None:
    best = None
    for layer in ALLOWED:
        if (module == layer or module.startswith(layer + ".")) and (best is None or len(layer) > len(best)):
            best = layer
    return best


def imports_of(path: Path) -> list[tuple[str, int, bool]]:
    """(imported module, line, inside a function) for every import of a file."""
    tree = ast.parse(path.read_text(), str(path))
    found: list[tuple[str, int, bool]] = []

    def visit(node: ast.AST, nested: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = nested or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.Import):
                found.extend((alias.name, child.lineno, nested) for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.level > 0:
                found.append(("." * child.level + (child.module or ""), child.lineno, nested))  # judged as a problem
            elif isinstance(child, ast.ImportFrom) and child.module:
                found.append((child.module, child.lineno, nested))
                found.extend(
                    (f"{child.module}.{alias.name}", child.lineno, nested)
                    for alias in child.names
                    if (ROOT / Path(*child.module.split("."), f"{alias.name}.py")).exists()
                )
            visit(child, inner)

    visit(tree, False)
    return found


def violations_of(module: str, imported: list[tuple[str, int, bool]]) -> list[str]:
    own = layer_of(module)
    assert own is not None, f"{module} belongs to no layer: add it to ALLOWED"
    problems = []
    for name, line, nested in imported:
        if name.startswith("."):
            problems.append(f"{module}:{line} imports {name}: write it absolute, so that its layer can be checked")
            continue
        top = name.split(".")[0]
        if top in ("tools", "tests"):
            problems.append(f"{module}:{line} imports {name}: deployed code never imports {top}/")
            continue
        if (
            (top in SDKS or any(name == m or name.startswith(m + ".") for m in SDK_MODULES))
            and own != "shared.adapters"
            and not (own == "handlers" and name.startswith("azure.functions"))
            and not (own == "function_app" and name.startswith("azure.functions"))
        ):
            problems.append(f"{module}:{line} imports the SDK {name}: only shared/adapters/ may")
        target = layer_of(name)
        if target is not None and target != own and target not in ALLOWED[own]:
            problems.append(f"{module}:{line} imports {name}: {own} may not depend on {target}")
        narrow = NARROWER.get(module)
        if narrow is not None and target is not None and not any(name == m or name.startswith(m + ".") for m in narrow):
            problems.append(f"{module}:{line} imports {name}: {module} may use only {sorted(narrow) or 'no app module'}")
        if nested and module not in LAZY_IMPORTS_ALLOWED and (target is not None or top in SDKS or top == "opentelemetry"):
            problems.append(f"{module}:{line} imports {name} inside a function: move it to the top")
    return problems


def test_every_deployed_module_keeps_to_its_layer() -> None:
    problems = [p for path in DEPLOYED for p in violations_of(module_name(path), imports_of(path))]
    assert problems == []


def test_there_is_no_import_cycle() -> None:
    graph = {module_name(p): {n for n, _, nested in imports_of(p) if not nested and layer_of(n)} for p in DEPLOYED}
    graph = {m: {n for n in deps if n in graph and n != m} for m, deps in graph.items()}
    visiting: list[str] = []
    done: set[str] = set()

    def walk(node: str) -> None:
        if node in done:
            return
        assert node not in visiting, f"import cycle: {' -> '.join([*visiting[visiting.index(node) :], node])}"
        visiting.append(node)
        for nxt in sorted(graph[node]):
            walk(nxt)
        visiting.pop()
        done.add(node)

    for module in sorted(graph):
        walk(module)


@pytest.mark.parametrize(
    ("module", "source", "expected"),
    [
        ("shared.adapters.blob", "from shared.service.state import StateStore", "may not depend on shared.service"),
        ("shared.domain.contract", "import requests", "only shared/adapters/ may"),
        ("shared.service.export", "from tools.emulator import JANE", "never imports tools/"),
        ("shared.service.export", "from ..adapters import blob", "write it absolute"),
        ("shared.service.export", "def f():\n    from shared.domain.catalog import Catalog", "inside a function"),
        ("handlers.servicebus", "from shared.adapters.servicebus import X", "may not depend on shared.adapters"),
        ("shared.service.processor", "from opentelemetry.sdk.trace import TracerProvider", "only shared/adapters/ may"),
        ("shared.telemetry", "from shared.service.processor import handle", "may not depend on shared.service"),
        ("shared.service.scheduler", "from shared.domain.catalog import Catalog", "may use only no app module"),
        ("shared.service.traversal", "from shared.ports import AzureML", "may use only"),
        ("shared.service.traversal", "import shared.telemetry as telemetry", "may use only"),
    ],
)
def test_a_shortcut_is_caught(tmp_path: Path, module: str, source: str, expected: str) -> None:
    file = tmp_path / "m.py"
    file.write_text(source + "\n")
    assert any(expected in p for p in violations_of(module, imports_of(file)))
