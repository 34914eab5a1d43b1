"""clipxai on Ray (--ray): the same results as one machine, an actor killed mid-run, unreadable images,
an unreachable cluster and a missing extra. Each test starts a local 2-CPU Ray instance (~5 s)."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from PIL import Image

from clipxai.cli.segment import main as segment_main
from tiny import TINY

ROOT = Path(__file__).parent.parent
ROCKET = ROOT / "examples" / "rocket.jpg"
CLASSES = ["rocket", "sky", "smoke"]



@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    from clipxai.export.pipeline import ExportConfig, export_bundle
    return export_bundle(ExportConfig(output=tmp_path_factory.mktemp("cl") / "b", classes=CLASSES,
                                      backbone=TINY.name, pretrained="random", image_size=32)).path


def _images(folder: Path, n: int, broken: bool = True) -> Path:
    folder.mkdir(parents=True)
    base = Image.open(ROCKET).convert("RGB")
    for i in range(n):
        base.rotate(7 * i).resize((64 + i, 48)).save(folder / f"img{i:02d}.jpg")
    if broken:
        (folder / "broken.jpg").write_bytes(b"not a jpeg")
    return folder


def _segment(*args):
    return CliRunner().invoke(segment_main, [str(a) for a in args])


def _jsons(folder: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(folder.glob("*.json"))}


def test_segment_on_ray_equals_local(bundle, tmp_path):
    images = _images(tmp_path / "in", 9)
    local = _segment(bundle, images, "--out", tmp_path / "local", "--threads", 1, "--batch-size", 4)
    ray = _segment("--ray", "--actors", 2, bundle, images, "--out", tmp_path / "ray", "--threads", 1,
                   "--batch-size", 4)  # flags in any order: --ray before the inputs
    assert local.exit_code == ray.exit_code == 1, ray.output  # 1: the broken image, listed
    assert "broken.jpg: not a readable image" in ray.output and "2 actors x 1 thread(s)" in ray.output
    assert "re-hashed it for 0 of" in ray.output  # the node verified the bundle; its actors trusted the stamp
    want = _jsons(tmp_path / "local")
    assert len(want) == 9 and _jsons(tmp_path / "ray") == want  # byte for byte
    assert sorted(p.name for p in (tmp_path / "ray").iterdir()) == sorted(
        [p.name for p in (tmp_path / "local").iterdir()] + ["segments.parquet"])
    table = pq.read_table(tmp_path / "ray" / "segments.parquet").to_pylist()
    assert sorted(r["image"] for r in table) == sorted(json.loads(t)["image"] for t in want.values())
    row = next(r for r in table if r["image"].endswith("img03.jpg"))
    assert json.loads(row["scores"]) == json.loads(want["img03.json"])["scores"]


def test_evaluate_on_ray_equals_local(bundle, tmp_path):
    root = tmp_path / "voc"
    (root / "img").mkdir(parents=True)
    (root / "lab").mkdir()
    rng = np.random.default_rng(1)
    for i in range(7):
        h, w = 40 + 3 * i, 56 - 2 * i
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / "img" / f"im{i}.jpg")
        Image.fromarray(rng.integers(0, 4, (h, w)).astype(np.uint8), "L").save(root / "lab" / f"im{i}.png")
    (root / "img" / "im7.jpg").write_bytes(b"unreadable")
    Image.fromarray(np.zeros((5, 5), np.uint8), "L").save(root / "lab" / "im7.png")
    (root / "names.txt").write_text("background\nsmoke\nrocket\nsky\n")
    args = [bundle, "--images", root / "img", "--labels", root / "lab", "--class-names", root / "names.txt",
            "--threads", 1, "--logit-scale", 30]
    reports = []
    from clipxai.cli.evaluate import evaluate
    for extra, name in (([], "local"), (["--ray", "--actors", 2], "ray")):
        r = CliRunner().invoke(evaluate, ["segmentation", *[str(a) for a in args + extra + ["--out", tmp_path / name]]])
        assert r.exit_code == 0, r.output
        reports.append(json.loads((tmp_path / name / "segmentation.json").read_text()))
    local, ray = reports
    assert ray["pixels"] == local["pixels"] and ray["per_class"] == local["per_class"]
    assert ray["mIoU"] == local["mIoU"] and ray["images"] == local["images"] == 7
    assert [s["image"] for s in ray["skipped"]] == [s["image"] for s in local["skipped"]] == [
        str(root / "img" / "im7.jpg")]
    assert ray["settings"]["ray"]["actors"] == 2 and ray["settings"]["ray"]["images_counted"] == 8


def _actor_pids(name: str) -> list[int]:
    pids = []
    for cmd in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if f"MapBatches({name})".encode() in cmd.read_bytes():
                pids.append(int(cmd.parent.name))
        except OSError:
            pass
    return pids


def test_an_actor_killed_mid_run_loses_nothing(bundle, tmp_path):
    images = _images(tmp_path / "in", 40, broken=False)
    out = tmp_path / "out"
    killed = []

    def kill_one_when_half_done():
        deadline = time.time() + 120
        while time.time() < deadline and not killed:
            done = len(list(out.glob("*.json"))) if out.exists() else 0
            pids = _actor_pids("SegmentWorker")
            if 4 <= done <= 30 and pids:
                os.kill(pids[0], signal.SIGKILL)
                killed.append((pids[0], done))
            time.sleep(0.05)

    killer = threading.Thread(target=kill_one_when_half_done)
    killer.start()
    r = _segment(bundle, images, "--out", out, "--threads", 1, "--batch-size", 1, "--ray", "--actors", 2)
    killer.join()
    assert killed, "no actor was killed mid-run"
    assert r.exit_code == 0, r.output
    assert len(_jsons(out)) == 40 and len(list(out.glob("*_segmentation.png"))) == 40
    assert not [p for p in out.rglob("*") if ".partial-" in p.name]
    table = pq.read_table(out / "segments.parquet").to_pylist()
    assert len(table) == 40 and len({row["image"] for row in table}) == 40


def test_unreachable_cluster_is_one_line(bundle, tmp_path):
    images = _images(tmp_path / "in", 2, broken=False)
    # a subprocess with a timeout: Ray's own client would retry this address for minutes
    r = subprocess.run([sys.executable, "-m", "clipxai.cli.segment", str(bundle), str(images), "--out",
                        str(tmp_path / "out"), "--ray-address", "127.0.0.1:1"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "cannot reach the Ray cluster at 127.0.0.1:1" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert not (tmp_path / "out").exists()
    r = _segment(bundle, images, "--out", tmp_path / "out", "--actors", 2)
    assert r.exit_code == 2 and "--actors is for --ray runs" in r.output


def test_missing_ray_names_the_extra(bundle, tmp_path):
    script = (
        "import importlib.abc, sys\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'ray':\n"
        "            raise ImportError(name=name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "from clipxai.cli.segment import main\n"
        "main(sys.argv[1:])\n")
    images = _images(tmp_path / "in", 1, broken=False)
    r = subprocess.run([sys.executable, "-c", script, str(bundle), str(images), "--out", str(tmp_path / "o"),
                        "--ray"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "pip install 'clipxai[ray]'" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_a_stamp_spares_the_hashing_only_while_files_are_unchanged(bundle, tmp_path):
    """One verification per node: an unchanged bundle is trusted through its stamp; a changed file is
    hashed again and refused; a copy elsewhere is a new bundle to hash."""
    import shutil
    from clipxai.errors import BundleError
    from clipxai.runtime.bundle import load_bundle
    stamps = tmp_path / "stamps"
    copy = Path(shutil.copytree(bundle, tmp_path / "b"))
    assert load_bundle(copy, stamps=stamps).hashed              # first load: hashed, stamped
    assert oct(stamps.stat().st_mode & 0o777) == "0o700"
    assert not load_bundle(copy, stamps=stamps).hashed          # same files: the stamp vouches
    assert load_bundle(copy).hashed                             # without stamps: always hashed
    data = copy / "text_embeddings.npy"
    raw = bytearray(data.read_bytes())
    raw[-1] ^= 1
    data.write_bytes(bytes(raw))                                # same size, new mtime/ctime
    with pytest.raises(BundleError, match="sha256 does not match"):
        load_bundle(copy, stamps=stamps)
    moved = Path(shutil.copytree(bundle, tmp_path / "c"))
    assert load_bundle(moved, stamps=stamps).hashed             # another path: its own stamp
