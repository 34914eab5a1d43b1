"""The layout shows the architecture: every module imports, clipxai's imports form no cycle, and the
torch-free half (runtime, common, eval and the shared modules) never reaches the torch half."""

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


def test_runtime_sub_packages_by_concern():
    runtime = PACKAGE / "runtime"
    assert {p.name for p in runtime.iterdir() if (p / "__init__.py").exists()} >= {"text", "cpu", "nvidia", "cli"}
    assert not (runtime / "evaluation.py").exists() and (PACKAGE / "eval" / "segmentation.py").exists()
