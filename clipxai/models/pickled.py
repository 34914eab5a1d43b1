"""Reading a pickled checkpoint (``.pt``, ``.pth``, ``.bin``) without running any of its code.

``torch.load(weights_only=True)`` unpickles tensors and plain containers only. A file it
refuses holds Python objects besides its tensors; torch's message then advises re-running
with ``weights_only=False``, which would run whatever code the file carries. That advice is
never shown: the error says the file is not a plain weights file and how to convert one
safely (``NOT_PLAIN``).
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path

from clipxai.errors import WeightsError

NOT_PLAIN = ("{name}: not a plain weights file: besides tensors it holds Python objects{objects}, and clipxai "
             "never unpickles code. Convert it once where running its code is safe (a source you trust, or a "
             "throwaway container): torch.load it there and save only its tensors with "
             "safetensors.torch.save_file(state_dict, \"weights.safetensors\") or torch.save(state_dict, "
             "\"weights.pt\"); then pass that file")


def load_tensors_only(path: str | Path, what: str = "checkpoint"):
    """``torch.load(path, weights_only=True)`` on the CPU; WeightsError (one line) for a file holding
    code or objects (``NOT_PLAIN``), or one that is not a readable ``what`` at all."""
    import torch
    path = Path(path)
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        text = str(e)
        if "GLOBAL " in text or "safe_globals" in text or "allowlisted" in text:  # objects, classes, functions
            raise WeightsError(NOT_PLAIN.format(name=path.name, objects=_objects(text))) from None
        raise WeightsError(f"{path.name}: not a readable {what} ({_unpickler_reason(text)})") from None
    except Exception as e:  # noqa: BLE001 - truncated archives, other formats
        raise WeightsError(f"{path.name}: not a readable {what} ({_first_line(e)})") from None


def _objects(message: str) -> str:
    """" (such as collections.OrderedDict)": the global torch refused, when its message names one."""
    found = re.search(r"GLOBAL ([\w.]+)", message)
    return f" (such as {found.group(1)})" if found else ""


def _unpickler_reason(text: str) -> str:
    """What torch's unpickler found wrong ("Unsupported operand 110"), without its advice around it."""
    detail = text.split("WeightsUnpickler error:", 1)[1] if "WeightsUnpickler error:" in text else ""
    lines = [line.strip() for line in detail.splitlines() if line.strip()]
    return lines[0][:200] if lines else "not a pickle of tensors"


def _first_line(e: BaseException) -> str:
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(e)).strip()
    line = text.splitlines()[0] if text else ""
    return (line if len(line) >= 20 else f"{type(e).__name__}: {line}".rstrip(": "))[:200]
