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
import time
from dataclasses import dataclass
from typing import Callable, Iterator

from clipxai.common.report import Reporter


@dataclass
class PoolStats:
    actors: int
    threads: int
    items: int = 0
    seconds: float = 0.0

    @property
    def items_per_s(self) -> float:
        return self.items / self.seconds if self.seconds else 0.0


def actor_count(requested: int | None, cpus: int, threads: int, batches: int, reporter: Reporter) -> int:
    """How many actors to start: the requested number (default: as many as the cluster's CPUs hold at
    ``threads`` each), never more than the batches of work or than the CPUs hold; a clamp is noted."""
    fits = max(1, cpus // max(1, threads))
    wanted = requested or fits
    count = max(1, min(wanted, fits, batches))
    if requested is not None and count < requested:
        reporter.note(f"--actors {requested}: starting {count} (the cluster has {cpus} CPUs for {threads} "
                      f"thread(s) each, and the work is {batches} batch(es))")
    return count


@dataclass(frozen=True)
class Units:
    """What the progress display counts: ``name`` ("images"), ``total`` (None: one per item) and
    ``weight(row)``, the units a returned row stands for."""

    name: str = "images"
    total: int | None = None
    weight: Callable[[dict], int] = lambda row: 1


def map_batches(ray, items: list[dict], worker: type, kwargs: dict, stats: PoolStats, batch_size: int,
                reporter: Reporter, units: Units = Units()) -> Iterator[dict]:
    """Rows of ``worker(**kwargs)(batch)`` over ``items`` (``batch_size`` items per call, one block per
    batch), ``stats.actors`` actors of ``stats.threads`` CPUs each, with a progress display of ``units``
    and units/s. Timing recorded in ``stats``."""
    blocks = max(1, math.ceil(len(items) / batch_size))
    logging.getLogger("ray.data").setLevel(logging.ERROR)  # its progress notes: ours below counts images
    ray.data.DataContext.get_current().enable_progress_bars = False
    ds = ray.data.from_items(items, override_num_blocks=blocks)
    out = ds.map_batches(worker, fn_constructor_kwargs=kwargs, batch_size=batch_size, batch_format="numpy",
                         compute=ray.data.ActorPoolStrategy(size=stats.actors), num_cpus=stats.threads)
    t0, done = time.perf_counter(), 0
    total = len(items) if units.total is None else units.total
    with reporter.progress(total, f"{units.name} on {stats.actors} actors") as advance:
        for row in out.iter_rows():
            n = units.weight(row)
            done += n
            advance(n, f"{done / max(time.perf_counter() - t0, 1e-9):.2f} {units.name}/s")
            yield row
    stats.seconds = time.perf_counter() - t0
    stats.items = min(done, total)
