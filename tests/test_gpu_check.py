"""The GPU check (scripts/gpu/, docs/deployment.md "The GPU check") works before a GPU sees it:
its dry run on the CPU writes what the real run writes, its budgets fit the 8 minutes, and the
staged parts join back into the wheels. NOT a GPU test: scripts/gpu/run.sh has never run on a GPU.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
GPU = ROOT / "scripts" / "gpu"
LATENCY_HEADER = "| size | pipeline | batch | median ms | images/s | vs PyTorch fp32 | vs PyTorch autocast fp16 |"
OUT_FILES = {"run.log", "steps.jsonl", "summary.md", "env.json", "pytest.txt", "parity.json", "latency.json",
             "sam.json"}


def dry_run(tmp_path: Path, **settings) -> Path:
    out = tmp_path / "out"
    env = {**os.environ, "GPU_CHECK_DRY_RUN": "1", "PYTHON": sys.executable, "OUT": str(out),
           "WORK": str(tmp_path / "work"), "SITE": str(tmp_path / "site"), **settings}
    r = subprocess.run([str(GPU / "run.sh")], env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout + r.stderr + (out / "run.log").read_text()
    return out


def steps(out: Path) -> dict[str, str]:
    return {s["step"]: s["status"] for s in map(json.loads, (out / "steps.jsonl").read_text().splitlines())}


def check_parity(out: Path, sizes: list[int]) -> None:
    rows = json.loads((out / "parity.json").read_text())["rows"]
    fp32 = [r for r in rows if r["precision"] == "fp32"]
    assert sorted(r["size"] for r in fp32) == sizes and all(r["passed"] for r in fp32)
    assert all(max(r["similarity_max_abs"], r["scores_max_abs"], r["heatmaps_max_abs"]) <= 1e-4 for r in fp32)
    fp16 = [r for r in rows if r["precision"] == "fp16"]
    assert len(fp16) == len(sizes) and all(r["heatmap_correlation_min"] >= 0.995 and r["finite"] for r in fp16)
    assert all(r["exporter_fidelity_cpu"]["passed"] for r in fp16)


def check_latency(out: Path, sizes: list[int], batches: list[int]) -> None:
    rows = json.loads((out / "latency.json").read_text())["rows"]
    names = {"PyTorch fp32", "clipxai fp32, IO binding", "clipxai fp32, no IO binding", "clipxai fp16, IO binding",
             "clipxai fp16, no IO binding"}
    assert {(r["size"], r["pipeline"], r["batch"]) for r in rows} == {(s, n, b) for s in sizes for n in names
                                                                       for b in batches}
    assert all(r["ms"] > 0 and r["images_per_s"] > 0 and r["vs_torch_fp32"] > 0 for r in rows)
    summary = (out / "summary.md").read_text()
    table = summary[summary.index(LATENCY_HEADER):].split("\n\n")[0].splitlines()
    assert len(table) == 2 + len(rows)  # header, rule, one line per row


def test_dry_run_exports_checks_parity_and_writes_the_latency_table(tmp_path):
    out = dry_run(tmp_path, SIZES="32", BATCHES="1", RUNS="2", WARMUP="0", SAM_MODEL="",
                  GPU_CHECK_STEPS="export,parity,latency")
    assert steps(out) == {"env": "skipped", "install": "skipped", "export": "ok", "pytest": "skipped",
                          "parity": "ok", "latency": "ok", "sam": "skipped"}
    check_parity(out, [32])
    check_latency(out, [32], [1])
    log = (out / "run.log").read_text()
    assert all(f"=== START {s}" in log and f"=== END {s}" in log for s in ("export", "parity", "latency"))
    assert "DRY RUN" in (out / "summary.md").read_text()


@pytest.mark.slow
def test_full_dry_run_writes_the_eight_files(tmp_path):
    out = dry_run(tmp_path)
    assert set(steps(out).values()) == {"ok"}, steps(out)
    assert {p.name for p in out.iterdir()} == OUT_FILES  # the most a device call brings back is 8 files
    check_parity(out, [32, 64])
    check_latency(out, [32, 64], [1, 2])
    sam = json.loads((out / "sam.json").read_text())
    assert sam["clipxai encoder set_image"] > 0 and sam["clipxai decoder masks_for, 5 classes"] > 0
    assert sam["PyTorch predictor set_image"] > 0
    assert " skipped" in (out / "pytest.txt").read_text()  # no GPU here: the gpu tests skip, none fails
    assert json.loads((out / "env.json").read_text())["missing"] == []


def test_budgets_fit_eight_minutes():
    text = (GPU / "run.sh").read_text()
    steps_line = re.search(r"^STEPS=\((.*)\)$", text, re.M).group(1)
    budgets = {name: int(s) for name, s in (e.split(":") for e in steps_line.split())}
    assert sum(budgets.values()) <= 480
    header = dict(re.findall(r"^#   (\w+) +(\d+) ", text, re.M))
    assert {k: int(v) for k, v in header.items()} == budgets  # the header says what the script does


def test_staged_parts_join_back_into_the_wheels(tmp_path):
    stage, dest = tmp_path / "stage", tmp_path / "dest"
    (stage / "wheels").mkdir(parents=True)
    for name, size in (("a-1.0-py3-none-any.whl", 3000), ("b-2.0-py3-none-any.whl", 1500)):
        (stage / "wheels" / name).write_bytes(os.urandom(size))
    env = {**os.environ, "STAGE": str(stage), "PART_SIZE": "2K", "GPU_STAGE_DEST": str(dest)}
    r = subprocess.run([str(GPU / "stage.sh"), "--no-download"], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    calls = re.findall(r'command="bash scripts/gpu/receive.sh (\S+)( && scripts/gpu/run.sh)?"', r.stdout)
    parts = sorted((stage / "parts").glob("wheels.tar.part-*"))
    assert [Path(c[0]) for c in calls] == parts and len(parts) >= 3 and calls[-1][1] and not calls[0][1]
    receive = lambda part: subprocess.run(["bash", str(GPU / "receive.sh"), str(part)], env=env,  # noqa: E731
                                          capture_output=True, text=True)
    bad = parts[1].read_bytes()
    parts[1].write_bytes(bad[:-1] + bytes([bad[-1] ^ 1]))
    r = receive(parts[1])
    assert r.returncode == 1 and "sha256 differs" in r.stderr
    parts[1].write_bytes(bad)
    for part in parts:
        r = receive(part)
        assert r.returncode == 0, r.stderr
    assert "wheels ready" in r.stdout
    for wheel in (stage / "wheels").glob("*.whl"):
        assert (dest / "wheels" / wheel.name).read_bytes() == wheel.read_bytes()
