"""Small helpers for the tests (no fixtures)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def read_manifest(bundle: Path) -> dict:
    return json.loads((Path(bundle) / "manifest.json").read_text())


def run_bundle(bundle: Path, x: np.ndarray):
    import onnxruntime as ort
    sess = ort.InferenceSession(str(Path(bundle) / "model.onnx"), providers=["CPUExecutionProvider"])
    return sess.run(["similarity", "scores", "heatmaps"], {"image": x})


def random_images(n: int, size: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 3, size, size)).astype(np.float32)


def leftovers(parent: Path) -> list[str]:
    """Staging directories the exporter may have left in parent."""
    return [p.name for p in Path(parent).iterdir() if ".partial-" in p.name]


def gated_segment(target: str, after: int, gate: Path, args: list[str]):
    """``clipxai segment ARGS`` in a subprocess whose ``target`` method ("module:Class.method") blocks after
    its ``after``-th call: it creates ``gate/ready`` and waits until ``gate/sent`` exists. A test sends
    its signal once ``ready`` exists, then creates ``sent``: the stop is exercised at a known point,
    whatever the machine's load."""
    import subprocess
    import sys
    module, attr = target.split(":")
    cls, method = attr.split(".")
    script = f"""
import importlib, os, sys, time
from pathlib import Path
gate = Path({str(gate)!r})
owner = getattr(importlib.import_module({module!r}), {cls!r})
original = getattr(owner, {method!r})
calls = [0]
def gated(*a, **k):
    out = original(*a, **k)
    calls[0] += 1
    if calls[0] == {after}:
        (gate / "ready").touch()
        while not (gate / "sent").exists():
            time.sleep(0.01)
    return out
setattr(owner, {method!r}, gated)
from clipxai.cli.segment import segment
segment(sys.argv[1:])
"""
    gate.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen([sys.executable, "-c", script, *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=gate)


def signal_at_gate(proc, gate: Path, sig, timeout: float = 300.0) -> tuple[str, str]:
    """Wait for ``gate/ready`` (or the process's end), send ``sig``, open the gate; (stdout, stderr)."""
    import time
    deadline = time.monotonic() + timeout
    while not (gate / "ready").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert (gate / "ready").exists(), proc.communicate(timeout=60)
    proc.send_signal(sig)
    (gate / "sent").touch()
    return proc.communicate(timeout=timeout)


def commands_in_fresh_python(arg_lists: list[list[str]], module: str):
    """Run ``clipxai <args>`` for each of arg_lists in one fresh interpreter, then print whether ``module`` was
    imported: the CompletedProcess, its last stdout line "<MODULE>" (imported) or "NO-<MODULE>"."""
    import subprocess
    import sys
    tag = module.upper()
    code = ("import sys\nfrom clipxai.cli.main import main\n"
            f"for args in {arg_lists!r}:\n"
            "    try:\n        main(args)\n    except SystemExit:\n        pass\n"
            f"print({tag!r} if {module!r} in sys.modules else 'NO-{tag}')\n")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
