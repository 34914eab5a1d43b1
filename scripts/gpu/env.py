#!/usr/bin/env python
"""GPU check, environment: Python, torch (and its GPU), onnxruntime (version, providers, whether the
CUDA provider's libraries load), and which of the modules the check imports are missing.

    python scripts/gpu/env.py --out env.json --md summary.md
"""

from __future__ import annotations

import argparse
import importlib
import platform

from common import append_markdown, md_table, write_json

# What the exporter, the runtime, the SAM export and the tests import (docs/deployment.md, "The GPU check").
MODULES = ("numpy", "PIL", "click", "ftfy", "regex", "platformdirs", "filelock", "threadpoolctl", "torch",
           "torchvision", "open_clip", "onnx", "onnx_graphsurgeon", "onnxruntime", "hydra", "iopath", "sam2",
           "pytest")


def version(name: str) -> str:
    try:
        module = importlib.import_module(name)
    except Exception as e:  # noqa: BLE001
        return f"MISSING ({type(e).__name__}: {e})"
    return str(getattr(module, "__version__", "present"))


def cuda_provider_loads() -> str:
    """Open a one-node graph on the CUDA provider: 'yes', or why not."""
    import numpy as np
    import onnxruntime as ort
    from onnx import TensorProto, helper
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return "no CUDAExecutionProvider in this onnxruntime"
    info = [helper.make_tensor_value_info(x, TensorProto.FLOAT, [2]) for x in "ab"]
    graph = helper.make_graph([helper.make_node("Relu", ["a"], ["b"])], "g", info[:1], info[1:])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    try:
        s = ort.InferenceSession(model.SerializeToString(), providers=["CUDAExecutionProvider"])
        s.run(None, {"a": np.ones(2, np.float32)})
        return "yes" if s.get_providers()[0] == "CUDAExecutionProvider" else f"fell back to {s.get_providers()}"
    except Exception as e:  # noqa: BLE001
        return f"no: {type(e).__name__}: {str(e).splitlines()[0]}"


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out")
    ap.add_argument("--md")
    a = ap.parse_args()
    env = {"python": platform.python_version(), "modules": {m: version(m) for m in MODULES}}
    try:
        import torch
        env["torch_cuda"] = torch.version.cuda
        env["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except Exception as e:  # noqa: BLE001
        env["torch_error"] = str(e)
    try:
        import onnxruntime as ort
        env["onnxruntime_file"] = ort.__file__
        env["providers"] = ort.get_available_providers()
        env["cuda_provider_loads"] = cuda_provider_loads()
    except Exception as e:  # noqa: BLE001
        env["onnxruntime_error"] = str(e)
    env["missing"] = [m for m, v in env["modules"].items() if v.startswith("MISSING")]
    write_json(a.out, env)
    rows = [["Python", env["python"]], ["GPU (torch)", env.get("gpu")], ["torch CUDA", env.get("torch_cuda")],
            ["onnxruntime", f"{env['modules']['onnxruntime']} ({env.get('onnxruntime_file')})"],
            ["providers", ", ".join(env.get("providers", []))], ["CUDA provider loads", env.get("cuda_provider_loads")],
            ["missing modules", ", ".join(env["missing"]) or "none"]]
    append_markdown(a.md, "## Environment\n\n" + md_table(["what", "value"], rows))


if __name__ == "__main__":
    main()
