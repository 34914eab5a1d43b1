"""``clipxai evaluate multilabel --ray``: the images' ``labels`` rows computed on Ray actors (docs/scale.md).

Each actor opens the job's predictor once (with the evaluated vocabulary on a --text-encoder bundle) and
returns, per batch of images, their labels rows and the images it could not read; rows are keyed by
image, so the order in which batches finish does not matter, and a batch redone after an actor died
is counted once (only a finished batch returns rows).
"""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np

from clipxai.apps.evaluate.multilabel_job import MultilabelJob
from clipxai.common.report import Reporter

IMAGES_PER_ACTOR_CALL = 8


class LabelsWorker:
    """One actor: the predictor made once; each call -> one row: the batch's images, labels and skipped images."""

    def __init__(self, job: MultilabelJob, classes: list[str], stamps: str):
        from clipxai.runtime.predictor import Predictor
        self.job = job
        self.predictor = Predictor.from_bundle(job.bundle, options=job.runtime, stamps=stamps)
        if list(self.predictor.classes) != list(classes):
            self.predictor.set_classes(classes)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from clipxai.apps.evaluate.multilabel_job import score_images
        images = [str(i) for i in batch["image"]]
        rows, skipped = score_images(self.job, self.predictor, images)
        names = list(rows)
        return {"names": np.array([json.dumps(names)]), "images": np.array([len(images)]),
                "labels": np.array([json.dumps([rows[n].tolist() for n in names])]),
                "skipped": np.array([json.dumps(skipped)])}


def scores_on_ray(job: MultilabelJob, classes: list[str], images: list[str], reporter: Reporter):
    """({image: labels float32 [K]}, {image: why}, run info) of ``images`` on Ray."""
    from clipxai.cluster.connect import cluster_cpus, ray_session
    from clipxai.cluster.nodes import prepare_nodes
    from clipxai.cluster.pool import PoolStats, Units, actor_count, map_batches
    from clipxai.contract import KIND_CLIP
    from clipxai.runtime.stamps import default_stamp_dir

    threads = job.runtime.threads or 1
    job = replace(job, runtime=replace(job.runtime, threads=threads))
    rows: dict[str, np.ndarray] = {}
    skipped: dict[str, str] = {}
    with ray_session(job.ray.address) as ray:
        ready = prepare_nodes(ray, [(job.bundle, KIND_CLIP)], threads)
        items = [{"image": im} for im in images]
        wanted = job.ray.actors or max(1, cluster_cpus(ray) // threads)
        per_call = max(1, min(IMAGES_PER_ACTOR_CALL, -(-len(items) // wanted)))
        batches = -(-len(items) // per_call)
        stats = PoolStats(actor_count(job.ray.actors, cluster_cpus(ray), threads, batches, reporter), threads)
        kwargs = {"job": job, "classes": classes, "stamps": str(default_stamp_dir(job.runtime.cache_dir))}
        units = Units("images", len(items), lambda r: int(r["images"]))
        for row in map_batches(ray, items, LabelsWorker, kwargs, stats, per_call, reporter, units):
            names = json.loads(str(row["names"]))
            rows.update(zip(names, (np.asarray(v, np.float32) for v in json.loads(str(row["labels"])))))
            skipped.update(json.loads(str(row["skipped"])))
    info = {"actors": stats.actors, "threads": stats.threads, "nodes": len(ready),
            "images_per_s": round(stats.items_per_s, 3)}
    return rows, skipped, info
