"""The Ray runner: one job's images spread over Ray actors (docs/scale.md).

The driver lists the images and their output names, exactly as a local run does; every node
verifies the bundle and warms its graph cache once (cluster/nodes.py); then each actor
(cluster/pool.py) holds a ``Segmenter`` made once and writes each image's files into ``--out``,
which every node must reach at the same path (a shared file system). Per image, the driver gets
back the JSON record the actor wrote and adds a Parquet table of them, ``segments.parquet``. An
actor that dies is restarted and its batch redone; whole files are replaced atomically, and the
temporary files a killed actor left are removed at the end, so the outputs are those of a local
run, without duplicates or parts.
"""

from __future__ import annotations

import json
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np

from clipxai.apps.segment.images import segment_batch
from clipxai.apps.segment.inputs import image_inputs, output_names
from clipxai.apps.segment.job import SegmentJob
from clipxai.apps.segment.load import Segmenter
from clipxai.apps.segment.records import dumps
from clipxai.apps.segment.summary import Summary, announce
from clipxai.apps.segment.writer import ResultWriter
from clipxai.common.files import PARTIAL_TAG, atomic_write, exclusive_output, prepare_output_dir
from clipxai.common.report import Reporter
from clipxai.errors import ClipxaiError

TABLE_FILE = "segments.parquet"


class SegmentWorker:
    """One actor: ``__init__`` opens the predictor once; each call segments a batch of image paths
    and returns, per image, its error ("" when written) and its JSON record."""

    def __init__(self, job: SegmentJob, names: dict[str, str], stamps: str):
        self.segmenter = Segmenter(job, stamps)
        self.writer = ResultWriter(job.out_dir, self.segmenter.predictor, {Path(k): Path(v) for k, v in names.items()},
                                   job.overlays, self.segmenter.sam)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        files = [Path(p) for item in batch["paths"] for p in json.loads(str(item))]
        summary = Summary()
        records = segment_batch(self.segmenter, self.writer, files, summary)
        failed = dict(summary.failures)
        hashed = self.segmenter.predictor.bundle.hashed
        return {"path": np.array([str(f) for f in files]),
                "error": np.array([failed.get(str(f), "") for f in files]),
                "record": np.array([dumps(records[f]) if f in records else "" for f in files]),
                "hashed": np.array([hashed] * len(files))}


def run_on_ray(job: SegmentJob, reporter: Reporter, stop: threading.Event) -> Summary:
    """Segment ``job``'s images on Ray (module docstring); the summary notes the actors and images/s."""
    from clipxai.cluster.connect import ray_session
    from clipxai.runtime.stamps import default_stamp_dir

    files, failures = image_inputs(job.inputs)
    job = replace(job, runtime=replace(job.runtime, threads=job.runtime.threads or 1))
    stamps = str(default_stamp_dir(job.runtime.cache_dir))
    with ray_session(job.ray.address) as ray:  # first: a missing extra or an unreachable cluster leaves nothing
        probe = Segmenter(job, stamps)  # the bundle, classes and settings, with one-line errors
        prepare_output_dir(job.out_dir)
        with exclusive_output(job.out_dir):  # held by the driver while its actors write
            announce(reporter, probe, len(files), "image")
            del probe
            rows, stats, nodes = _map(ray, job, files, stamps, reporter, stop)
            summary = _summary(job, files, failures, rows, stop.is_set())
    hashed = sum(bool(r["hashed"]) for r in rows.values())
    summary.notes.append(f"ray: {stats.actors} actors x {stats.threads} thread(s) on {nodes} node(s), "
                         f"{stats.items_per_s:.2f} images/s; the bundle hashed once per node (actors re-hashed "
                         f"it for {hashed} of {len(rows)} images)")
    return summary


def _map(ray, job: SegmentJob, files: list[Path], stamps: str, reporter: Reporter, stop: threading.Event):
    """({image: its row} from the actor pool, the pool's stats, the number of nodes)."""
    from clipxai.cluster.connect import cluster_cpus
    from clipxai.cluster.nodes import prepare_nodes
    from clipxai.cluster.pool import PoolStats, Units, actor_count, map_batches
    from clipxai.contract import KIND_CLIP, KIND_MASK

    bundles = [(job.bundle, KIND_CLIP)] + ([(job.sam.bundle, KIND_MASK)] if job.sam else [])
    ready = prepare_nodes(ray, bundles, job.runtime.threads)
    # One item per local batch, so each graph run sees the batch a local run would: onnxruntime's
    # results depend on the batch in the last bits, and the JSON then equals a local run's.
    items = [{"paths": json.dumps([str(f) for f in files[i:i + job.batch_size]])}
             for i in range(0, len(files), job.batch_size)]
    stats = PoolStats(actor_count(job.ray.actors, cluster_cpus(ray), job.runtime.threads, len(items), reporter),
                      job.runtime.threads)
    rows = {}
    kwargs = {"job": job, "names": {str(f): str(v) for f, v in output_names(files).items()}, "stamps": stamps}
    for row in map_batches(ray, items, SegmentWorker, kwargs, stats, 1, reporter, Units(total=len(files))):
        rows[str(row["path"])] = row  # a batch redone after a failure replaces its first rows
        if stop.is_set():
            break
    return rows, stats, len(ready)


def _summary(job: SegmentJob, files: list[Path], failures: list, rows: dict, stopped: bool) -> Summary:
    """What happened, from the rows; the temporary files of killed actors removed; the Parquet table."""
    summary = Summary(failures=list(failures))
    summary.interrupted = stopped and len(rows) < len(files)
    summary.remaining = len(files) - len(rows) if summary.interrupted else 0
    _collect(summary, files, rows, summary.interrupted)
    removed = remove_partials(job.out_dir)
    if removed:
        summary.notes.append(f"removed {removed} partial file(s) of killed actors")
    _write_table(job.out_dir / TABLE_FILE, [rows[str(f)]["record"] for f in summary.done])
    return summary


def _collect(summary: Summary, files: list[Path], rows: dict, stopped: bool) -> None:
    """Done and failed images from the rows; an image with no row failed, unless the run was stopped."""
    for f in files:
        row = rows.get(str(f))
        if row is None:
            if not stopped:
                summary.failures.append((str(f), "no result came back from the cluster"))
        elif row["error"]:
            summary.failures.append((str(f), str(row["error"])))
        else:
            summary.done.append(f)


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
