"""Load an open_clip CLIP model with the weights a user asked for.

``--pretrained`` accepts:

- ``openai`` (default) or any open_clip pretrained tag valid for the backbone;
  mean/std come from open_clip's pretrained config;
- a local checkpoint file: a TorchScript archive as OpenAI released it, an
  OpenAI-format state dict, an open_clip training checkpoint (``{"state_dict":
  ...}``) or a ``.safetensors`` file. Pickles are read with
  ``weights_only=True``; arbitrary objects are never unpickled;
- ``random`` (or ``random:N`` for seed N): random weights, for tests and dry runs only.

Activation of a local file: a TorchScript archive or a state dict carrying
OpenAI's ``input_resolution`` key is OpenAI's release (QuickGELU); otherwise
the backbone spelling decides: OpenAI spelling (``ViT-B/16``) and
``-quickgelu`` names mean QuickGELU, a plain open_clip name (``ViT-B-16``)
means GELU.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import open_clip
import torch

from clipxai.contract import DEFAULT_PRETRAINED

from clipxai.contract import OPENAI_MEAN, OPENAI_STD
from clipxai.common.files import sha256_file
from clipxai.errors import WeightsError, WeightsUnavailableError
from clipxai.models.backbones import BackboneChoice
from clipxai.models.pickled import load_tensors_only

RANDOM = "random"
OPENAI = DEFAULT_PRETRAINED
_OPENAI_EXTRA_KEYS = ("input_resolution", "context_length", "vocab_size")


@dataclass
class LoadedModel:
    """An open_clip CLIP model in eval mode plus what the manifest records of it."""

    model: torch.nn.Module
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    quick_gelu: bool
    weights: dict = field(default_factory=dict)  # manifest "weights" record


@contextlib.contextmanager
def _quiet_open_clip():
    """open_clip logs a warning when it builds a model without weights; we report that ourselves."""
    logger = logging.getLogger()
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def create_model(choice: BackboneChoice, quick_gelu: bool, seed: int = 0) -> torch.nn.Module:
    """Build the open_clip model for a backbone, random-initialised with a fixed seed."""
    torch.manual_seed(seed)
    with _quiet_open_clip():
        model = open_clip.create_model(
            choice.spec.open_clip_name, pretrained=None, force_quick_gelu=quick_gelu
        )
    return model.eval()


@contextlib.contextmanager
def _quiet_hub():
    """Without a route to the hub, huggingface_hub retries for ~45 s, logging each try.

    Weights already in the local cache are still found: where the hub's host
    does not resolve and no proxy is set, we switch the hub to offline mode
    (cache only) instead of waiting for its retries.
    """
    hub_log = logging.getLogger("huggingface_hub")
    level = hub_log.level
    hub_log.setLevel(logging.ERROR)
    offline = None
    if not _hub_reachable():
        try:
            from huggingface_hub import constants
            offline, constants.HF_HUB_OFFLINE = constants.HF_HUB_OFFLINE, True
        except (ImportError, AttributeError):  # pragma: no cover - other hub versions
            offline = None
    try:
        yield
    finally:
        hub_log.setLevel(level)
        if offline is not None:
            from huggingface_hub import constants
            constants.HF_HUB_OFFLINE = offline


def _hub_reachable() -> bool:
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True  # the proxy decides; let the hub try
    import socket
    host = os.environ.get("HF_ENDPOINT", "https://huggingface.co").split("://")[-1].split("/")[0]
    try:
        socket.getaddrinfo(host, 443)
        return True
    except OSError:
        return False


def _tags(choice: BackboneChoice) -> list[str]:
    spec = choice.spec
    tags = list(open_clip.list_pretrained_tags_by_model(spec.open_clip_name))
    for t in open_clip.list_pretrained_tags_by_model(spec.quickgelu_name):
        if t not in tags:
            tags.append(t)
    return tags


def _pretrained_cfg(choice: BackboneChoice, tag: str) -> tuple[dict, bool]:
    spec = choice.spec
    cfg = open_clip.get_pretrained_cfg(spec.open_clip_name, tag)
    if cfg:
        return cfg, bool(cfg.get("quick_gelu", False))
    cfg = open_clip.get_pretrained_cfg(spec.quickgelu_name, tag)
    return cfg, True


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], str]:
    """Read a checkpoint file into a flat float state dict; returns (state_dict, format).

    format is one of "openai-torchscript", "openai-state-dict", "open_clip-checkpoint",
    "state-dict", "safetensors".
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"checkpoint file {str(path)!r} does not exist; pass an existing file to --pretrained")
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError:  # pragma: no cover - safetensors ships with open_clip
            raise WeightsError("reading .safetensors needs the safetensors package: pip install safetensors")
        try:
            return load_file(str(path), device="cpu"), "safetensors"
        except Exception as e:  # noqa: BLE001 - any parse failure is a bad file
            raise WeightsError(f"{path.name}: not a readable safetensors file ({_one_line(e)})")
    if zipfile.is_zipfile(path) and _is_torchscript(path):
        try:
            with warnings.catch_warnings():  # torch.jit.load's deprecation notice is not for users
                warnings.simplefilter("ignore", FutureWarning)
                sd = torch.jit.load(str(path), map_location="cpu").state_dict()
        except Exception as e:  # noqa: BLE001
            raise WeightsError(f"{path.name}: unreadable TorchScript archive ({_one_line(e)})")
        return _flat(sd), "openai-torchscript"
    obj = load_tensors_only(path)  # never runs code: a file with objects is refused (models/pickled.py)
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        return _flat(obj["state_dict"]), "open_clip-checkpoint"
    if not isinstance(obj, dict):
        raise WeightsError(f"{path.name}: holds a {type(obj).__name__}, not a state dict")
    fmt = "openai-state-dict" if "input_resolution" in obj else "state-dict"
    return _flat(obj), fmt


def _is_torchscript(path: Path) -> bool:
    with zipfile.ZipFile(path) as z:
        return any(n.endswith("/constants.pkl") or "/code/" in n for n in z.namelist())


def _flat(sd: dict) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in sd.items():
        if k.startswith("module."):
            k = k[len("module."):]
        if k in _OPENAI_EXTRA_KEYS or not isinstance(v, torch.Tensor):
            continue
        out[k] = v.float() if v.is_floating_point() else v
    return out


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:200]


def load_state_dict_into(model: torch.nn.Module, sd: dict[str, torch.Tensor], source: str, backbone: str) -> None:
    """Strict load with a one-line error naming the first mismatch."""
    own = model.state_dict()
    # TorchScript archives also carry non-persistent buffers (e.g. the causal attn_mask).
    transient = {name for name, _ in model.named_buffers()} - set(own)
    sd = {k: v for k, v in sd.items() if k not in transient}
    if "logit_scale" in sd and own["logit_scale"].ndim != sd["logit_scale"].ndim:
        sd["logit_scale"] = sd["logit_scale"].reshape(own["logit_scale"].shape)
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    if missing or unexpected:
        what = f"missing {missing[0]!r}" if missing else f"unexpected {unexpected[0]!r}"
        raise WeightsError(
            f"{source}: not a {backbone} CLIP checkpoint ({what}, {len(missing)} missing and "
            f"{len(unexpected)} unexpected keys); check --backbone"
        )
    for k, v in own.items():
        if tuple(sd[k].shape) != tuple(v.shape):
            raise WeightsError(
                f"{source}: not a {backbone} checkpoint ({k} has shape {list(sd[k].shape)}, "
                f"expected {list(v.shape)}); check --backbone"
            )
    model.load_state_dict(sd, strict=True)


def random_seed(pretrained: str) -> int | None:
    """``random`` -> 0, ``random:N`` -> N (random weights from seed N, for tests); anything else -> None."""
    if pretrained == RANDOM:
        return 0
    if pretrained.startswith(RANDOM + ":"):
        try:
            seed = int(pretrained.split(":", 1)[1])
        except ValueError:
            seed = -1
        if seed < 0:
            raise WeightsError(f"--pretrained {pretrained!r}: the seed must be a non-negative integer, e.g. random:3")
        return seed
    return None


def load_clip(choice: BackboneChoice, pretrained: str = OPENAI, cache_dir: str | None = None) -> LoadedModel:
    """Build the backbone and load the requested weights (see module docstring)."""
    name = choice.spec.name
    seed = random_seed(pretrained)
    if seed is not None:
        model = create_model(choice, choice.quick_gelu, seed)
        return LoadedModel(model, OPENAI_MEAN, OPENAI_STD, choice.quick_gelu, {"source": RANDOM, "seed": seed})

    if os.path.sep in pretrained or Path(pretrained).suffix or Path(pretrained).exists():
        sd, fmt = read_checkpoint(pretrained)
        quick_gelu = True if fmt.startswith("openai") else choice.quick_gelu
        model = create_model(choice, quick_gelu)
        load_state_dict_into(model, sd, Path(pretrained).name, name)
        weights = {"source": "file", "file": Path(pretrained).name, "format": fmt,
                   "sha256": sha256_file(pretrained)}
        return LoadedModel(model.eval(), OPENAI_MEAN, OPENAI_STD, quick_gelu, weights)

    tags = _tags(choice)
    if pretrained not in tags:
        raise WeightsError(
            f"unknown weights {pretrained!r} for {name}; choose one of: {', '.join(tags)}, "
            f"{RANDOM!r}, or a path to a checkpoint file"
        )
    cfg, quick_gelu = _pretrained_cfg(choice, pretrained)
    try:
        with _quiet_hub():
            path = open_clip.download_pretrained(cfg, cache_dir=cache_dir)
    except Exception as e:  # noqa: BLE001 - hub, HTTP and offline errors all mean "not fetched"
        raise WeightsUnavailableError(
            f"could not fetch the {pretrained!r} weights of {name} ({_one_line(e)}); "
            "download them on a machine with network access and pass the file with --pretrained PATH"
        ) from None
    if not path:
        raise WeightsError(f"open_clip has no download location for {name} {pretrained!r}; pass a file with --pretrained PATH")
    sd, fmt = read_checkpoint(path)
    model = create_model(choice, quick_gelu)
    load_state_dict_into(model, sd, Path(path).name, name)
    weights = {"source": "open_clip", "tag": pretrained, "format": fmt, "sha256": sha256_file(path)}
    mean = tuple(cfg.get("mean") or OPENAI_MEAN)
    std = tuple(cfg.get("std") or OPENAI_STD)
    return LoadedModel(model.eval(), mean, std, quick_gelu, weights)
