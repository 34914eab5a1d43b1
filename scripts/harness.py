"""The benchmarks' one timing harness: every pipeline in its own process, the pipelines alternated
round by round, each figure the median over rounds, and speed ratios taken within a round (so a
slow spell of a shared machine hits both sides of a ratio).

A worker is any command that prints its figures as JSON on its last line of stdout (``run_json``);
one written in Python times its calls with ``median_ms`` and reports ``peak_rss_mb``. The
benchmark scripts import this module as ``harness``: ``python scripts/benchmark_x.py`` puts this
folder on sys.path, and ``run_json`` puts it on a worker's PYTHONPATH (``python -c`` workers too).

    rounds = alternate({"torch": lambda: run_json(cmd_torch, "torch"),
                        "fp32": lambda: run_json(cmd_fp32, "fp32")}, 3, "at 224")
    median_of(rounds, "fp32", "ms"), ratio_text(ratios(rounds, "torch", "fp32", "ms"))

A maintainer tool, not part of the installed package.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, TypeVar

SCRIPTS = Path(__file__).resolve().parent
T = TypeVar("T")

# ---------------------------------------------------------------- in a worker


def median_ms(fn: Callable[[], object], runs: int, warmup: int = 0) -> float:
    """Median wall time in ms of ``runs`` calls of fn(), after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def minor_faults() -> int:
    """Minor page faults of this process so far: memory touched for the first time since the system
    gave it (a pipeline that frees and re-allocates its buffers every call pays these every call)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def timed_with_faults(fn: Callable[[], object], runs: int) -> tuple[float, float]:
    """(median ms, minor page faults per call) over ``runs`` calls."""
    before = minor_faults()
    ms = median_ms(fn, runs)
    return ms, (minor_faults() - before) / runs


def peak_rss_mb() -> float:
    """This process's peak RSS. VmHWM, not ru_maxrss: Linux carries ru_maxrss over fork+exec,
    so a worker would inherit the parent's peak."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---------------------------------------------------------------- in the parent


def worker_environment(env: dict | None = None) -> dict:
    """``env`` (default: this process's environment) with this folder first on PYTHONPATH."""
    env = dict(os.environ if env is None else env)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SCRIPTS), env.get("PYTHONPATH")]))
    return env


def run_json(cmd: list[str], name: str, env: dict | None = None) -> dict:
    """Run a worker in its own process and return the JSON of its last stdout line; exit with its
    stderr if it fails."""
    r = subprocess.run(cmd, capture_output=True, text=True, env=worker_environment(env))
    if r.returncode:
        sys.exit(f"{name} worker failed:\n{r.stderr}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def alternate(pipelines: dict[str, Callable[[], T]], rounds: int, label: str = "") -> list[dict[str, T]]:
    """Run every pipeline once per round, in order, for ``rounds`` rounds -> [{name: result}] per round."""
    out = []
    for r in range(rounds):
        print(f"round {r + 1}/{rounds}{' ' + label if label else ''}: {', '.join(pipelines)} ...", file=sys.stderr)
        out.append({name: run() for name, run in pipelines.items()})
    return out


def median_of(rounds: list[dict], name: str, key: str) -> float:
    """The median over rounds of one pipeline's figure."""
    return statistics.median(r[name][key] for r in rounds)


def median_rows(rounds: list[dict[str, dict]]) -> dict[str, dict]:
    """Per pipeline, every numeric figure's median over rounds (other values from the first round)."""
    return {name: {key: median_of(rounds, name, key) if isinstance(value, (int, float)) else value
                   for key, value in figures.items()}
            for name, figures in rounds[0].items()}


def ratios(rounds: list[dict], ref: str, name: str, key: str) -> list[float]:
    """Per round, ``ref``'s figure over ``name``'s (a time: > 1 means ``name`` is faster)."""
    return [r[ref][key] / r[name][key] for r in rounds]


def ratio_text(values: list[float]) -> str:
    """"**median×** (min–max)" of per-round ratios, for a markdown table."""
    return f"**{statistics.median(values):.2f}×** ({min(values):.2f}–{max(values):.2f})"
