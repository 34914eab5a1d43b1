#!/usr/bin/env python
"""Images per second of clipxai-segment locally and on Ray actors, in the same run.

Segments N images (examples/rocket.jpg turned and cropped, 640x427, JSON + segmentation PNG per
image, no overlays) with one bundle, each configuration in its own process, alternated over
rounds:

- local, 2 threads (the default on this machine) and 1 thread;
- --ray with 1 actor x 1 thread and 2 actors x 1 thread (a local Ray instance).

Prints wall-clock images/s (process start to exit: Ray's start-up included) and, for Ray, the
images/s while the actors ran (from the run's summary), with ratios to the local 2-thread run.

    python scripts/benchmark_ray.py --bundle bundles/b16-224 --images 64 --rounds 2
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness import alternate, ratio_text, ratios

ROOT = Path(__file__).parent.parent
CONFIGS = {
    "local, 2 threads": ["--threads", "2"],
    "local, 1 thread": ["--threads", "1"],
    "ray, 1 actor x 1 thread": ["--threads", "1", "--ray", "--actors", "1"],
    "ray, 2 actors x 1 thread": ["--threads", "1", "--ray", "--actors", "2"],
}


def make_images(folder: Path, n: int) -> None:
    from PIL import Image
    base = Image.open(ROOT / "examples" / "rocket.jpg").convert("RGB")
    folder.mkdir(parents=True)
    for i in range(n):
        im = base.rotate(3 * (i % 7), expand=False).crop((i % 5, i % 3, 640 - (i % 4), 427))
        im.resize((640, 427)).save(folder / f"img{i:03d}.jpg", quality=92)


def run_once(bundle: str, images: Path, out: Path, args: list[str]) -> dict:
    """{"wall_s": process start to exit, "inner": the run's own images/s or None}, in a fresh ``out``."""
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "clipxai.cli.segment", bundle, str(images), "--out", str(out),
           "--no-overlays", "--batch-size", "4", *args]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{r.stderr[-2000:]}")
    m = re.search(r"([0-9.]+) images/s", r.stdout + r.stderr)
    return {"wall_s": wall, "inner": float(m.group(1)) if m else None}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bundle", required=True)
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=2)
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="clipxai-ray-bench-"))
    try:
        make_images(work / "in", a.images)
        rounds = alternate({name: (lambda args=args: run_once(a.bundle, work / "in", work / "out", args))
                            for name, args in CONFIGS.items()}, a.rounds)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    base = "local, 2 threads"
    print(f"\n{a.images} images 640x427, {a.bundle}, median of {a.rounds} rounds (ratios within a round)\n")
    print(f"| configuration | wall images/s | vs {base} (median; min–max) | images/s while the actors ran |")
    print("|---|---:|---:|---:|")
    for name in CONFIGS:
        wall = statistics.median(a.images / r[name]["wall_s"] for r in rounds)
        inner = [r[name]["inner"] for r in rounds if r[name]["inner"] is not None]
        inner_s = f"{statistics.median(inner):.2f}" if inner else "—"
        print(f"| {name} | {wall:.2f} | {ratio_text(ratios(rounds, base, name, 'wall_s'))} | {inner_s} |")


if __name__ == "__main__":
    main()
