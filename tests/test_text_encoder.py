"""On-device vocabulary: the text-encoder graph, set_classes, the encoding cache and the CLIs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from clipxai.models import reference as ref
from clipxai.contract import BPE_VOCAB_FILE, INPUT_REDUNDANCY, INPUT_TEXT, TEXT_ENCODER_FILE
from clipxai.errors import ClipxaiError
from clipxai.runtime import Predictor
from clipxai.runtime.text.cache import EncodingCache
from clipxai.runtime.text.encoder import TextEncoder
from clipxai.templates import TEMPLATES
from helpers import read_manifest
from tiny import TINY

ROCKET = Path(__file__).parent.parent / "examples" / "rocket.jpg"
TOL = 1e-4


def _export(out, classes, text_encoder, redundancy=None, method="surgery"):
    from clipxai.export.pipeline import ExportConfig, export_bundle
    return export_bundle(ExportConfig(output=out, classes=classes, backbone=TINY.name, pretrained="random",
                                      image_size=32, text_encoder=text_encoder, redundancy=redundancy,
                                      method=method)).path


@pytest.fixture(scope="module")
def te_bundle(tmp_path_factory):
    return _export(tmp_path_factory.mktemp("te") / "b", ["sky", "rocket"], True)


@pytest.fixture(scope="module")
def baked3(tmp_path_factory):
    return _export(tmp_path_factory.mktemp("b3") / "b", ["red mug", "table", "sky"], False)


@pytest.fixture(scope="module")
def baked1(tmp_path_factory):
    return _export(tmp_path_factory.mktemp("b1") / "b", ["red mug"], False)


@pytest.fixture(scope="module")
def encoder(te_bundle):
    from clipxai.runtime.bundle import load_bundle
    return TextEncoder.from_bundle(load_bundle(te_bundle))


def _images():
    rng = np.random.default_rng(3)
    return [str(ROCKET), (rng.random((50, 70, 3)) * 255).astype(np.uint8)]


def _assert_same_predictions(a, b):
    for pa, pb in zip(a, b):
        assert pa.classes == pb.classes
        assert np.abs(pa.heatmaps_grid - pb.heatmaps_grid).max() <= TOL
        assert np.abs(pa.similarity - pb.similarity).max() <= TOL
        assert np.abs(pa.scores - pb.scores).max() <= TOL


def test_bundle_carries_text_graph_and_vocabulary(te_bundle):
    import open_clip.tokenizer
    m = read_manifest(te_bundle)
    assert {TEXT_ENCODER_FILE, BPE_VOCAB_FILE} <= set(m["files"])
    assert (te_bundle / BPE_VOCAB_FILE).read_bytes() == Path(open_clip.tokenizer.default_bpe()).read_bytes()
    assert m["text_encoder"]["context_length"] == 77 and m["redundancy"] == "auto"
    assert set(m["graph"]["inputs"]) == {"image", INPUT_TEXT, INPUT_REDUNDANCY}
    assert m["verification"]["text_encoder"] <= TOL


def test_text_graph_equals_open_clip_encode_text(encoder, tiny_model):
    import open_clip
    from test_tokenizer import CORPUS
    texts = CORPUS + [t.format("red mug") for t in TEMPLATES[:20]] + ["a dog <end_of_text> and a cat"]
    ids = open_clip.get_tokenizer(TINY.open_clip_name)(texts)
    ours = encoder.encode_ids(ids.numpy())
    with torch.no_grad():
        theirs = tiny_model.model.encode_text(ids).numpy()
    assert np.abs(ours - theirs).max() <= TOL
    # the cut batches (sorted by length) give what one prompt at a time gives
    alone = encoder.encode_ids(ids.numpy(), batch_size=1)
    assert np.abs(ours - alone).max() <= 1e-5


def test_prompt_ensemble_equals_reference(encoder, tiny_model):
    import open_clip
    tok = open_clip.get_tokenizer(TINY.open_clip_name)
    classes = ["red mug", "table", ""]
    want = ref.prompt_ensemble(tiny_model.model, tok, classes, TEMPLATES).numpy()
    assert np.abs(encoder.encode_classes(classes) - want).max() <= 1e-5
    short = ["a photo of a {}.", "itap of my {}."]
    want = ref.prompt_ensemble(tiny_model.model, tok, classes, short).numpy()
    assert np.abs(encoder.encode_classes(classes, short) - want).max() <= 1e-5


def test_heatmaps_of_a_device_vocabulary_equal_an_export_with_it(te_bundle, baked3, tmp_path):
    device = Predictor.from_bundle(te_bundle, providers="cpu")
    device.set_classes(["red mug", "table", "sky"], cache=tmp_path / "cache")
    exported = Predictor.from_bundle(baked3, providers="cpu")
    assert device.classes == exported.classes == ["red mug", "table", "sky"]
    _assert_same_predictions(device.predict_batch(_images()), exported.predict_batch(_images()))


@pytest.mark.parametrize("method", ["grad-eclip", "maskclip"])
def test_methods_without_feature_surgery_take_device_vocabularies(method, tmp_path):
    """Their graphs have no redundancy input (the exporter drops an unused input): the manifest, the
    verification and the runtime agree on that, and the maps equal an export with the classes."""
    device = Predictor.from_bundle(_export(tmp_path / "te", ["sky", "rocket"], True, method=method), providers="cpu")
    assert INPUT_REDUNDANCY not in read_manifest(device.bundle.path)["graph"]["inputs"]
    device.set_classes(["red mug", "table", "sky"], cache=False)
    exported = Predictor.from_bundle(_export(tmp_path / "b", ["red mug", "table", "sky"], False, method=method),
                                     providers="cpu")
    _assert_same_predictions(device.predict_batch(_images()), exported.predict_batch(_images()))


def test_single_class_on_the_device_uses_empty_prompt_redundancy_like_an_export(te_bundle, baked1, tmp_path):
    assert read_manifest(baked1)["redundancy"] == "empty"
    device = Predictor.from_bundle(te_bundle, providers="cpu")
    device.set_classes(["red mug"], cache=False)
    exported = Predictor.from_bundle(baked1, providers="cpu")
    preds = device.predict_batch(_images())
    _assert_same_predictions(preds, exported.predict_batch(_images()))
    assert preds[0].heatmaps_grid.max() == 1.0  # not the all-zero map of "classes" with K == 1


def test_bundle_vocabulary_is_used_until_set_classes(te_bundle, tmp_path):
    p = Predictor.from_bundle(te_bundle, providers="cpu")
    before = p.predict(str(ROCKET))
    assert before.classes == ["sky", "rocket"]
    p.set_classes(["rocket", "sky"], cache=False)
    after = p.predict(str(ROCKET))
    assert np.abs(after.heatmaps_grid[::-1] - before.heatmaps_grid).max() <= TOL


def test_set_classes_on_a_bundle_without_text_encoder_says_how_to_export(baked3):
    p = Predictor.from_bundle(baked3, providers="cpu")
    with pytest.raises(ClipxaiError, match="--text-encoder"):
        p.set_classes(["red mug"])


@pytest.mark.parametrize("names, templates, match", [
    ([], None, "no classes"), (["a", " "], None, "blank"), (["dog", "Dog"], None, "duplicate"),
    (["dog"], [], "templates is empty"), (["dog"], ["no placeholder"], "exactly one"),
    (["dog"], ["{} and {}"], "exactly one"), (["dog"], "a {}", "not one string"),
])
def test_set_classes_refuses_bad_input(te_bundle, names, templates, match):
    p = Predictor.from_bundle(te_bundle, providers="cpu")
    with pytest.raises(ClipxaiError, match=match):
        p.set_classes(names, templates=templates, cache=False)
    assert p.classes == ["sky", "rocket"]  # unchanged


def test_cache_hit_skips_the_encoder_and_corrupt_entries_are_rewritten(te_bundle, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    p = Predictor.from_bundle(te_bundle, providers="cpu")
    p.set_classes(["red mug", "table"], cache=cache)
    first = p.vocabulary
    files = sorted(cache.rglob("*.npz"))
    assert len(files) == 2 and not list(cache.rglob("*.tmp"))  # bundle classes and "" come from the bundle

    calls = []
    real = TextEncoder.encode_classes
    monkeypatch.setattr(TextEncoder, "encode_classes", lambda self, names, *a, **k: calls.append(list(names))
                        or real(self, names, *a, **k))
    q = Predictor.from_bundle(te_bundle, providers="cpu")
    q.set_classes(["red mug", "table"], cache=cache)
    assert calls == []
    assert np.array_equal(q.vocabulary.text, first.text)

    files[0].write_bytes(b"\x93NUMPY garbage")
    q.set_classes(["table", "red mug"], cache=cache)
    assert len(calls) == 1 and len(calls[0]) == 1
    with np.load(files[0]) as z:
        assert z["embedding"].shape == (first.text.shape[1],)  # rewritten
    assert np.abs(q.vocabulary.text[::-1] - first.text).max() <= 1e-6

    # other templates are other entries; the redundancy vector is recomputed for them
    q.set_classes(["red mug"], templates=["a photo of a {}."], cache=cache)
    assert calls[-1] == ["red mug", ""] and len(list(cache.rglob("*.npz"))) == 4
    assert not np.allclose(q.vocabulary.redundancy, first.redundancy)


def test_swapped_or_scaled_text_cache_entries_are_never_used(te_bundle, tmp_path, monkeypatch, caplog):
    """An entry of another class moved under this one's name, or its vector scaled: discarded, re-encoded."""
    import logging
    cache = tmp_path / "cache"
    p = Predictor.from_bundle(te_bundle, providers="cpu")
    p.set_classes(["red mug", "table"], cache=cache)
    want = p.vocabulary.text.copy()
    store = EncodingCache(cache, p._text_encoder.digest, TEMPLATES,
                          want.shape[1])
    mug, table = store.path("red mug"), store.path("table")
    mug_bytes, table_bytes = mug.read_bytes(), table.read_bytes()
    mug.write_bytes(table_bytes)  # swapped: "table"'s entry under "red mug"'s name
    calls = []
    real = TextEncoder.encode_classes
    monkeypatch.setattr(TextEncoder, "encode_classes", lambda self, names, *a, **k: calls.append(list(names))
                        or real(self, names, *a, **k))
    caplog.set_level(logging.WARNING, logger="clipxai")
    q = Predictor.from_bundle(te_bundle, providers="cpu")
    q.set_classes(["red mug", "table"], cache=cache)
    assert calls == [["red mug"]] and "written for another class" in caplog.text
    assert np.abs(q.vocabulary.text - want).max() <= 1e-6
    with np.load(table) as z:  # scaled by 2, its identity kept
        scaled = {"embedding": z["embedding"] * 2, "identity": z["identity"]}
    with open(table, "wb") as f:
        np.savez(f, **scaled)
    q.set_classes(["red mug", "table"], cache=cache)
    assert calls[-1] == ["table"] and np.abs(q.vocabulary.text - want).max() <= 1e-6
    assert mug.read_bytes() != table_bytes and mug_bytes


def test_segment_cli_names_any_class_with_a_text_encoder_bundle(te_bundle, tmp_path):
    from clipxai.cli.segment import main
    out = tmp_path / "out"
    r = CliRunner().invoke(main, [str(te_bundle), str(ROCKET), "--out", str(out), "--classes", "red mug,dragon",
                                  "--cache-dir", str(tmp_path / "c"), "--no-overlays"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    rec = json.loads((out / "rocket.json").read_text())
    assert set(rec["scores"]) == {"red mug", "dragon"}
    assert len(list((tmp_path / "c").rglob("*.npz"))) == 2


def test_segment_cli_unknown_class_without_text_encoder_says_how_to_export(baked3, tmp_path):
    from clipxai.cli.segment import main
    r = CliRunner().invoke(main, [str(baked3), str(ROCKET), "--out", str(tmp_path / "o"), "--classes", "sky,dragon"])
    assert r.exit_code == 2
    assert "'dragon' is not in the bundle" in r.stderr and "--text-encoder" in r.stderr
    assert "Traceback" not in r.output


def test_export_cli_text_encoder_flag(tmp_path):
    from clipxai.export.cli import main
    out = tmp_path / "b"
    r = CliRunner().invoke(main, ["--backbone", TINY.name, "--pretrained", "random", "--image-size", "32",
                                  "--classes", "dog", "--text-encoder", "-o", str(out)], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert "verified text encoder" in r.stdout
    assert read_manifest(out)["redundancy"] == "auto" and (out / TEXT_ENCODER_FILE).is_file()
