"""``export_bundle``: the typed function behind ``clipxai export``."""

from __future__ import annotations

import dataclasses
import os
import platform
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import open_clip
import torch

import clipxai
from clipxai.contract import (
    KIND_CLIP, MAX_IMAGE_SIZE, MODEL_DATA_FILE, BPE_VOCAB_FILE, CONTEXT_LENGTH, INPUT_IMAGE, INPUT_REDUNDANCY, INPUT_TEXT, LOGIT_SCALE, MODEL_FILE,
    PRECISIONS,
    OUTPUT_HEATMAPS, OUTPUT_SCORES, OUTPUT_SIMILARITY, REDUNDANCY_AUTO, REDUNDANCY_FILE, REDUNDANCY_MODES,
    SCHEMA_VERSION, TEXT_EMBEDDINGS_FILE, TEXT_ENCODER_FILE, OUTPUT_EMBEDDING, TEXT_EXPLAINER_FILE,
    DEFAULT_LABELS_MERGE_RATE, OUTPUT_LABELS,
)
from clipxai.common.report import Reporter
from clipxai.errors import ClipxaiError, VerificationError
from clipxai.export.bundle import bundle_size, check_output, finalize_manifest, staged_bundle
from clipxai.manifest import (
    Backbone, ClipManifest, ClipPreprocess, Graph, Manifest, Templates, TensorSpec, TextEncoderSpec, TextExplainerSpec, Weights,
    text_encoder_io, text_explainer_io,
)
from clipxai.runtime.bundle import manifest_digest
from clipxai.export.fidelity import (
    GATES, compare_outputs, gate_failures, load_images, measure_fidelity, preprocess_images, run_outputs,
    synthetic_scenes,
)
from clipxai.export.graph import BakedVocabulary
from clipxai.export.methods import build_method_graph, check_method, uses_redundancy
from clipxai.export.onnx_export import MIN_OPSET, export_onnx, save_graph
from clipxai.export.precision import convert
from clipxai.export.text_graph import (
    TextTowerOnnxModel, export_explainer_onnx, export_text_onnx, verify_explainer_onnx, verify_text_onnx,
)
from clipxai.export.verify import verify_onnx
from clipxai.models.backbones import DEFAULT_BACKBONE, resolve_backbone
from clipxai.models.loading import OPENAI, RANDOM, load_clip
from clipxai.models.text import TEMPLATE_SET, encode_vocabulary, redundancy_vector
from clipxai.templates import DEFAULT_TEMPLATES, resolve_templates
from clipxai.models.text_explainer import DEFAULT_BLOCKS, TextExplainer
from clipxai.vocabulary import validate_classes

FP32_TOLERANCE = 1e-4
# Sentences the word explainer is verified on at export: short, with punctuation, cut at 77 tokens.
EXPLAINER_CHECK_TEXTS = ["a dog.", "a dog in a car, waiting for traffic lights!",
                         " ".join(["a photo of a small red car parked next to a tree"] * 9)]


@dataclass
class ExportConfig:
    output: Path
    classes: list[str]
    backbone: str = DEFAULT_BACKBONE
    method: str = "surgery"
    pretrained: str = OPENAI
    image_size: int = 224
    redundancy: str | None = None  # None: "classes" for K > 1, "empty" for K == 1
    overwrite: bool = False  # replace an existing output directory
    force: bool = False  # write an int8/fp16 graph that fails the fidelity gate
    verify: bool = True
    opset: int = MIN_OPSET
    weights_dir: str | None = None  # where open_clip keeps downloaded weights (None: its default)
    text_batch_size: int = 256
    tolerance: float = FP32_TOLERANCE
    precision: str = "fp32"
    fidelity_images: list[Path] | None = None  # None: synthetic scenes
    fidelity_count: int = 8
    text_encoder: bool = False  # add the text tower and BPE vocabulary; vocabulary becomes a graph input
    int8_layers: str = "auto"  # int8: "auto" (accuracy-aware, int8_selection.py) or "all" weight MatMuls
    report: bool = False       # int8: print the per-layer sensitivity table
    text_explainer: bool = False  # add Grad-ECLIP's word explainer graph (needs text_encoder)
    explainer_blocks: int = DEFAULT_BLOCKS  # the last n text blocks it re-runs with one head
    labels_merge_rate: float = DEFAULT_LABELS_MERGE_RATE  # labels: weight of the local logits (TaI-DPT's)
    templates: str = DEFAULT_TEMPLATES  # "openai-85", "single" or a file of templates (clipxai/templates.py)


@dataclass
class ExportResult:
    """path: the bundle; digest: sha256 of its manifest.json (what a deployment pins)."""

    path: Path
    bytes: int
    seconds: float
    verification: dict | None
    manifest: Manifest | None = field(repr=False, default=None)  # as a reader gets it
    digest: str = ""


def resolve_redundancy(mode: str | None, n_classes: int) -> str:
    if mode is None:
        return "classes" if n_classes > 1 else "empty"
    if mode not in REDUNDANCY_MODES:
        raise ClipxaiError(f"unknown redundancy mode {mode!r}; choose one of: {', '.join(REDUNDANCY_MODES)}")
    if mode == "classes" and n_classes < 2:
        raise ClipxaiError("--redundancy classes needs at least 2 classes; use --redundancy empty for one class")
    return mode


def _validate(cfg: ExportConfig) -> None:
    if cfg.opset < MIN_OPSET:
        raise ClipxaiError(f"--opset {cfg.opset} is too old; use {MIN_OPSET} or newer")
    if cfg.precision not in PRECISIONS:
        raise ClipxaiError(f"unknown precision {cfg.precision!r}; choose one of: {', '.join(PRECISIONS)}")
    if not 0 < cfg.image_size <= MAX_IMAGE_SIZE:
        raise ClipxaiError(f"--image-size {cfg.image_size} is out of range; use 1..{MAX_IMAGE_SIZE}")
    if cfg.text_explainer and not cfg.text_encoder:
        raise ClipxaiError("--text-explainer needs --text-encoder (the device tokenizes the sentence and encodes it "
                           "for the image-side map); add --text-encoder")
    if not 0.0 <= cfg.labels_merge_rate <= 1.0:
        raise ClipxaiError(f"the labels merge rate must be in [0, 1], got {cfg.labels_merge_rate}")
    if cfg.explainer_blocks < 1:
        raise ClipxaiError(f"--explainer-blocks must be >= 1, got {cfg.explainer_blocks}")


@dataclass
class _Plan:
    """What the configuration resolves to, checked before anything slow runs."""

    classes: list[str]
    spec: object                 # BackboneSpec
    choice: object               # BackboneChoice
    mode: str | None             # feature-surgery redundancy mode (None: the method has none)
    template_set: str = TEMPLATE_SET  # the manifest's templates.set
    templates: tuple[str, ...] = ()   # the prompt templates


def _plan(cfg: ExportConfig) -> _Plan:
    classes = validate_classes(cfg.classes)
    choice = resolve_backbone(cfg.backbone)
    spec = choice.spec
    check_method(cfg.method, spec)
    if uses_redundancy(cfg.method):
        mode = resolve_redundancy(cfg.redundancy, len(classes))
        if cfg.text_encoder and mode in ("classes", "empty") and cfg.redundancy != "empty":
            mode = REDUNDANCY_AUTO  # the device may set any number of classes: decide per vocabulary
    elif cfg.redundancy is not None:
        raise ClipxaiError(f"--redundancy is a feature-surgery setting: it applies to --method surgery only, "
                           f"--method {cfg.method} does not use it (leave it out)")
    else:
        mode = None  # no feature surgery: recorded as null in the manifest
    _validate(cfg)
    if cfg.image_size % spec.patch_size:
        cell = "patch size" if spec.arch == "vit" else "output stride"
        raise ClipxaiError(
            f"--image-size {cfg.image_size} is not a multiple of {spec.name}'s {cell} {spec.patch_size}; "
            f"try {max(spec.patch_size, round(cfg.image_size / spec.patch_size) * spec.patch_size)}"
        )
    template_set, templates = resolve_templates(cfg.templates)
    check_output(Path(cfg.output), cfg.overwrite)  # fail before the slow part
    return _Plan(classes, spec, choice, mode, template_set, templates)


def _encode_text(cfg: ExportConfig, plan: _Plan, model, tokenizer, rep: Reporter):
    """(text embeddings [K, D], redundancy vector [D]) with the prompt ensemble, with a progress bar."""
    n_prompts = (len(plan.classes) + 1) * len(plan.templates)
    rep.step(f"encoding {len(plan.classes)} classes x {len(plan.templates)} templates (+ empty prompt)")
    with rep.progress(n_prompts, "text") as advance:
        text = encode_vocabulary(model, tokenizer, plan.classes, plan.templates, batch_size=cfg.text_batch_size,
                                 on_progress=advance)
        redundancy = redundancy_vector(model, tokenizer, plan.templates, on_progress=advance)
    return text, redundancy


def _write_graphs(cfg: ExportConfig, staging: Path, graph_model, model, text, redundancy, rep: Reporter,
                  explainer: TextExplainer | None = None) -> None:
    grid = graph_model.grid
    rep.step(f"exporting ONNX graph (opset {cfg.opset}, {cfg.image_size}x{cfg.image_size}, grid {grid}x{grid})")
    export_onnx(graph_model, staging / MODEL_FILE, cfg.opset, embed_dim=text.shape[1] if cfg.text_encoder else None,
                data_file=MODEL_DATA_FILE)
    np.save(staging / TEXT_EMBEDDINGS_FILE, text.numpy().astype(np.float32), allow_pickle=False)
    np.save(staging / REDUNDANCY_FILE, redundancy.numpy().astype(np.float32), allow_pickle=False)
    if cfg.text_encoder:
        rep.step(f"exporting the text encoder (dynamic length <= {CONTEXT_LENGTH}) and the BPE vocabulary")
        export_text_onnx(TextTowerOnnxModel(model).eval(), staging / TEXT_ENCODER_FILE, cfg.opset)
        shutil.copyfile(open_clip.tokenizer.default_bpe(), staging / BPE_VOCAB_FILE)
    if explainer is not None:
        rep.step(f"exporting the word explainer (Grad-ECLIP, last {explainer.n} text blocks, gradient in closed form)")
        export_explainer_onnx(explainer.eval(), staging / TEXT_EXPLAINER_FILE, cfg.opset, text.shape[1])


def _verify(cfg: ExportConfig, staging: Path, graph_model, loaded, tokenizer, vocabulary,
            rep: Reporter, explainer: TextExplainer | None = None) -> dict:
    """Max abs errors of onnxruntime against PyTorch; VerificationError above the tolerance."""
    rep.step("verifying onnxruntime against PyTorch (batch 2)")
    errs = verify_onnx(staging / MODEL_FILE, graph_model, loaded.mean, loaded.std, vocabulary=vocabulary)
    verification = dict(errs, tolerance=cfg.tolerance)
    worst = max(errs["similarity"], errs["heatmaps"], errs.get(OUTPUT_LABELS, 0.0) / LOGIT_SCALE)  # labels: 100·cos
    if cfg.text_encoder:
        templates = resolve_templates(cfg.templates)[1]
        prompts = [tpl.format(c) for c in (cfg.classes[0], "") for tpl in templates]  # any class checks it
        ids = tokenizer(prompts).numpy()
        lengths = (ids == tokenizer.eot_token_id).argmax(axis=1) + 1  # through the first end token
        verification["text_encoder"] = verify_text_onnx(staging / TEXT_ENCODER_FILE, loaded.model, ids, lengths)
        worst = max(worst, verification["text_encoder"])
    if explainer is not None:
        ids = tokenizer(EXPLAINER_CHECK_TEXTS).numpy()
        image = vocabulary[0][0]  # any unit vector does; the first class's embedding is a realistic one
        verification["text_explainer"] = verify_explainer_onnx(staging / TEXT_EXPLAINER_FILE, explainer, ids, image)
        worst = max(worst, verification["text_explainer"], errs.get(OUTPUT_EMBEDDING, 0.0))
    if not worst <= cfg.tolerance:  # also catches NaN
        raise VerificationError(
            f"ONNX graph disagrees with PyTorch: max abs error similarity {errs['similarity']:.3g}, "
            f"heatmaps {errs['heatmaps']:.3g}, text encoder {verification.get('text_encoder', 0):.3g}, "
            f"word explainer {verification.get('text_explainer', 0):.3g} > {cfg.tolerance:g}; no bundle written"
        )
    return verification


def export_bundle(cfg: ExportConfig, reporter: Reporter | None = None) -> ExportResult:
    """Load, rewrite, encode, export, verify and write one bundle (docs/bundle-format.md)."""
    rep = reporter or Reporter()
    start = time.perf_counter()
    plan = _plan(cfg)
    rep.step(f"loading {plan.spec.name} weights: {cfg.pretrained}")
    loaded = load_clip(plan.choice, cfg.pretrained, cfg.weights_dir)
    if loaded.weights.get("source") == RANDOM:
        rep.warn("RANDOM WEIGHTS (--pretrained random): the maps of this bundle mean nothing; for tests only")
    tokenizer = open_clip.get_tokenizer(plan.spec.open_clip_name)
    if cfg.text_encoder:
        _check_clip_tokenizer(tokenizer, plan.spec.name)
    _check_template_lengths(plan, tokenizer)
    text, redundancy = _encode_text(cfg, plan, loaded.model, tokenizer, rep)

    built = build_method_graph(cfg.method, loaded.model.visual, plan.spec, cfg.image_size, plan.mode)
    built.module.with_labels = True
    built.module.labels_merge_rate = cfg.labels_merge_rate
    explainer = None
    if cfg.text_explainer:
        explainer = TextExplainer(loaded.model, cfg.explainer_blocks, plan.spec.name).eval()
        built.module.with_embedding = True
    if cfg.text_encoder:
        graph_model = built.module.eval()
        vocabulary = (text.numpy().astype(np.float32), redundancy.numpy().astype(np.float32))
    else:
        graph_model = BakedVocabulary(built.module, text, redundancy).eval()
        vocabulary = None

    with staged_bundle(Path(cfg.output), cfg.overwrite) as staging:
        _write_graphs(cfg, staging, graph_model, loaded.model, text, redundancy, rep, explainer)
        verification = None
        if cfg.verify:
            verification = _verify(cfg, staging, graph_model, loaded, tokenizer, vocabulary, rep,
                                   explainer)
        fidelity = _lower_precision(cfg, staging, loaded, rep, vocabulary) if cfg.precision != "fp32" else None
        bf16 = _bf16_fidelity(cfg, staging, loaded, rep, vocabulary) if cfg.precision == "fp32" else None
        manifest = build_manifest(cfg, plan, loaded, built, text.shape[1], verification, explainer)
        manifest = finalize_manifest(staging, dataclasses.replace(manifest, fidelity=fidelity, bf16_fidelity=bf16))
    output = Path(cfg.output)
    return ExportResult(output, bundle_size(output), time.perf_counter() - start, verification, manifest,
                        manifest_digest(output))


def _fidelity_images(cfg: ExportConfig) -> tuple[np.ndarray, str]:
    if cfg.fidelity_images:
        return load_images(cfg.fidelity_images, cfg.image_size), f"{len(cfg.fidelity_images)} user images"
    return synthetic_scenes(cfg.fidelity_count, cfg.image_size), "synthetic scenes (seed 0)"


def _graph_extra(cfg: ExportConfig, vocabulary) -> dict:
    extra = {} if vocabulary is None else {INPUT_TEXT: vocabulary[0], INPUT_REDUNDANCY: vocabulary[1]}
    if not uses_redundancy(cfg.method):
        extra.pop(INPUT_REDUNDANCY, None)
    return extra


def _bf16_fidelity(cfg: ExportConfig, staging: Path, loaded, rep: Reporter, vocabulary=None) -> dict | None:
    """The fp32 graph run in OpenVINO bf16 against onnxruntime fp32, gated as int8 (fidelity.GATES["bf16"]),
    for the manifest's ``bf16_fidelity``; None (not measured) without OpenVINO or on a CPU without native
    bf16. A failed gate is recorded, not an error: the bundle is fp32, the runtime refuses it bf16."""
    from clipxai.export.fidelity import bf16_measurable, run_outputs_openvino
    if not bf16_measurable(rep):
        return None
    images, source = _fidelity_images(cfg)
    extra = _graph_extra(cfg, vocabulary)
    x = preprocess_images(images, loaded.mean, loaded.std)
    rep.step(f"measuring OpenVINO bf16 fidelity against fp32 on {len(images)} {source.split(' (')[0]}")
    reference = run_outputs(staging / MODEL_FILE, x, extra)
    report = compare_outputs(reference, run_outputs_openvino(staging / MODEL_FILE, x, extra, "bf16"), x.shape[-1])
    gate = GATES["bf16"]
    failures = gate_failures(report, gate)
    report.update(provider="OpenVINO:CPU bf16", image_source=source,
                  gate={"correlation": gate.correlation, "pixel_agreement": gate.pixel_agreement}, passed=not failures)
    if failures:
        rep.warn(f"bf16 (OpenVINO) fails the fidelity gate: {'; '.join(failures)}; the runtime will refuse bf16")
    return report


def _lower_precision(cfg: ExportConfig, staging: Path, loaded, rep: Reporter, vocabulary=None) -> dict:
    """Convert the verified fp32 graph (int8: accuracy-aware), measure its fidelity, gate, put it in place."""
    import onnxruntime as ort

    prec = cfg.precision
    images, source = _fidelity_images(cfg)
    gpu = "CUDAExecutionProvider"
    provider = gpu if prec == "fp16" and gpu in ort.get_available_providers() else "CPUExecutionProvider"
    extra = {} if vocabulary is None else {INPUT_TEXT: vocabulary[0], INPUT_REDUNDANCY: vocabulary[1]}
    if not uses_redundancy(cfg.method):
        extra.pop(INPUT_REDUNDANCY, None)  # the graph has no such input (int8_selection feeds it as given)
    x = preprocess_images(images, loaded.mean, loaded.std)
    reference = run_outputs(staging / MODEL_FILE, x, extra)
    if prec == "int8" and cfg.int8_layers == "auto":
        candidate, conversion, report = _int8_accuracy_aware(cfg, staging, x, extra, reference, rep)
    else:
        rep.step(f"converting the graph to {prec}")
        candidate = staging / f"model.{prec}.onnx"
        conversion = convert(prec, staging / MODEL_FILE, candidate)
        rep.step(f"measuring {prec} fidelity against fp32 on {len(images)} {source.split(' (')[0]} ({provider})")
        report = measure_fidelity(reference, candidate, x, extra, provider)
    gate = GATES[prec]
    failures = gate_failures(report, gate)
    report.update(provider=provider, image_source=source,
                  gate={"correlation": gate.correlation, "pixel_agreement": gate.pixel_agreement},
                  passed=not failures, conversion=conversion)
    if prec == "fp16" and provider != gpu:
        report["note"] = "measured with onnxruntime on the CPU (no GPU available at export)"
    if failures:
        msg = f"the {prec} graph fails the fidelity gate: {'; '.join(failures)}"
        if not cfg.force:
            raise VerificationError(msg + "; no bundle written (--force writes it anyway)")
        rep.warn(msg + "; writing it anyway (--force)")
    save_graph(onnx.load(str(candidate)), staging / MODEL_FILE, MODEL_DATA_FILE)
    candidate.unlink()
    return report


def _int8_accuracy_aware(cfg: ExportConfig, staging: Path, x: np.ndarray, extra: dict, reference, rep: Reporter):
    """(candidate path, conversion record, fidelity report): int8_selection.py's measurement and choice."""
    from clipxai.export import int8_selection as sel

    src = staging / MODEL_FILE
    work = staging / ".int8-work"
    work.mkdir()
    try:
        rep.step("converting the graph to int8 (every weight MatMul, for the measurement)")
        everything = work / "int8-all.onnx"
        conversion = convert("int8", src, everything)
        model = onnx.load(str(src), load_external_data=False)
        layers = sel.find_layers(model)
        groups = sel.group_layers(model, layers)
        n = min(sel.SENSITIVITY_IMAGES, len(x))
        rep.step(f"measuring what int8 does to the outputs: {len(layers)} MatMuls in {len(groups)} groups, {n} images")
        sel.measure_sensitivity(src, everything, layers, groups, x[:n], extra, reference)

        def quantize(dst: Path, kept: list[str]) -> None:
            if kept:
                convert("int8", src, dst, exclude=kept)
            else:
                shutil.copyfile(everything, dst)

        def evaluate(path: Path) -> dict:
            return measure_fidelity(reference, path, x, extra)

        choice, candidate = sel.select(work, layers, groups, quantize, evaluate, log=rep.step)
        if cfg.report:
            rep.table(sel.report_table(choice))
        final = staging / "model.int8.onnx"
        os.replace(candidate, final)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    conversion.update(selection="accuracy-aware (clipxai/export/int8_selection.py)",
                      sensitive_fp32=choice.kept_fp32, int8_flop_share=round(choice.int8_flop_share, 4),
                      margin={"correlation": sel.MARGIN.correlation, "pixel_agreement": sel.MARGIN.pixel_agreement},
                      passed_margin=choice.passed_margin,
                      groups=[{"group": g.label, "layers": len(g.layers), "gflop": round(g.flops / 1e9, 3),
                               "alone": {k: round(v, 4) for k, v in g.figures.items() if k != "images"}}
                              for g in choice.groups],
                      tried=[{k: (round(v, 4) if isinstance(v, float) else v) for k, v in t.items()}
                             for t in choice.tried])
    conversion["kept_fp32"] = sorted(set(conversion["kept_fp32"]) | set(choice.kept_fp32))
    return final, conversion, dict(choice.report)


def _check_template_lengths(plan: _Plan, tokenizer) -> None:
    """Every template (without a class name) must fit CLIP's 77-token context, or its prompts would be cut."""
    encode = getattr(tokenizer, "encode", None)
    if encode is None:  # not CLIP's BPE tokenizer: its own truncation applies
        return
    for tpl in plan.templates:
        n = len(encode(tpl.format(""))) + 2  # + start and end tokens
        if n > CONTEXT_LENGTH:
            raise ClipxaiError(f"the template {tpl!r} is {n} tokens without a class name, longer than CLIP's "
                               f"{CONTEXT_LENGTH}-token context; shorten it")


def _check_clip_tokenizer(tokenizer, name: str) -> None:
    """The device reimplements open_clip's SimpleTokenizer (CLIP BPE, 77 tokens) only."""
    from open_clip.tokenizer import SimpleTokenizer
    if (not isinstance(tokenizer, SimpleTokenizer) or tokenizer.context_length != CONTEXT_LENGTH
            or tokenizer.reduction_fn is not None or tokenizer.vocab_size != 49408):
        raise ClipxaiError(f"--text-encoder supports CLIP's BPE tokenizer only; {name} uses "
                           f"{type(tokenizer).__name__}; export without --text-encoder")


def build_manifest(cfg: ExportConfig, plan: _Plan, loaded, built, embed_dim: int, verification: dict | None,
                   explainer: TextExplainer | None = None) -> ClipManifest:
    """The manifest of the bundle being written, without its fidelity and files (added last).
    built: the method's graph (MethodGraph); embed_dim: D."""
    spec, classes, grid = plan.spec, plan.classes, built.module.grid
    n = grid * grid
    k = "classes" if cfg.text_encoder else len(classes)
    s = cfg.image_size
    inputs = {INPUT_IMAGE: _f32("batch", 3, s, s)}
    if cfg.text_encoder:
        inputs[INPUT_TEXT] = _f32("classes", embed_dim)
        if uses_redundancy(cfg.method):  # the exported graph drops an input its method never reads
            inputs[INPUT_REDUNDANCY] = _f32(embed_dim)
    outputs = {OUTPUT_SIMILARITY: _f32("batch", n, k), OUTPUT_SCORES: _f32("batch", k),
               OUTPUT_HEATMAPS: _f32("batch", k, grid, grid)}
    if getattr(built.module, "with_labels", False):
        outputs[OUTPUT_LABELS] = _f32("batch", k)
    if explainer is not None:
        outputs[OUTPUT_EMBEDDING] = _f32("batch", embed_dim)
    return ClipManifest(
        schema_version=SCHEMA_VERSION,
        kind=KIND_CLIP,
        clipxai_version=clipxai.__version__,
        created_with={"torch": torch.__version__, "open_clip": open_clip.__version__,
                      "onnx": onnx.__version__, "python": platform.python_version()},
        method=cfg.method,
        backbone=Backbone(name=spec.name, open_clip_name=spec.open_clip_name, arch=spec.arch,
                          patch_size=spec.patch_size, activation="quick_gelu" if loaded.quick_gelu else "gelu",
                          surgery_blocks=spec.surgery_blocks if cfg.method == "surgery" and spec.arch == "vit"
                          else None,
                          pretrained_image_size=spec.image_size),
        weights=Weights.from_dict(loaded.weights, "weights."),
        image_size=s,
        grid_size=grid,
        num_patches=n,
        embed_dim=embed_dim,
        pos_embed_resize=built.pos_embed_resize,
        preprocess=ClipPreprocess(resize="squash", interpolation="bicubic", mean=tuple(loaded.mean),
                                  std=tuple(loaded.std), color="RGB"),
        classes=tuple(classes),
        templates=Templates(set=plan.template_set, count=len(plan.templates),
                            prompts=None if plan.template_set == TEMPLATE_SET else plan.templates),
        redundancy=plan.mode,
        logit_scale=LOGIT_SCALE,
        labels_merge_rate=cfg.labels_merge_rate,
        opset=cfg.opset,
        precision=cfg.precision,
        graph=Graph(inputs=inputs, outputs=outputs),
        text_embeddings={"file": TEXT_EMBEDDINGS_FILE, "shape": [len(classes), embed_dim]},
        redundancy_vector={"file": REDUNDANCY_FILE, "shape": [embed_dim]},
        verification=verification,
        text_encoder=_text_encoder_spec(embed_dim) if cfg.text_encoder else None,
        text_explainer=_text_explainer_spec(embed_dim, explainer.n) if explainer is not None else None,
    )


def _f32(*shape) -> TensorSpec:
    return TensorSpec.of("float32", shape)


def _text_encoder_spec(embed_dim: int) -> TextEncoderSpec:
    inputs, outputs = text_encoder_io(embed_dim)
    return TextEncoderSpec(file=TEXT_ENCODER_FILE, vocab_file=BPE_VOCAB_FILE, tokenizer="clip-bpe",
                           context_length=CONTEXT_LENGTH, output="unnormalised", inputs=inputs, outputs=outputs)


def _text_explainer_spec(embed_dim: int, blocks: int) -> TextExplainerSpec:
    inputs, outputs = text_explainer_io(embed_dim)
    return TextExplainerSpec(file=TEXT_EXPLAINER_FILE, method="grad-eclip-text", blocks=blocks,
                             context_length=CONTEXT_LENGTH, inputs=inputs, outputs=outputs)
