"""``clipxai evaluate segmentation --ray``: an mIoU evaluation spread over Ray actors (docs/scale.md).

Each actor opens the job's predictor once (job.py, the same as a local run) and
returns, per batch of (image, label) pairs, the batch's summed confusion matrix and the images
it could not read. Confusion matrices are integer counts, so their sum over batches is exactly
the local run's, in any order; a batch redone after an actor died is counted once, because only
a finished batch returns its matrix.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np

from clipxai.apps.evaluate.job import EvalJob
from clipxai.common.report import Reporter

IMAGES_PER_ACTOR_CALL = 8  # each actor call returns one summed confusion matrix


class EvalWorker:
    """One actor: the predictor made once; each call -> one row: the batch's confusion, its skipped images."""

    def __init__(self, job: EvalJob, mapping: np.ndarray, num_classes: int, stamps: str):
        from clipxai.apps.evaluate.job import open_predictor, predict_fn
        self.job, self.mapping, self.num_classes = job, mapping, num_classes
        self.predictor = open_predictor(job, stamps)
        self.predict = predict_fn(job, self.predictor)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from clipxai.eval.segmentation import confusion_of
        pairs = [(Path(i), Path(label)) for i, label in zip(batch["image"], batch["label"])]
        conf, skipped = confusion_of(pairs, self.predict, self.mapping, self.num_classes, self.job.dataset.reduce_zero_label)
        return {"confusion": conf.reshape(1, -1), "images": np.array([len(pairs)]),
                "skipped": np.array([json.dumps(skipped)]), "hashed": np.array([self.predictor.bundle.hashed])}


def evaluate_on_ray(job: EvalJob, pairs: list[tuple[Path, Path]], mapping: np.ndarray, num_classes: int,
                    reporter: Reporter) -> tuple[np.ndarray, list[tuple[str, str]], dict]:
    """(summed confusion int64 [C, C+1], skipped (image, why), run info) of ``pairs`` on Ray."""
    from clipxai.cluster.connect import cluster_cpus, ray_session
    from clipxai.cluster.nodes import prepare_nodes
    from clipxai.cluster.pool import PoolStats, Units, actor_count, map_batches
    from clipxai.contract import KIND_CLIP
    from clipxai.runtime.stamps import default_stamp_dir

    threads = job.runtime.threads or 1
    job = replace(job, runtime=replace(job.runtime, threads=threads))
    per_actor_call = IMAGES_PER_ACTOR_CALL
    conf = np.zeros((num_classes, num_classes + 1), np.int64)
    skipped: list[tuple[str, str]] = []
    with ray_session(job.ray.address) as ray:
        ready = prepare_nodes(ray, [(job.bundle, KIND_CLIP)], threads)
        items = [{"image": str(i), "label": str(label)} for i, label in pairs]
        wanted = job.ray.actors or max(1, cluster_cpus(ray) // threads)
        per_actor_call = max(1, min(per_actor_call, -(-len(items) // wanted)))  # every actor gets a batch
        batches = -(-len(items) // per_actor_call)
        stats = PoolStats(actor_count(job.ray.actors, cluster_cpus(ray), threads, batches, reporter), threads)
        kwargs = {"job": job, "mapping": mapping, "num_classes": num_classes,
                  "stamps": str(default_stamp_dir(job.runtime.cache_dir))}
        counted = 0
        units = Units("images", len(items), lambda r: int(r["images"]))
        for row in map_batches(ray, items, EvalWorker, kwargs, stats, per_actor_call, reporter, units):
            conf += np.asarray(row["confusion"], np.int64).reshape(conf.shape)
            skipped += [tuple(s) for s in json.loads(str(row["skipped"]))]
            counted += int(row["images"])
    info = {"actors": stats.actors, "threads": stats.threads, "nodes": len(ready),
            "images_per_s": round(stats.items_per_s, 3), "images_counted": counted}
    return conf, sorted(skipped), info
