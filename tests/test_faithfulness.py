"""Deletion/insertion faithfulness: hand-computed AUCs on a synthetic classifier, the random baseline's
reproducibility, and `clipxai evaluate faithfulness` on tiny bundles (labels, skipped files, errors)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from clipxai.eval.faithfulness import (
    RANDOM, Protocol, auc, evaluate, noise_for, perturbed_states, random_ranking, ranking,
)

ROCKET = Path(__file__).parent.parent / "examples" / "rocket.jpg"

# A 20 x 20 image whose class-0 evidence is the left half, painted 255: noise (0..254) never
# equals it, so the intact share of the evidence is exactly what the classifier below reads.
H = W = 20
EVIDENCE = np.zeros((H, W), bool)
EVIDENCE[:, :10] = True


def _image():
    img = np.zeros((H, W, 3), np.uint8)
    img[EVIDENCE] = 255
    return img


def _classify(states):
    """p(class 0) = intact share of the evidence region; p(class 1) = the rest."""
    intact = (states[:, EVIDENCE] == 255).all(axis=-1).mean(axis=1)
    return np.stack([intact, 1 - intact], axis=1)


def _maps():
    first = EVIDENCE.astype(float) + np.linspace(0, 0.1, H * W).reshape(H, W)  # evidence ranked first
    return {"first": lambda image, target: first, "last": lambda image, target: 1 - first}


def _report(seed=0):
    sample = [("synthetic", lambda: Image.fromarray(_image()), 0)]
    return evaluate(sample, _maps(), _classify, Protocol(steps=100, cal_gap=10, seed=seed))


def test_auc_known_by_hand():
    """200 evidence pixels = the half of 400 that L=100 steps of int(400/200)=2 pixels change.
    Evidence first: deletion removes a tenth of it per state, p = 1, 0.9, ..., 0 -> AUC 0.5;
    insertion from noise puts it back, p = 0, 0.1, ..., 1 -> AUC 0.5. Evidence last: deletion
    never reaches it (p = 1, AUC 1), insertion never restores it (p = 0, AUC 0)."""
    r = _report()
    np.testing.assert_allclose(r.fractions, np.arange(11) * 20 / 400)
    np.testing.assert_allclose(r.curves["first"]["deletion"]["prob"], 1 - np.arange(11) / 10, atol=1e-12)
    np.testing.assert_allclose(r.curves["first"]["insertion"]["prob"], np.arange(11) / 10, atol=1e-12)
    assert r.aucs["first"]["deletion"]["prob"] == pytest.approx(0.5)
    assert r.aucs["first"]["insertion"]["prob"] == pytest.approx(0.5)
    assert r.aucs["last"]["deletion"]["prob"] == pytest.approx(1.0)
    assert r.aucs["last"]["insertion"]["prob"] == pytest.approx(0.0)
    # top-1 (2 classes): class 0 wins while more than half of its evidence is intact; ties go to it
    np.testing.assert_array_equal(r.curves["first"]["deletion"]["top1"], [1] * 6 + [0] * 5)
    assert r.aucs["first"]["deletion"]["top5"] == 1.0  # 2 classes: always in the top 5
    # the random order lands in between: deletes about half of the evidence by the end
    assert 0.5 < r.aucs[RANDOM]["deletion"]["prob"] < 1.0


def test_random_baseline_is_reproducible():
    a, b, c = _report(seed=0), _report(seed=0), _report(seed=1)
    assert a.curves[RANDOM]["deletion"]["prob"].tolist() == b.curves[RANDOM]["deletion"]["prob"].tolist()
    assert a.aucs[RANDOM] == b.aucs[RANDOM]
    assert a.curves[RANDOM]["deletion"]["prob"].tolist() != c.curves[RANDOM]["deletion"]["prob"].tolist()
    np.testing.assert_array_equal(random_ranking((5, 4), 7, 3), random_ranking((5, 4), 7, 3))
    np.testing.assert_array_equal(noise_for((5, 4, 3), 7, 3), noise_for((5, 4, 3), 7, 3))
    assert noise_for((50, 50, 3), 0, 0).max() <= 254


def test_states_change_the_ranked_pixels_only():
    img = _image()
    order = ranking(np.arange(H * W, dtype=float).reshape(H, W))  # last pixel first
    noise = noise_for(img.shape, 0, 0)
    states = perturbed_states(img, order, noise, "deletion", Protocol())
    assert states.shape == (11, H, W, 3)
    changed = (states[1] != img).any(-1).reshape(-1)
    assert set(np.flatnonzero(changed)) <= set(order[:20].tolist())
    assert (states[-1].reshape(-1, 3)[order[:200]] == noise.reshape(-1, 3)[order[:200]]).all()
    assert (states[-1].reshape(-1, 3)[order[200:]] == img.reshape(-1, 3)[order[200:]]).all()
    ins = perturbed_states(img, order, noise, "insertion", Protocol())
    assert (ins[0] == noise).all()


def test_auc_of_a_line():
    assert auc([0, 0.25, 0.5], [0, 0.5, 1]) == pytest.approx(0.5)
    assert auc([0, 0.5], [1, 1]) == pytest.approx(1.0)


def test_unreadable_images_are_skipped_and_listed():
    def bad():
        raise OSError("cannot identify image file")
    samples = [("ok", lambda: Image.fromarray(_image()), 0), ("bad.jpg", bad, 0)]
    r = evaluate(samples, _maps(), _classify, Protocol())
    assert r.images == 1 and r.skipped == [("bad.jpg", "cannot identify image file")]


# --- clipxai evaluate faithfulness on tiny bundles ---

@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    from clipxai.export.pipeline import ExportConfig, export_bundle
    from tiny import TINY
    root = tmp_path_factory.mktemp("faith")
    out = []
    for method in ("surgery", "grad-eclip"):
        export_bundle(ExportConfig(output=root / method, classes=["rocket", "sky", "smoke"], backbone=TINY.name,
                                   method=method, pretrained="random", image_size=32))
        out.append(str(root / method))
    return out


@pytest.fixture()
def image_folder(tmp_path):
    folder = tmp_path / "images"
    for cls in ("rocket", "sky"):
        (folder / cls).mkdir(parents=True)
        Image.open(ROCKET).convert("RGB").resize((48, 40)).save(folder / cls / "a.jpg")
    (folder / "sky" / "broken.png").write_bytes(b"not a png")
    return folder


def _command():
    """``clipxai evaluate faithfulness`` as a click command."""
    from click.testing import CliRunner  # noqa: F401
    from clipxai.cli.evaluate import evaluate
    return lambda args: CliRunner().invoke(evaluate, ["faithfulness", *args])


def test_script_reports_every_method(bundles, image_folder, tmp_path):
    out = tmp_path / "report"
    r = _command()([*bundles, "--images", str(image_folder), "--out", str(out),
                                            "--steps", "20", "--cal-gap", "5"])
    assert r.exit_code == 0, r.output
    rec = json.loads((out / "faithfulness.json").read_text())
    assert rec["methods"] == ["surgery", "grad-eclip"] and rec["images"] == 2
    assert set(rec["auc"]) == {"surgery", "grad-eclip", RANDOM}
    assert len(rec["curves"]["surgery"]["deletion"]["top1"]) == 5
    assert rec["skipped"][0]["image"].endswith("broken.png")
    assert all(0 <= rec["auc"][m][mode][k] <= 1 for m in rec["auc"] for mode in rec["auc"][m]
               for k in rec["auc"][m][mode])
    plot = Image.open(out / "faithfulness.png")
    assert plot.size[0] > 600
    assert "skipped" in r.output and "broken.png" in r.output


def test_script_labels_file_and_unknown_class(bundles, image_folder, tmp_path):
    labels = tmp_path / "labels.txt"
    labels.write_text("# image, class\nrocket/a.jpg,rocket\nsky/a.jpg\tsky\n")
    out = tmp_path / "r"
    r = _command()([bundles[0], "--images", str(image_folder), "--labels", str(labels),
                                            "--out", str(out), "--steps", "10", "--cal-gap", "5", "--no-plot"])
    assert r.exit_code == 0, r.output
    assert json.loads((out / "faithfulness.json").read_text())["images"] == 2
    labels.write_text("rocket/a.jpg,rocket\nsky/a.jpg,zebra\n")
    r = _command()([bundles[0], "--images", str(image_folder), "--labels", str(labels),
                                            "--out", str(tmp_path / "r2"), "--no-plot"])
    assert r.exit_code == 2 and "'zebra'" in r.output and "Traceback" not in r.output
    assert len(r.output.strip().splitlines()) == 1 and not (tmp_path / "r2").exists()
