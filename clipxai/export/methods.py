"""The builders of the method table (clipxai/methods.py): ``--method NAME`` -> the graph module.

Each builder makes a module with the signature documented in
``clipxai.export.graph`` and says how it resized the positional embeddings
(recorded in the manifest). The table row names its builder.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from clipxai.errors import ClipxaiError
from clipxai.export.graph import (
    DenseOnnxModel, GradEclipOnnxModel, MaskClipResNetOnnxModel, SurgeryOnnxModel, SurgeryResNetOnnxModel,
)
from clipxai.methods import METHOD_TABLE, METHODS_BY_NAME, POS_EMBED_RESIZES, Method, pos_embed_record
from clipxai.models.backbones import BackboneSpec
from clipxai.models.dense_methods import DenseViT
from clipxai.models.grad_eclip import GradEclipViT
from clipxai.models.resnet_surgery import MaskClipResNet, SurgeryResNet
from clipxai.models.surgery import SurgeryViT


@dataclass
class MethodGraph:
    module: nn.Module          # forward(image, text, redundancy) -> (similarity, scores, heatmaps)
    pos_embed_resize: dict     # how positional embeddings were resized (manifest)


def build_surgery(method: Method, visual: nn.Module, spec: BackboneSpec, image_size: int,
                  redundancy_mode: str) -> MethodGraph:
    if spec.arch == "resnet":
        resnet = SurgeryResNet(visual, image_size).eval()
        return MethodGraph(SurgeryResNetOnnxModel(resnet, redundancy_mode).eval(),
                           pos_embed_record(method.name, resnet.from_grid, resnet.grid))
    vit = SurgeryViT(visual, image_size, spec.surgery_blocks).eval()
    return MethodGraph(SurgeryOnnxModel(vit, redundancy_mode).eval(),
                       pos_embed_record(method.name, spec.image_size // spec.patch_size, vit.grid))


def build_grad_eclip(method: Method, visual: nn.Module, spec: BackboneSpec, image_size: int,
                     redundancy_mode: str) -> MethodGraph:
    vit = GradEclipViT(visual, image_size).eval()
    return MethodGraph(GradEclipOnnxModel(vit).eval(),
                       pos_embed_record(method.name, spec.image_size // spec.patch_size, vit.grid))


def build_dense(method: Method, visual: nn.Module, spec: BackboneSpec, image_size: int,
                redundancy_mode: str) -> MethodGraph:
    """A dense ViT method (clipxai.models.dense_methods); the redundancy mode is unused."""
    if spec.arch == "resnet":  # maskclip: TaI-DPT's dense path; the pool's embedding resized as for surgery
        resnet = MaskClipResNet(visual, image_size).eval()
        record = {"from_grid": resnet.from_grid, "to_grid": resnet.grid, **POS_EMBED_RESIZES["bilinear"],
                  "applied": resnet.from_grid != resnet.grid}
        return MethodGraph(MaskClipResNetOnnxModel(resnet).eval(), record)
    vit = DenseViT(visual, image_size, method.name).eval()
    return MethodGraph(DenseOnnxModel(vit).eval(),
                       pos_embed_record(method.name, spec.image_size // spec.patch_size, vit.grid))


ARCH_NAMES = {"vit": "ViT", "resnet": "ResNet"}
BUILDERS = {"build_surgery": build_surgery, "build_grad_eclip": build_grad_eclip, "build_dense": build_dense}
assert {m.builder for m in METHOD_TABLE} <= set(BUILDERS), "every method row names a builder of this module"


def method_row(method: str) -> Method:
    if method not in METHODS_BY_NAME:
        raise ClipxaiError(f"unknown method {method!r}; choose one of: {', '.join(METHODS_BY_NAME)}")
    return METHODS_BY_NAME[method]


def uses_redundancy(method: str) -> bool:
    return method_row(method).feature_surgery


def check_method(method: str, spec: BackboneSpec) -> None:
    """Fail early (before loading weights) on an unknown method or one the backbone lacks."""
    row = method_row(method)
    if spec.arch not in row.archs:
        others = [m.name for m in METHOD_TABLE if spec.arch in m.archs]
        raise ClipxaiError(f"--method {method} needs a {' or '.join(ARCH_NAMES[a] for a in row.archs)} backbone, "
                           f"not {spec.name}; {ARCH_NAMES[spec.arch]}s support --method {', '.join(others)}")


def build_method_graph(method: str, visual: nn.Module, spec: BackboneSpec, image_size: int,
                       redundancy_mode: str) -> MethodGraph:
    check_method(method, spec)
    row = method_row(method)
    return BUILDERS[row.builder](row, visual, spec, image_size, redundancy_mode)
