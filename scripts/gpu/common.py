"""What the GPU check's Python steps share (scripts/gpu/run.sh runs them; docs/deployment.md, "The GPU check").

- ``load_plugins()``: imports the modules named in ``$GPU_CHECK_PLUGINS`` (comma-separated paths,
  e.g. tests/tiny.py), so a dry run can use the tests' tiny backbones and mask models;
- ``cli()``: ``python scripts/gpu/common.py ARGS`` is the ``clipxai`` command with those plugins loaded;
- ``append_markdown`` / ``write_json``: every step writes its result as it ends (a killed run keeps it).

A maintainer tool, not part of the installed package.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

GPU = Path(__file__).resolve().parent
ROOT = GPU.parent.parent
ROCKET = ROOT / "examples" / "rocket.jpg"
CLASSES = "rocket,sky,smoke,tree,ground"
sys.path[:0] = [str(GPU.parent)]  # scripts/: harness.py


def load_plugins() -> None:
    """Import every file named in $GPU_CHECK_PLUGINS (they register backbones / mask models)."""
    for path in filter(None, os.environ.get("GPU_CHECK_PLUGINS", "").split(",")):
        path = Path(path) if Path(path).is_absolute() else ROOT / path
        sys.path.insert(0, str(path.parent))  # tests/tiny_sam.py imports its neighbours by name
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[path.stem] = module
        spec.loader.exec_module(module)


def torch_device(name: str):
    """The torch device for the reference: 'cuda' (TF32 off, so fp32 is fp32) or 'cpu'."""
    import torch
    if name == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    return torch.device(name)


def write_json(path: str | Path, data) -> None:
    Path(path).write_text(json.dumps(data, indent=1, default=str) + "\n")


def append_markdown(path: str | Path | None, text: str) -> None:
    """Append a section to the run's summary.md (and print it)."""
    print(text)
    if path:
        with open(path, "a") as f:
            f.write(text.rstrip() + "\n\n")


def md_table(header: list[str], rows: list[list]) -> str:
    line = lambda cells: "| " + " | ".join(str(c) for c in cells) + " |"  # noqa: E731
    return "\n".join([line(header), "|" + "---|" * len(header), *(line(r) for r in rows)])


def cli() -> None:
    load_plugins()
    from clipxai.cli.main import main
    sys.argv[0] = "clipxai"
    main()


if __name__ == "__main__":
    cli()
