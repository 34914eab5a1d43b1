"""clipxai-segment: outputs per image, bad files skipped with a summary, subsets, batching."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from clipxai.cli.segment import main
from tiny import TINY

ROCKET = Path(__file__).parent.parent / "examples" / "rocket.jpg"
CLASSES = ["rocket", "sky", "smoke"]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    from clipxai.export.pipeline import ExportConfig, export_bundle
    out = tmp_path_factory.mktemp("seg") / "b"
    return export_bundle(ExportConfig(output=out, classes=CLASSES, backbone=TINY.name, pretrained="random",
                                      image_size=32)).path


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_writes_overlays_segmentation_and_json(bundle, tmp_path):
    out = tmp_path / "out"
    r = invoke(bundle, ROCKET, "--out", out)
    assert r.exit_code == 0, r.output
    assert f"results: {out}" in r.stdout and "RANDOM" in r.stderr
    from clipxai.runtime.visualize import BANNER_HEIGHT  # random weights: the banner's strip above each picture
    for c in CLASSES:
        im = Image.open(out / f"rocket_heatmap_{c}.png")
        assert im.size == (640, 427 + BANNER_HEIGHT) and im.mode == "RGB"
    seg = Image.open(out / "rocket_segmentation.png")
    assert seg.height == 427 + BANNER_HEIGHT and seg.width > 640  # image plus legend panel
    rec = json.loads((out / "rocket.json").read_text())
    assert set(rec["scores"]) == set(CLASSES) and rec["top_class"] in CLASSES
    assert abs(sum(rec["scores"].values()) - 1) < 1e-4
    pts = rec["points"]["sky"]
    assert len(pts["coords"]) == len(pts["labels"]) and all(len(p) == 2 for p in pts["coords"])
    assert not list(out.glob(".*partial"))


def test_folder_with_a_bad_file_reports_and_continues(bundle, tmp_path):
    src = tmp_path / "imgs"
    src.mkdir()
    shutil.copy(ROCKET, src / "a.jpg")
    Image.fromarray(np.zeros((40, 30, 3), np.uint8)).save(src / "b.png")
    (src / "broken.jpg").write_bytes(b"garbage")
    (src / "notes.txt").write_text("not an image, not picked up")
    out = tmp_path / "out"
    r = invoke(bundle, src, "--out", out, "--batch-size", "2", "--no-overlays")
    assert r.exit_code == 1
    assert "1 input failed, 2 processed:" in r.stderr and "broken.jpg: not a readable image" in r.stderr
    assert (out / "a.json").exists() and (out / "b.json").exists() and not (out / "broken.json").exists()
    assert not list(out.glob("*_heatmap_*"))
    assert "Traceback" not in r.output


def test_globs_subset_and_same_names_in_two_folders(bundle, tmp_path):
    for d in ("x", "y"):
        (tmp_path / d).mkdir()
        shutil.copy(ROCKET, tmp_path / d / "pic.jpg")
    out = tmp_path / "out"
    r = invoke(bundle, str(tmp_path / "*" / "pic.jpg"), "--out", out, "--classes", "sky,rocket")
    assert r.exit_code == 0, r.output
    assert (out / "x" / "pic.json").exists() and (out / "y" / "pic.json").exists()  # their relative paths
    rec = json.loads((out / "x" / "pic.json").read_text())
    assert list(rec["scores"]) == ["sky", "rocket"] and rec["image"].endswith("x/pic.jpg")
    assert json.loads((out / "y" / "pic.json").read_text())["image"].endswith("y/pic.jpg")
    assert sorted(p.name for p in (out / "x").glob("pic_heatmap_*")) == ["pic_heatmap_rocket.png",
                                                                        "pic_heatmap_sky.png"]


def test_user_errors(bundle, tmp_path):
    r = invoke(bundle, ROCKET, "--out", tmp_path / "o", "--classes", "sky,dragon")
    assert r.exit_code == 2 and "error: --classes: 'dragon' is not in the bundle" in r.stderr
    r = invoke(tmp_path / "nobundle", ROCKET, "--out", tmp_path / "o")
    assert r.exit_code == 2 and "not a bundle directory" in r.stderr
    r = invoke(bundle, tmp_path / "missing.jpg", "--out", tmp_path / "o")
    assert r.exit_code == 2 and "no images to process" in r.stderr
    r = invoke(bundle, ROCKET, "--out", tmp_path / "o", "--providers", "cuda")
    assert r.exit_code == 2 and "not available" in r.stderr
    assert "Traceback" not in r.output
