"""``scripts/evaluate.py --ray``: an mIoU evaluation spread over Ray actors (docs/scale.md).

Each actor opens the job's predictor once (clipxai/eval/job.py, the same as a local run) and
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

from clipxai.eval.job import EvalJob


class EvalWorker:
    """One actor: the predictor made once; each call -> one row: the batch's confusion, its skipped images."""

    def __init__(self, job: EvalJob, mapping: np.ndarray, num_classes: int, stamps: str):
        from clipxai.eval.job import open_predictor, predict_fn
        self.job, self.mapping, self.num_classes = job, mapping, num_classes
        self.predictor = open_predictor(job, stamps)
        self.predict = predict_fn(job, self.predictor)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from clipxai.eval.segmentation import confusion_of
        pairs = [(Path(i), Path(label)) for i, label in zip(batch["image"], batch["label"])]
        conf, skipped = confusion_of(pairs, self.predict, self.mapping, self.num_classes, self.job.reduce_zero_label)
        return {"confusion": conf.reshape(1, -1), "images": np.array([len(pairs)]),
                "skipped": np.array([json.dumps(skipped)]), "hashed": np.array([self.predictor.bundle.hashed])}


def evaluate_on_ray(job: EvalJob, pairs: list[tuple[Path, Path]], mapping: np.ndarray, num_classes: int,
                    address: str, actors: int | None = None) -> tuple[np.ndarray, list[tuple[str, str]], dict]:
    """(summed confusion int64 [C, C+1], skipped (image, why), run info) of ``pairs`` on Ray."""
    from clipxai.cluster.connect import cluster_cpus, ray_session
    from clipxai.cluster.nodes import prepare_nodes
    from clipxai.cluster.pool import PoolStats, default_actors, map_batches
    from clipxai.contract import KIND_CLIP
    from clipxai.runtime.stamps import default_stamp_dir

    threads = job.threads or 1
    job = replace(job, threads=threads)
    conf = np.zeros((num_classes, num_classes + 1), np.int64)
    skipped: list[tuple[str, str]] = []
    with ray_session(address) as ray:
        ready = prepare_nodes(ray, [(job.bundle, KIND_CLIP)], threads)
        stats = PoolStats(actors or default_actors(cluster_cpus(ray), threads), threads)
        items = [{"image": str(i), "label": str(label)} for i, label in pairs]
        kwargs = {"job": job, "mapping": mapping, "num_classes": num_classes, "stamps": str(default_stamp_dir())}
        counted = 0
        for row in map_batches(ray, items, EvalWorker, kwargs, stats, job.batch_size,
                               weight=lambda r: int(r["images"])):
            conf += np.asarray(row["confusion"], np.int64).reshape(conf.shape)
            skipped += [tuple(s) for s in json.loads(str(row["skipped"]))]
            counted += int(row["images"])
    info = {"actors": stats.actors, "threads": stats.threads, "nodes": len(ready),
            "images_per_s": round(stats.items_per_s, 3), "images_counted": counted}
    return conf, sorted(skipped), info
