"""``clipxai-segment --ray``: the images of one job spread over Ray actors (docs/scale.md).

The driver lists the images and their output names, exactly as a local run does; every node
verifies the bundle and warms its graph cache once (nodes.py); then each actor (pool.py) holds a
``Segmenter`` made once and writes each image's files into ``--out``, which every node must reach
at the same path (a shared file system). Per image, the driver gets back the JSON the actor wrote
and adds a Parquet table of them, ``segments.parquet``. An actor that dies is restarted and its
batch redone; whole files are replaced atomically, and the temporary files a killed actor left
are removed at the end, so the outputs are those of a local run, without duplicates or parts.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np

from clipxai.common.files import PARTIAL_TAG, atomic_write
from clipxai.errors import ClipxaiError
from clipxai.runtime.segment_files import (
    SegmentJob, Segmenter, Summary, announce, check_modes, image_files_of, output_names, prepare_output,
)
from clipxai.runtime.video.sources import is_video_path

TABLE_FILE = "segments.parquet"


class SegmentWorker:
    """One actor: ``__init__`` opens the predictor once; each call segments a batch of image paths
    and returns, per image, its error ("" when written) and the JSON record it wrote."""

    def __init__(self, job: SegmentJob, names: dict[str, str], stamps: str):
        self.job = job
        self.segmenter = Segmenter(job, stamps)
        self.segmenter.start({Path(k): Path(v) for k, v in names.items()})
        self.names = names

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        files = [Path(p) for item in batch["paths"] for p in json.loads(str(item))]
        summary = Summary()
        self.segmenter.segment(files, summary)
        failed = dict(summary.failures)
        errors, records = [], []
        for f in files:
            errors.append(failed.get(str(f), ""))
            json_path = self.job.out_dir / f"{self.names[str(f)]}.json"
            records.append("" if str(f) in failed else json_path.read_text(encoding="utf-8"))
        hashed = self.segmenter.predictor.bundle.hashed
        return {"path": np.array([str(f) for f in files]), "error": np.array(errors),
                "record": np.array(records), "hashed": np.array([hashed] * len(files))}


def run_on_ray(job: SegmentJob) -> Summary:
    """Segment ``job``'s images on Ray (module docstring); the summary notes the actors and images/s."""
    from clipxai.cluster.connect import cluster_cpus, ray_session
    from clipxai.cluster.nodes import prepare_nodes
    from clipxai.cluster.pool import PoolStats, default_actors, map_batches
    from clipxai.contract import KIND_CLIP, KIND_MASK
    from clipxai.runtime.stamps import default_stamp_dir

    check_modes(job, [i for i in job.inputs if is_video_path(i)])
    files, failures = image_files_of(job)
    names = {str(f): str(v) for f, v in output_names(files).items()}
    threads = job.threads or 1
    job = replace(job, threads=threads)
    stamps = str(default_stamp_dir())
    with ray_session(job.ray) as ray:  # first: a missing extra or an unreachable cluster leaves nothing behind
        probe = Segmenter(job, stamps)  # the bundle, classes and settings, with one-line errors
        prepare_output(job.out_dir)
        bundles = [(job.bundle, KIND_CLIP)] + ([(job.sam, KIND_MASK)] if job.sam else [])
        ready = prepare_nodes(ray, bundles, threads)
        stats = PoolStats(job.actors or default_actors(cluster_cpus(ray), threads), threads)
        announce(job, probe.predictor, len(files), "image")
        del probe
        summary = Summary(failures=list(failures))
        rows = {}
        # One item per local batch, so each graph run sees the batch a local run would: onnxruntime's
        # results depend on the batch in the last bits, and the JSON then equals a local run's.
        items = [{"paths": json.dumps([str(f) for f in files[i:i + job.batch_size]])}
                 for i in range(0, len(files), job.batch_size)]
        kwargs = {"job": job, "names": names, "stamps": stamps}
        for row in map_batches(ray, items, SegmentWorker, kwargs, stats, 1, unit="images",
                               total=len(files)):
            rows[str(row["path"])] = row  # a batch redone after a failure replaces its first rows
    for f in files:
        row = rows.get(str(f))
        if row is None:
            summary.failures.append((str(f), "no result came back from the cluster"))
        elif row["error"]:
            summary.failures.append((str(f), str(row["error"])))
        else:
            summary.done.append(f)
    removed = remove_partials(job.out_dir)
    _write_table(job.out_dir / TABLE_FILE, [rows[str(f)]["record"] for f in summary.done])
    hashed = sum(bool(r["hashed"]) for r in rows.values())
    summary.notes.append(f"ray: {stats.actors} actors x {stats.threads} thread(s) on {len(ready)} node(s), "
                         f"{stats.items_per_s:.2f} images/s; the bundle hashed once per node (actors re-hashed "
                         f"it for {hashed} of {len(rows)} images)"
                         + (f"; removed {removed} partial file(s) of killed actors" if removed else ""))
    return summary


def remove_partials(out_dir: Path) -> int:
    """Every temporary file left under ``out_dir`` (all writers have finished): a killed actor's."""
    count = 0
    for p in Path(out_dir).rglob(f".*{PARTIAL_TAG}*"):
        if p.is_file():
            p.unlink(missing_ok=True)
            count += 1
    return count


def _write_table(path: Path, records: list[str]) -> None:
    """The per-image JSON records as one Parquet table: a column per top-level field, nested
    fields (scores, points, masks) as JSON text."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    parsed = [json.loads(r) for r in records]
    keys = list(dict.fromkeys(k for r in parsed for k in r))
    columns = {}
    for k in keys:
        values = [r.get(k) for r in parsed]
        nested = any(isinstance(v, (dict, list)) for v in values)
        columns[k] = [json.dumps(v, ensure_ascii=False) if nested and v is not None else v for v in values]
    try:
        table = pa.table(columns) if parsed else pa.table({"image": pa.array([], pa.string())})
    except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
        raise ClipxaiError(f"{path}: the per-image records do not form a table ({e})") from None
    atomic_write(path, lambda tmp: pq.write_table(table, tmp))
