"""``clipxai export --templates openai-85|single|FILE`` (issue 31): recorded in the manifest, used by the
exporter and by the on-device text encoder; embeddings checked against open_clip's own encode_text."""

from __future__ import annotations

import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F

from clipxai.errors import ClipxaiError
from clipxai.export.pipeline import ExportConfig, export_bundle
from clipxai.runtime import Predictor
from clipxai.templates import TEMPLATES, resolve_templates

from helpers import leftovers, read_manifest
from tiny import TINY


def ensemble(model, templates, classes):
    """open_clip's encode_text per prompt, normalised, averaged per class, normalised: [K, D]."""
    tok = open_clip.get_tokenizer(TINY.open_clip_name)
    with torch.no_grad():
        rows = [F.normalize(model.encode_text(tok([t.format(c) for t in templates])), dim=-1).mean(0)
                for c in classes]
    return F.normalize(torch.stack(rows), dim=-1).numpy()


def test_template_choices_and_files(tmp_path):
    assert resolve_templates("openai-85") == ("clip-surgery-85", TEMPLATES)
    assert resolve_templates("single") == ("single", ("a photo of a {}.",))
    (tmp_path / "t.txt").write_text("a satellite image of {}.\n\n  a thermal image of a {}.  \n")
    assert resolve_templates(str(tmp_path / "t.txt")) == ("file", ("a satellite image of {}.",
                                                                    "a thermal image of a {}."))
    for content, message in (("a photo\n", "must contain exactly one '{}'"), ("\n\n", "has no template"),
                             ("{} and {}\n", "exactly one"), ("a {x} {}\n", "no other braces")):
        (tmp_path / "bad.txt").write_text(content)
        with pytest.raises(ClipxaiError, match=message):
            resolve_templates(str(tmp_path / "bad.txt"))
    with pytest.raises(ClipxaiError, match="neither openai-85 nor single nor a file"):
        resolve_templates(str(tmp_path / "missing.txt"))


def test_single_template_bundle(tmp_path, tiny_model):
    res = export_bundle(ExportConfig(output=tmp_path / "b", classes=["cat", "dog"], backbone=TINY.name,
                                     pretrained="random", image_size=32, templates="single"))
    m = read_manifest(res.path)
    assert m["templates"] == {"set": "single", "count": 1, "prompts": ["a photo of a {}."]}
    text = np.load(res.path / "text_embeddings.npy")
    assert np.abs(text - ensemble(tiny_model.model, ["a photo of a {}."], ["cat", "dog"])).max() <= 1e-4
    assert np.abs(np.load(res.path / "redundancy.npy") - ensemble(tiny_model.model, ["a photo of a {}."], [""])[0]
                  ).max() <= 1e-4


def test_the_default_manifest_is_unchanged(tmp_path):
    res = export_bundle(ExportConfig(output=tmp_path / "b", classes=["cat"], backbone=TINY.name,
                                     pretrained="random", image_size=32, verify=False))
    assert read_manifest(res.path)["templates"] == {"set": "clip-surgery-85", "count": 85}


def test_the_device_encoder_uses_the_bundles_templates(tmp_path, tiny_model):
    (tmp_path / "t.txt").write_text("a satellite image of {}.\na thermal image of a {}.\n")
    templates = ["a satellite image of {}.", "a thermal image of a {}."]
    res = export_bundle(ExportConfig(output=tmp_path / "b", classes=["road", "river"], backbone=TINY.name,
                                     pretrained="random", image_size=32, text_encoder=True,
                                     templates=str(tmp_path / "t.txt")))
    predictor = Predictor.from_bundle(res.path, providers="cpu")
    assert predictor.vocabulary.templates == tuple(templates)
    predictor.set_classes(["field", "road"], cache=False)
    assert np.abs(predictor.vocabulary.text - ensemble(tiny_model.model, templates, ["field", "road"])).max() <= 1e-4
    assert np.abs(predictor.vocabulary.redundancy - ensemble(tiny_model.model, templates, [""])[0]).max() <= 1e-4


def test_a_template_longer_than_the_context_is_refused(tmp_path):
    (tmp_path / "t.txt").write_text("a photo of {} " + "very " * 80 + "\n")
    with pytest.raises(ClipxaiError, match="tokens without a class name, longer than CLIP's 77-token context"):
        export_bundle(ExportConfig(output=tmp_path / "b", classes=["cat"], backbone=TINY.name, pretrained="random",
                                   image_size=32, templates=str(tmp_path / "t.txt")))
    assert not (tmp_path / "b").exists() and not leftovers(tmp_path)


def test_cli_templates_flag(tmp_path):
    from click.testing import CliRunner
    from clipxai.export.cli import main
    r = CliRunner().invoke(main, ["--backbone", TINY.name, "--pretrained", "random", "--classes", "a,b",
                                  "--image-size", "32", "--no-verify", "--templates", "single",
                                  "--labels-merge-rate", "0.3", "-o", str(tmp_path / "b")])
    assert r.exit_code == 0, r.output
    m = read_manifest(tmp_path / "b")
    assert m["templates"]["set"] == "single" and m["labels_merge_rate"] == 0.3
    bad = CliRunner().invoke(main, ["--backbone", TINY.name, "--pretrained", "random", "--classes", "a,b",
                                    "--templates", str(tmp_path / "nope.txt"), "-o", str(tmp_path / "c")])
    assert bad.exit_code == 2 and "Traceback" not in bad.output
