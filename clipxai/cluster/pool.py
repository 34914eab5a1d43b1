"""Items through a pool of stateful Ray actors with Ray Data (``map_batches`` on an actor pool).

Each actor is built once (its ``__init__`` opens the predictor) and then receives batches of
items. Ray Data restarts an actor that dies and retries the batch it was working on elsewhere
(its actor-pool defaults: ``max_restarts=-1``, ``max_task_retries=-1``), so a killed actor costs
time, not results. Workers must therefore be idempotent per batch: clipxai's write whole files
atomically, and return their results instead of adding them up in place.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from dataclasses import dataclass
from typing import Iterator

import click


@dataclass
class PoolStats:
    actors: int
    threads: int
    items: int = 0
    seconds: float = 0.0

    @property
    def items_per_s(self) -> float:
        return self.items / self.seconds if self.seconds else 0.0


def default_actors(cpus: int, threads: int) -> int:
    """As many actors as the cluster's CPUs hold at ``threads`` each (at least 1)."""
    return max(1, cpus // max(1, threads))


def map_batches(ray, items: list[dict], worker: type, kwargs: dict, stats: PoolStats, batch_size: int,
                unit: str = "images", total: int | None = None, weight=lambda row: 1) -> Iterator[dict]:
    """Rows of ``worker(**kwargs)(batch)`` over ``items`` (``batch_size`` items per call, one block per
    batch), ``stats.actors`` actors of ``stats.threads`` CPUs each, with a progress bar of ``total``
    units (default: the items) and units/s; ``weight(row)``: the units a returned row stands for.
    Timing recorded in ``stats``."""
    blocks = max(1, math.ceil(len(items) / batch_size))
    logging.getLogger("ray.data").setLevel(logging.ERROR)  # its progress notes: ours below counts images
    ray.data.DataContext.get_current().enable_progress_bars = False
    ds = ray.data.from_items(items, override_num_blocks=blocks)
    out = ds.map_batches(worker, fn_constructor_kwargs=kwargs, batch_size=batch_size, batch_format="numpy",
                         compute=ray.data.ActorPoolStrategy(size=stats.actors), num_cpus=stats.threads)
    t0 = time.perf_counter()
    done = 0

    total = len(items) if total is None else total

    def rate(_):
        elapsed = time.perf_counter() - t0
        return f"{done / elapsed:.2f} {unit}/s" if done and elapsed > 0 else ""

    with click.progressbar(length=total, label=f"  {unit} on {stats.actors} actors", show_pos=True,
                           item_show_func=rate, file=sys.stderr) as bar:
        for row in out.iter_rows():
            n = weight(row)
            done += n
            bar.update(n)
            yield row
    stats.seconds = time.perf_counter() - t0
    stats.items = total
