"""One manifest type: the dataclasses of clipxai/manifest.py, the JSON the exporters write, and the
tables of docs/bundle-format.md say the same, field by field; and a mask-model manifest is checked as
strictly as a CLIP one (a missing section, a non-finite number, a family that does not match its
graphs: one-line BundleError before any graph runs)."""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import onnxruntime
import pytest

from clipxai.common.files import sha256_file
from clipxai.contract import MASK_HIGH_RES, SCHEMA_VERSION, SUPPORTED_SCHEMAS
from clipxai.errors import BundleError
from clipxai.manifest import ClipManifest, MaskManifest, TensorSpec, describe, parse
from clipxai.runtime.bundle import load_bundle
from clipxai.runtime.sam import MaskPredictor
from tiny import TINY
from tiny_sam import TINY_SAM, TINY_SAM2, save_checkpoint

DOCS = Path(__file__).parent.parent / "docs" / "bundle-format.md"


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    """A CLIP bundle with every optional graph, and a SAM and a SAM 2.1 bundle (tiny, random)."""
    from clipxai.export.pipeline import ExportConfig, export_bundle
    from clipxai.export.sam import SamExportConfig, export_mask_bundle
    root = tmp_path_factory.mktemp("manifest")
    out = {"clip": export_bundle(ExportConfig(output=root / "clip", classes=["cat", "dog"], backbone=TINY.name,
                                              pretrained="random", image_size=32, text_encoder=True,
                                              text_explainer=True))}
    for row in (TINY_SAM, TINY_SAM2):
        save_checkpoint(row, root / row.checkpoint, seed=1)
        out[row.family] = export_mask_bundle(SamExportConfig(model=row.name, checkpoint=root / row.checkpoint,
                                                             output=root / row.name, verify=False,
                                                             bf16=False))
    return out


# ---- the docs, the dataclasses and the exporters agree ---------------------------------------------------

def _doc_table(heading: str) -> dict[str, tuple[str, bool]]:
    """{field: (type, required)} of the table under ``### heading`` in docs/bundle-format.md."""
    lines = DOCS.read_text(encoding="utf-8").split(f"### {heading}\n", 1)[1].splitlines()
    rows: dict[str, tuple[str, bool]] = {}
    started = False
    for line in lines:
        if line.startswith("| field |"):
            started = True
        elif started and not line.startswith("|"):
            break
        elif started and line.startswith("| `"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            assert cells[2] in ("yes", "no"), line
            assert cells[0] not in rows, f"{cells[0]} listed twice"
            rows[cells[0].strip("`")] = (cells[1], cells[2] == "yes")
    assert rows, f"no table under '### {heading}'"
    return rows


@pytest.mark.parametrize("heading, cls", [("CLIP bundles", ClipManifest), ("Mask-model bundles", MaskManifest)])
def test_the_docs_list_every_field_of_the_dataclasses_and_no_other(heading, cls):
    docs = _doc_table(heading)
    code = {path: (type_, required) for path, type_, required in describe(cls)}
    assert sorted(set(code) - set(docs)) == [], "fields the docs do not list"
    assert sorted(set(docs) - set(code)) == [], "documented fields the dataclasses do not have"
    wrong = {f: (docs[f], code[f]) for f in code if docs[f] != code[f]}
    assert not wrong, f"(docs, code) type and required differ: {wrong}"


def test_the_manifest_written_is_the_manifest_read_byte_for_byte(bundles):
    for name, res in bundles.items():
        raw = (res.path / "manifest.json").read_text(encoding="utf-8")
        data = json.loads(raw)
        manifest = parse(data, data["kind"])
        assert json.dumps(manifest.to_dict(), indent=2, ensure_ascii=False) + "\n" == raw, name
        assert manifest == res.manifest == load_bundle(res.path, kind=data["kind"]).manifest
        assert data["schema_version"] == SCHEMA_VERSION


def test_unknown_fields_are_kept_and_old_schemas_read(bundles):
    data = json.loads((bundles["clip"].path / "manifest.json").read_text())
    data["backbone"]["future_field"] = [1, 2]
    data["note"] = "kept"
    m = ClipManifest.from_dict(data)
    assert m.to_dict()["backbone"]["future_field"] == [1, 2] and m.to_dict()["note"] == "kept"
    for version in SUPPORTED_SCHEMAS:  # schema 1-2: no kind, no text-side IO; still a ClipManifest
        old = {k: v for k, v in data.items() if k not in ("kind", "note")}
        old["schema_version"] = version
        old["text_encoder"] = {"tokenizer": "clip-bpe", "context_length": 77}
        m = ClipManifest.from_dict(old)
        assert m.kind == "clip" and m.graph_io("text_encoder.onnx")[0]["input_ids"].dtype == "int64"


def test_graph_io_of_every_graph(bundles):
    clip = bundles["clip"].manifest
    assert clip.graph_files() == ("model.onnx", "text_encoder.onnx", "text_explainer.onnx")
    ins, outs = clip.graph_io("model.onnx")
    assert list(ins) == ["image", "text", "redundancy"] and ins["image"] == TensorSpec("float32", ("batch", 3, 32, 32))
    assert list(outs) == ["similarity", "scores", "heatmaps", "labels", "image_embedding"]
    assert list(clip.graph_io("text_encoder.onnx")[1]) == ["embeddings"]
    assert list(clip.graph_io("text_explainer.onnx")[0]) == ["input_ids", "eot_index", "image_embedding"]
    sam2 = bundles["sam2"].manifest
    assert sam2.graph_files() == ("encoder.onnx", "decoder.onnx", "memory_attention.onnx", "memory_encoder.onnx",
                                  "track_decoder.onnx")
    assert list(sam2.graph_io("memory_attention.onnx")[0]) == ["image_embeddings", "memories", "memory_slots",
                                                               "object_pointers", "pointer_distances"]
    assert set(MASK_HIGH_RES) <= set(sam2.graph_io("decoder.onnx")[0])
    assert not set(MASK_HIGH_RES) & set(bundles["sam"].manifest.graph_io("decoder.onnx")[0])
    with pytest.raises(BundleError, match="has no graph 'model.onnx'"):
        sam2.graph_io("model.onnx")


def test_bundle_properties(bundles):
    b = load_bundle(bundles["clip"].path)
    assert (b.kind, b.backbone_name, b.weights_source, b.random_weights) == ("clip", TINY.name, "random", True)
    assert (b.classes, b.image_size, b.method, b.precision) == (["cat", "dog"], 32, "surgery", "fp32")
    s = load_bundle(bundles["sam"].path, kind="mask-model")
    assert (s.kind, s.backbone_name, s.weights_source, s.random_weights) == ("mask-model", "tiny-sam", "file", False)
    assert "verify_digests" not in load_bundle.__code__.co_varnames  # no way around the digests


# ---- mask-model bundles are checked as strictly as CLIP bundles ---------------------------------------------

@pytest.fixture
def no_graph_opens(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a graph was opened before the manifest was refused")
    monkeypatch.setattr(onnxruntime, "InferenceSession", refuse)


def _edited(bundles, tmp_path, family, edit) -> Path:
    dst = tmp_path / f"edited-{family}"
    shutil.copytree(bundles[family].path, dst)
    m = json.loads((dst / "manifest.json").read_text())
    edit(m)
    (dst / "manifest.json").write_text(json.dumps(m))  # the files' digests still hold: only the manifest changed
    return dst


def _refused(path, pattern) -> str:
    with pytest.raises(BundleError) as e:
        MaskPredictor.from_bundle(path, providers="cpu")
    msg = str(e.value)
    assert "\n" not in msg and re.search(pattern, msg), msg
    return msg


def _drop_high_res(m):
    for name in MASK_HIGH_RES:
        m["graphs"]["decoder"]["inputs"].pop(name)


def _set(path: str, value):
    def edit(m):
        *parents, last = path.split(".")
        for p in parents:
            m = m[p]
        m[last] = value
    return edit


def _pop(path: str):
    def edit(m):
        *parents, last = path.split(".")
        for p in parents:
            m = m[p]
        m.pop(last)
    return edit


NAN, INF = math.nan, math.inf


@pytest.mark.parametrize("family, edit, pattern", [
    # a missing section or field
    ("sam", _pop("decoding"), r"missing field 'decoding'"),
    ("sam", _pop("preprocess"), r"missing field 'preprocess'"),
    ("sam", _pop("graphs.decoder"), r"missing field 'graphs.decoder'"),
    ("sam2", _pop("preprocess.scale"), r"missing field 'preprocess.scale'"),
    ("sam", _pop("family"), r"missing field 'family'"),
    ("sam", _pop("model"), r"missing field 'model'"),
    ("sam", _set("graphs", None), r"field 'graphs' must be an object"),
    # non-finite or out-of-range numbers
    ("sam", _set("decoding.mask_threshold", NAN), r"field 'decoding.mask_threshold' must be a finite number"),
    ("sam2", _set("decoding.mask_threshold", INF), r"field 'decoding.mask_threshold' must be a finite number"),
    ("sam2", _set("decoding.mask_threshold", "0"), r"field 'decoding.mask_threshold' must be a finite number"),
    ("sam", _set("preprocess.scale", 0), r"field 'preprocess.scale' must be a positive number"),
    ("sam2", _set("preprocess.scale", INF), r"field 'preprocess.scale' must be a finite number"),
    ("sam", _set("preprocess.mean", [1.0, NAN, 1.0]), r"field 'preprocess.mean' must hold finite numbers"),
    ("sam", _set("preprocess.std", [58.0, 0.0, 57.0]), r"field 'preprocess.std' must hold positive numbers"),
    ("sam2", _set("preprocess.std", [0.2, 0.2]), r"field 'preprocess.std' must be a list of 3 numbers"),
    ("sam2", _set("decoding.stability.delta", NAN), r"field 'decoding.stability.delta' must be a finite number"),
    ("sam2", _set("decoding.low_res_clamp", -INF), r"field 'decoding.low_res_clamp' must be a finite number"),
    ("sam", _set("image_size", 512), r"field 'image_size' must be 1024"),
    ("sam", _set("fidelity", {"passed": "yes"}), r"field 'fidelity' entry 'passed' must be true or false"),
    ("sam", _set("precision", "bf16"), r"field 'precision' must be one of fp32, fp16, int8"),
    ("sam", _set("preprocess.resize", "crop"), r"field 'preprocess.resize' must be one of longest-side, stretch"),
    # the family against the preprocessing and both graphs
    ("sam", _set("family", "sam3"), r"field 'family' must be one of sam, sam2"),
    ("sam", _set("family", "sam2"), r"family 'sam2' resizes 'stretch', but 'preprocess.resize' is 'longest-side'"),
    ("sam", lambda m: m.update(family="sam2", preprocess=dict(m["preprocess"], resize="stretch")),
     r"family 'sam2' does not match graphs.encoder.outputs: a sam2 graph has high_res_feats_0"),
    ("sam2", lambda m: m.update(family="sam", preprocess=dict(m["preprocess"], resize="longest-side")),
     r"family 'sam' does not match graphs.encoder.outputs: a sam graph has image_embeddings, the manifest lists "
     r"high_res_feats_0"),
    ("sam2", _drop_high_res, r"family 'sam2' does not match graphs.decoder.inputs"),
    ("sam", lambda m: m["graphs"]["decoder"]["inputs"].update(
        {MASK_HIGH_RES[0]: {"dtype": "float32", "shape": [1, 32, 256, 256]}}),
     r"family 'sam' does not match graphs.decoder.inputs"),
    ("sam", _set("graphs.encoder.outputs.image_embeddings.shape", [1, 256, 32, 32]),
     r"encoder output image_embeddings float32 \[1, 256, 32, 32\] is not the decoder's input float32 "
     r"\[1, 256, 64, 64\]"),
    ("sam", _set("graphs.encoder.inputs.image.shape", [1, 3, 512, 512]),
     r"'graphs.encoder.inputs' says shape \[1, 3, 512, 512\], the runtime feeds \[1, 3, 1024, 1024\]"),
    ("sam", _set("graphs.decoder.outputs.low_res_masks.shape", ["prompts", 3, 256, 256]),
     r"must hold the 4 mask tokens"),
    ("sam2", _set("graphs.decoder.outputs.iou_predictions.dtype", "float16"),
     r"iou_predictions is float16; every mask-model tensor is float32"),
    ("sam", _set("graphs.encoder.file", "model.onnx"), r"field 'graphs.encoder.file' must be 'encoder.onnx'"),
    ("sam", lambda m: m["graphs"].update(encoder=m["graphs"]["decoder"], decoder=m["graphs"]["encoder"]),
     r"field 'graphs.encoder.file' must be 'encoder.onnx', got 'decoder.onnx'"),
    ("sam", _set("graphs.decoder.inputs", []), r"field 'graphs.decoder.inputs' must map tensor names"),
    ("sam", lambda m: m["files"].pop("decoder.onnx"), r"'files' must list decoder.onnx with its sha256"),
    # the schema version and kind
    ("sam", _set("schema_version", 99), r"schema version 99 is not supported by this clipxai .*re-export"),
    ("sam", _set("kind", "clip"), r"this is a 'clip' bundle, not a 'mask-model' bundle"),
])
def test_a_bad_mask_manifest_is_one_line_before_any_graph_runs(bundles, tmp_path, no_graph_opens, family, edit,
                                                               pattern):
    msg = _refused(_edited(bundles, tmp_path, family, edit), pattern)
    assert "Traceback" not in msg


def test_a_graph_that_does_not_match_its_family_is_refused_before_it_runs(bundles, tmp_path, monkeypatch):
    """A self-consistent SAM 2.1 manifest whose decoder.onnx is a SAM decoder (no high-res inputs): the
    opened session's inputs differ from the manifest's, a one-line error before anything runs."""
    dst = tmp_path / "swapped"
    shutil.copytree(bundles["sam2"].path, dst)
    shutil.copyfile(bundles["sam"].path / "decoder.onnx", dst / "decoder.onnx")
    m = json.loads((dst / "manifest.json").read_text())
    m["files"]["decoder.onnx"]["sha256"] = sha256_file(dst / "decoder.onnx")
    (dst / "manifest.json").write_text(json.dumps(m))
    ran = []
    real = onnxruntime.InferenceSession.run
    monkeypatch.setattr(onnxruntime.InferenceSession, "run", lambda *a, **k: ran.append(1) or real(*a, **k))
    with pytest.raises(BundleError) as e:
        MaskPredictor.from_bundle(dst, providers="cpu", graph_cache=False)
    assert re.search(r"decoder.onnx: graph inputs .* differ from the manifest's", str(e.value)), str(e.value)
    assert "\n" not in str(e.value) and not ran


def test_the_runtime_reads_the_typed_mask_fields(bundles):
    sam = MaskPredictor.from_bundle(bundles["sam2"].path, providers="cpu", graph_cache=False)
    m = sam.bundle.manifest
    assert isinstance(m, MaskManifest) and sam.family == m.family == "sam2"
    assert sam.preprocess.scale == pytest.approx(1 / 255) and sam.mask_threshold == 0.0
    assert sam.model == "tiny-sam2"
