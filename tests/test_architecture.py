"""The package's shape: no import circles between modules, and no import that runs back up the layers."""

from __future__ import annotations

import ast
from pathlib import Path

import inbedder

ROOT = Path(inbedder.__file__).parent
LAYERS = [
    {"_version", "errors", "extras", "adapter_storage"},
    {"options", "readout", "postprocess", "model_settings", "wheel_parts"},
    {"models", "tables", "written", "interface", "fingerprints"},
    {"cache", "loading", "templates", "backends", "pooling", "runner", "reencoder"},
    {"validation", "vocabulary", "stored_runs", "st_surface", "ray_rows"},
    {"embedder"},
    {"guided_map"},
    {"guided", "generic"},
    {"clustering", "eval", "training", "training_config", "server_settings", "serving", "distributed", "integrations"},
    {"cli", "__main__"},
]
"""Each module's layer, lowest first, by its name under ``inbedder`` (a package stands for its modules)."""


def modules() -> dict[str, ast.Module]:
    found = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(("inbedder", *parts[:-1])) if parts[-1] == "__init__" else ".".join(("inbedder", *parts))
        found[name] = ast.parse(path.read_text(encoding="utf-8"))
    return found


def imports(tree: ast.Module, names: set[str], module_level: bool) -> set[str]:
    """The inbedder modules ``tree`` imports (at run time: imports under ``TYPE_CHECKING`` are left out)."""

    def resolve(target: str) -> str:
        while target not in names and "." in target:
            target = target.rsplit(".", 1)[0]
        return target

    def type_only(node: ast.AST) -> bool:
        return isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"

    nodes: list[ast.AST] = []
    pending: list[ast.AST] = list(tree.body)
    while pending:
        node = pending.pop()
        if type_only(node):
            continue
        nodes.append(node)
        if not module_level or isinstance(node, (ast.If, ast.Try)):
            pending.extend(ast.iter_child_nodes(node))
    found = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("inbedder"):
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                found.add(full if full in names else resolve(node.module))
        elif isinstance(node, ast.Import):
            found |= {resolve(a.name) for a in node.names if a.name.startswith("inbedder")}
    return found - {"inbedder"}


def layer(module: str) -> int:
    first = module.split(".")[1] if "." in module else ""
    return next(i for i, names in enumerate(LAYERS) if first in names)


def test_every_module_has_a_layer():
    for name in modules():
        if name != "inbedder":
            layer(name)  # StopIteration: a new top-level module needs its place in LAYERS


def test_no_import_circles_between_modules():
    found = modules()
    graph = {name: imports(tree, set(found), module_level=True) - {name} for name, tree in found.items()}
    state: dict[str, str] = {}

    def visit(name: str, path: list[str]) -> None:
        state[name] = "open"
        for target in sorted(graph[name]):
            assert state.get(target) != "open", f"import circle: {' -> '.join([*path, target])}"
            if target not in state:
                visit(target, [*path, target])
        state[name] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])


def test_no_import_runs_back_up_the_layers():
    found = modules()
    upward = [
        f"{name} -> {target}"
        for name, tree in found.items()
        if name != "inbedder"
        for target in imports(tree, set(found), module_level=False)
        if layer(target) > layer(name)
    ]
    assert upward == []


EDGES = ("inbedder.clustering", "inbedder.serving", "inbedder.distributed", "inbedder.cli", "inbedder.eval")
EDGES += ("inbedder.integrations",)
"""The modules that take an embedder from outside: they use what ``InBedder`` makes public, nothing more."""
WIRING = {"backend", "head", "prompt_tokenizer", "runner"}
"""``InBedder``'s parts: the edges ask the model (``watch``, ``explain_clusters``, ``fingerprint``), not these."""
INNER = ("inbedder.embedder", "inbedder.backends")


def reaches_inside(tree: ast.Module) -> list[str]:
    """Where ``tree`` imports a private name of the embedder or the backends, or reads one of InBedder's parts."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(INNER):
            found += [
                f"line {node.lineno}: imports {node.module}.{a.name}" for a in node.names if a.name.startswith("_")
            ]
        elif isinstance(node, ast.Attribute) and node.attr in WIRING:
            found.append(f"line {node.lineno}: .{node.attr}")
    return sorted(found)


def test_the_edges_use_the_embedders_public_surface_only():
    reached = {
        name: where for name, tree in modules().items() if name.startswith(EDGES) and (where := reaches_inside(tree))
    }
    assert reached == {}


def test_the_edge_check_finds_what_it_looks_for():
    planted = ast.parse(
        "from inbedder.embedder import _as_texts\ndef f(model):\n    return model.backend.model, model.runner\n"
    )
    assert reaches_inside(planted) == [
        "line 1: imports inbedder.embedder._as_texts",
        "line 3: .backend",
        "line 3: .runner",
    ]


MAX_FUNCTION_LINES = 60
MAX_MODULE_LINES = 450


def too_long() -> set[str]:
    found = set()
    for path in sorted(ROOT.rglob("*.py")):
        name = str(path.relative_to(ROOT.parent))
        source = path.read_text(encoding="utf-8")
        if source.count("\n") > MAX_MODULE_LINES:
            found.add(name)
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                if node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES:
                    found.add(f"{name}:{node.name}")
    return found


def test_no_function_over_60_lines_and_no_module_over_450():
    assert too_long() == set()
