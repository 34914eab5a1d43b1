"""The layout shows the architecture: every module imports, clipxai's imports form no cycle, the
torch-free half (runtime, apps, cli, common, eval and the shared modules) never reaches the torch half,
only the commands import click, and no function outside a click command takes more than 8 parameters."""

from __future__ import annotations

import ast
import graphlib
import importlib
import pkgutil
from pathlib import Path

import clipxai

PACKAGE = Path(clipxai.__file__).parent
TORCH_SIDE = ("clipxai.export", "clipxai.models")
TORCH_PACKAGES = {"torch", "torchvision", "open_clip", "onnx_graphsurgeon", "timm"}
# The command layer: clipxai/cli and the exporter's two command modules (they live beside the torch code
# they call, and import it only when they run).
COMMAND_MODULES = ("clipxai.cli", "clipxai.export.cli", "clipxai.export.sam_cli")
MAX_PARAMETERS = 8


def _modules() -> list[str]:
    return sorted(m.name for m in pkgutil.walk_packages([str(PACKAGE)], prefix="clipxai."))


def _path(module: str) -> Path:
    rel = Path(*module.split(".")[1:])
    return PACKAGE / rel / "__init__.py" if (PACKAGE / rel).is_dir() else PACKAGE / rel.with_suffix(".py")


def _imports(module: str) -> tuple[set[str], set[str]]:
    """(clipxai modules, other top-level packages) that ``module`` imports anywhere in its code,
    function-level imports included."""
    names = set(_modules()) | {"clipxai"}
    ours, others = set(), set()
    for node in ast.walk(ast.parse(_path(module).read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        for t in targets:
            if t.split(".")[0] != "clipxai":
                others.add(t.split(".")[0])
            elif t in names:
                ours.add(t)
    ours.discard(module)
    return ours, others


def test_every_module_imports():
    for name in _modules():
        importlib.import_module(name)


def test_the_import_graph_has_no_cycle():
    graph = {m: {d for d in _imports(m)[0] if d != "clipxai"} for m in _modules()}
    # A package's own __init__ re-exporting its modules is not a cycle with them.
    for m, deps in graph.items():
        deps.difference_update({p for p in deps if m.startswith(p + ".") and _path(p).name == "__init__.py"})
    graphlib.TopologicalSorter(graph).prepare()  # raises CycleError naming the cycle


def test_the_torch_free_half_never_reaches_the_torch_half():
    graph = {m: _imports(m) for m in _modules()}
    torch_free = [m for m in graph if not m.startswith(TORCH_SIDE)]
    for start in torch_free:
        seen, stack = set(), [start]
        while stack:
            m = stack.pop()
            if m in seen or m not in graph:
                continue
            seen.add(m)
            assert not m.startswith(TORCH_SIDE), f"{start} reaches {m}"
            assert not graph[m][1] & TORCH_PACKAGES, f"{start} reaches {m}, which imports {graph[m][1] & TORCH_PACKAGES}"
            stack.extend(graph[m][0])


def test_only_the_commands_import_click():
    """The library (runtime, apps, cluster, export pipeline) reports through a Reporter; the runtime
    above all never imports click."""
    users = {m for m in _modules() if "click" in _imports(m)[1]}
    assert users, "no command imports click?"
    assert not {m for m in users if m.startswith("clipxai.runtime")}, "the runtime imports click"
    assert not {m for m in users if not m.startswith(COMMAND_MODULES)}, users


def test_only_the_commands_handle_signals():
    """Ctrl-C and SIGTERM become a stop request in the command (clipxai/cli/console.py); the library
    only checks the stop event it is given."""
    users = {m for m in _modules() if "signal" in _imports(m)[1]}
    assert not {m for m in users if not m.startswith(COMMAND_MODULES)}, users


def test_no_function_outside_a_command_takes_more_than_8_parameters():
    too_many = []
    for m in _modules():
        for node in ast.walk(ast.parse(_path(m).read_text())):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            if any("command" in ast.unparse(d) or "group" in ast.unparse(d) for d in node.decorator_list):
                continue  # a click command: one parameter per flag
            a = node.args
            names = [x.arg for x in a.posonlyargs + a.args + a.kwonlyargs if x.arg not in ("self", "cls")]
            if len(names) > MAX_PARAMETERS:
                too_many.append(f"{m}.{node.name}: {len(names)}")
    assert not too_many, too_many


def test_packages_by_concern():
    runtime = PACKAGE / "runtime"
    assert {p.name for p in runtime.iterdir() if (p / "__init__.py").exists()} >= {"text", "cpu", "nvidia", "backends"}
    assert not (runtime / "cli").exists() and (PACKAGE / "cli" / "main.py").exists()
    assert {p.name for p in (PACKAGE / "apps").iterdir() if (p / "__init__.py").exists()} >= {"segment", "evaluate"}
    assert not (runtime / "evaluation.py").exists() and (PACKAGE / "eval" / "segmentation.py").exists()
