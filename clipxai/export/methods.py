"""The method table: ``--method NAME`` -> the graph module that computes it.

Each entry builds a module with the signature documented in
``clipxai.export.graph`` and says how it resized the positional embeddings
(recorded in the manifest). Adding a method is adding a row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn

from clipxai.contract import METHODS
from clipxai.errors import ClipxaiError
from clipxai.export.graph import DenseOnnxModel, GradEclipOnnxModel, SurgeryOnnxModel, SurgeryResNetOnnxModel
from clipxai.models.backbones import BackboneSpec
from clipxai.models.dense_methods import DenseViT, pos_embed_record
from clipxai.models.grad_eclip import POS_EMBED_MODE, GradEclipViT
from clipxai.models.resnet_surgery import SurgeryResNet
from clipxai.models.surgery import SurgeryViT


@dataclass
class MethodGraph:
    module: nn.Module          # forward(image, text, redundancy) -> (similarity, scores, heatmaps)
    pos_embed_resize: dict     # how positional embeddings were resized (manifest)


def _surgery(visual: nn.Module, spec: BackboneSpec, image_size: int, redundancy_mode: str) -> MethodGraph:
    if spec.arch == "resnet":
        resnet = SurgeryResNet(visual, image_size).eval()
        return MethodGraph(
            SurgeryResNetOnnxModel(resnet, redundancy_mode).eval(),
            {"from_grid": resnet.from_grid, "to_grid": resnet.grid, "mode": "bilinear", "align_corners": False,
             "antialias": False},
        )
    vit = SurgeryViT(visual, image_size, spec.surgery_blocks).eval()
    g0 = spec.image_size // spec.patch_size
    return MethodGraph(
        SurgeryOnnxModel(vit, redundancy_mode).eval(),
        {"from_grid": g0, "to_grid": vit.grid, "mode": "bilinear", "align_corners": False, "antialias": False},
    )


def _grad_eclip(visual: nn.Module, spec: BackboneSpec, image_size: int, redundancy_mode: str) -> MethodGraph:
    vit = GradEclipViT(visual, image_size).eval()
    g0 = spec.image_size // spec.patch_size
    return MethodGraph(
        GradEclipOnnxModel(vit).eval(),
        {"from_grid": g0, "to_grid": vit.grid, "mode": POS_EMBED_MODE, "align_corners": False, "antialias": False},
    )


def _dense(method: str):
    """Builder of a dense ViT method (clipxai.models.dense_methods); the redundancy mode is unused."""
    def build(visual: nn.Module, spec: BackboneSpec, image_size: int, redundancy_mode: str) -> MethodGraph:
        vit = DenseViT(visual, image_size, method).eval()
        return MethodGraph(DenseOnnxModel(vit).eval(),
                           pos_embed_record(method, spec.image_size // spec.patch_size, vit.grid))
    return build


Builder = Callable[[nn.Module, BackboneSpec, int, str], MethodGraph]

METHOD_BUILDERS: dict[str, Builder] = {
    "surgery": _surgery,
    "grad-eclip": _grad_eclip,
    "vanilla": _dense("vanilla"),
    "maskclip": _dense("maskclip"),
    "sclip": _dense("sclip"),
    "clearclip": _dense("clearclip"),
    "naclip": _dense("naclip"),
}
assert set(METHOD_BUILDERS) == set(METHODS), "contract.METHODS and METHOD_BUILDERS must list the same methods"


# Whether a method applies feature surgery (and so reads --redundancy).
USES_REDUNDANCY: dict[str, bool] = {"surgery": True, "grad-eclip": False, "vanilla": False, "maskclip": False,
                                    "sclip": False, "clearclip": False, "naclip": False}
assert set(USES_REDUNDANCY) == set(METHODS)


def uses_redundancy(method: str) -> bool:
    if method not in USES_REDUNDANCY:
        raise ClipxaiError(f"unknown method {method!r}; choose one of: {', '.join(METHOD_BUILDERS)}")
    return USES_REDUNDANCY[method]


RESNET_METHODS = ("surgery",)


def check_method(method: str, spec: BackboneSpec) -> None:
    """Fail early (before loading weights) on an unknown method or one the backbone lacks."""
    if method not in METHOD_BUILDERS:
        raise ClipxaiError(f"unknown method {method!r}; choose one of: {', '.join(METHOD_BUILDERS)}")
    if spec.arch == "resnet" and method not in RESNET_METHODS:
        raise ClipxaiError(f"--method {method} needs a ViT backbone, not {spec.name}; "
                           f"ResNets support --method {', '.join(RESNET_METHODS)}")


def build_method_graph(method: str, visual: nn.Module, spec: BackboneSpec, image_size: int,
                       redundancy_mode: str) -> MethodGraph:
    check_method(method, spec)
    return METHOD_BUILDERS[method](visual, spec, image_size, redundancy_mode)
