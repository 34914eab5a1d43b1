"""``clipxai evaluate multilabel``: TaI-DPT's mAP against an independent implementation, the task end to
end on a synthetic labelled set, and the bad-input rules of issue 31."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from clipxai.apps.evaluate.multilabel import run_multilabel
from clipxai.apps.evaluate.multilabel_job import MultilabelJob, resize_center_crop
from clipxai.cli.evaluate import evaluate
from clipxai.errors import ClipxaiError
from clipxai.eval.multilabel import (
    average_precision, best_f1_thresholds, mean_average_precision, precision_recall, read_labels,
)
from clipxai.runtime import Predictor

from tiny import TINY

CLASSES = ["cat", "dog", "sky"]


def brute_force_ap(scores, targets):
    """AP from its definition: the mean over the positives i of |{positives j: s_j >= s_i}| / |{j: s_j >= s_i}|
    (no ties in the tests' scores), 0 without positives."""
    pos = np.flatnonzero(targets)
    if len(pos) == 0:
        return 0.0
    return float(np.mean([(scores[pos] >= scores[i]).sum() / (scores >= scores[i]).sum() for i in pos]))


def test_map_matches_an_independent_implementation():
    rng = np.random.default_rng(0)
    for n, k in ((50, 7), (13, 3), (200, 20)):
        targets = (rng.random((n, k)) < 0.3).astype(np.uint8)
        targets[:, 0] = 0  # a class without positives: AP 0 (TaI-DPT's epsilon)
        scores = rng.normal(size=(n, k)) + 1.5 * targets
        mean_ap, ap = mean_average_precision(targets, scores)
        want = np.array([brute_force_ap(scores[:, c], targets[:, c]) for c in range(k)])
        assert np.abs(ap - want).max() < 1e-7
        assert abs(mean_ap - 100 * want.mean()) < 1e-6
    assert average_precision(np.array([3.0, 2.0, 1.0]), np.array([1, 0, 1])) == pytest.approx((1 + 2 / 3) / 2)


def test_precision_recall_and_best_f1():
    targets = np.array([[1, 0], [1, 0], [0, 0], [0, 1]], np.uint8)
    scores = np.array([[0.9, 0.1], [0.4, 0.2], [0.6, 0.3], [0.1, 0.8]])
    p, r = precision_recall(targets, scores, 0.5)
    assert p.tolist() == [0.5, 1.0] and r.tolist() == [0.5, 1.0]
    best = best_f1_thresholds(targets, scores)
    assert best[0]["threshold"] == 0.4 and best[0]["recall"] == 1.0 and best[0]["precision"] == pytest.approx(2 / 3)
    assert best[1] == {"threshold": 0.8, "precision": 1.0, "recall": 1.0, "f1": 1.0}


def test_center_crop_is_torchvisions():
    transforms = pytest.importorskip("torchvision.transforms")
    rng = np.random.default_rng(1)
    for w, h in ((50, 37), (37, 61), (32, 32), (101, 64)):
        img = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        want = transforms.CenterCrop(32)(transforms.Resize(32, interpolation=transforms.InterpolationMode.BICUBIC)(img))
        assert np.array_equal(np.asarray(resize_center_crop(img, 32)), np.asarray(want)), (w, h)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    from clipxai.export.pipeline import ExportConfig, export_bundle
    out = tmp_path_factory.mktemp("ml") / "b"
    return export_bundle(ExportConfig(output=out, classes=CLASSES, backbone=TINY.name, pretrained="random",
                                      image_size=32)).path


def _dataset(root, n=12, seed=0):
    """n random images in root/img (two in a subfolder) and their random labels."""
    rng = np.random.default_rng(seed)
    (root / "img" / "sub").mkdir(parents=True)
    rows = {}
    for i in range(n):
        name = f"sub/{i}.png" if i < 2 else f"{i}.png"
        size = (int(rng.integers(24, 80)), int(rng.integers(24, 80)))
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(root / "img" / name)
        rows[name] = [c for c in CLASSES if rng.random() < 0.5] or ["dog"]
    return rows


def _csv(path, rows):
    path.write_text("image,labels\n" + "".join(f"{k},{'|'.join(v)}\n" for k, v in rows.items()))
    return path


def test_the_task_computes_map_of_the_graphs_labels(bundle, tmp_path):
    rows = _dataset(tmp_path)
    rows_file = dict(rows, **{"gone.png": ["cat"]})          # listed, not in the folder
    rows_file["5.png"] = rows["5.png"] + ["unicorn"]          # a class the bundle does not know
    Image.new("RGB", (30, 30)).save(tmp_path / "img" / "extra.png")  # in the folder, not labelled
    labels = _csv(tmp_path / "labels.csv", rows_file)
    report = run_multilabel(MultilabelJob(str(bundle), str(tmp_path / "img"), str(labels), threshold=0.0,
                                          batch_size=5, out=str(tmp_path / "out" / "m.json")))
    assert report["images"] == len(rows) and report["missing_images"] == ["gone.png"]
    assert report["unlabelled_images"] == ["extra.png"] and report["unknown_classes"] == ["unicorn"]
    # the same numbers from the Predictor's labels, image by image, and the independent AP
    predictor = Predictor.from_bundle(bundle, providers="cpu")
    names = list(rows)
    scores = np.stack([predictor.predict(resize_center_crop(Image.open(tmp_path / "img" / n).convert("RGB"), 32))
                       .labels for n in names]).astype(np.float64)
    targets = np.array([[c in rows[n] for c in CLASSES] for n in names], np.uint8)
    want = [100 * brute_force_ap(scores[:, k], targets[:, k]) for k in range(3)]
    assert [r["AP"] for r in report["classes"]] == pytest.approx(want, abs=1e-4)
    assert report["mAP"] == pytest.approx(np.mean(want), abs=1e-3)
    assert [r["positives"] for r in report["classes"]] == targets.sum(0).tolist()
    assert json.loads((tmp_path / "out" / "m.json").read_text())["mAP"] == report["mAP"]
    whole = run_multilabel(MultilabelJob(str(bundle), str(tmp_path / "img"), str(labels), full_image=True))
    assert whole["settings"]["preprocess"] == "full-image" and whole["images"] == len(rows)


def test_coco_labels(bundle, tmp_path):
    rows = _dataset(tmp_path, n=6, seed=3)
    names = list(rows)
    coco = {"images": [{"id": i, "file_name": n} for i, n in enumerate(names)],
            "categories": [{"id": 10 + k, "name": c} for k, c in enumerate(CLASSES)],
            "annotations": [{"id": j, "image_id": names.index(n), "category_id": 10 + CLASSES.index(c)}
                            for j, (n, c) in enumerate((n, c) for n in names for c in rows[n])]}
    (tmp_path / "coco.json").write_text(json.dumps(coco))
    labels = read_labels(tmp_path / "coco.json")
    assert labels.classes == CLASSES and labels.images == {n: set(v) for n, v in rows.items()}
    csv_report = run_multilabel(MultilabelJob(str(bundle), str(tmp_path / "img"),
                                              str(_csv(tmp_path / "l.csv", rows))))
    coco_report = run_multilabel(MultilabelJob(str(bundle), str(tmp_path / "img"), str(tmp_path / "coco.json")))
    assert coco_report["mAP"] == csv_report["mAP"]


@pytest.mark.parametrize("content, message", [
    ("image,labels\na.png,\nb.png,\n", "no image has any class"),
    ("file,classes\na.png,cat\n", "the first line must be the header 'image,labels'"),
    ("image,labels\n", "lists no image"),
])
def test_bad_labels_files_are_one_line_errors(tmp_path, content, message):
    (tmp_path / "l.csv").write_text(content)
    with pytest.raises(ClipxaiError, match=message):
        read_labels(tmp_path / "l.csv")


def test_the_command(bundle, tmp_path):
    rows = _dataset(tmp_path, n=5, seed=4)
    labels = _csv(tmp_path / "l.csv", rows)
    r = CliRunner().invoke(evaluate, ["multilabel", str(bundle), "--images", str(tmp_path / "img"),
                                      "--labels", str(labels), "--threshold", "1.5", "-o", str(tmp_path / "o")])
    assert r.exit_code == 0, r.output
    assert "mAP " in r.output and "P@t" in r.output and (tmp_path / "o" / "multilabel.json").is_file()
    (tmp_path / "none.csv").write_text("image,labels\n0.png,unicorn\n")
    bad = CliRunner().invoke(evaluate, ["multilabel", str(bundle), "--images", str(tmp_path / "img"),
                                        "--labels", str(tmp_path / "none.csv")])
    assert bad.exit_code == 2 and "Traceback" not in bad.output
    assert bad.stderr.strip().splitlines()[-1].startswith("error: none of the labels file's classes")


def test_a_text_encoder_bundle_takes_the_classes_of_the_labels_file(tmp_path):
    from clipxai.export.pipeline import ExportConfig, export_bundle
    b = export_bundle(ExportConfig(output=tmp_path / "te", classes=["tree", "car"], backbone=TINY.name,
                                   pretrained="random", image_size=32, text_encoder=True)).path
    rows = _dataset(tmp_path, n=4, seed=5)
    report = run_multilabel(MultilabelJob(str(b), str(tmp_path / "img"), str(_csv(tmp_path / "l.csv", rows))))
    assert [r["class"] for r in report["classes"]] == read_labels(tmp_path / "l.csv").classes
    assert report["unknown_classes"] == []


def test_ray_equals_local(bundle, tmp_path):
    pytest.importorskip("ray")
    rows = _dataset(tmp_path, n=9, seed=6)
    (tmp_path / "img" / "broken.png").write_bytes(b"not a png")
    rows["broken.png"] = ["cat"]
    labels = _csv(tmp_path / "l.csv", rows)
    reports = []
    for extra, name in (([], "local"), (["--ray", "--actors", "2"], "ray")):
        r = CliRunner().invoke(evaluate, ["multilabel", str(bundle), "--images", str(tmp_path / "img"), "--labels",
                                          str(labels), "--threads", "1", "--batch-size", "3", *extra,
                                          "-o", str(tmp_path / name)])
        assert r.exit_code == 0, r.output
        reports.append(json.loads((tmp_path / name / "multilabel.json").read_text()))
    local, ray = reports
    assert ray["images"] == local["images"] == 9 and ray["skipped"] == local["skipped"]
    assert [s["image"] for s in ray["skipped"]] == ["broken.png"]
    assert [r["AP"] for r in ray["classes"]] == pytest.approx([r["AP"] for r in local["classes"]], abs=1e-6)
    assert ray["settings"]["ray"]["actors"] == 2
