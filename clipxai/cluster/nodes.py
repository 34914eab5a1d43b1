"""Getting every node ready once, before the actors start: the bundle checked, the graph cache warm.

One task per alive node (pinned with Ray's node-affinity strategy, no CPU reserved):

- ``load_bundle`` hashes every file once and leaves a verification stamp in the node's private
  cache (clipxai/runtime/stamps.py), so the node's actors trust unchanged files without
  hashing them again: one verification per node, not per actor;
- a ``Predictor`` opened with ``graph_cache="sync"`` builds the node's CPU graph cache entry, so
  no actor builds it, or waits on another's build.

A bundle that a node cannot read (no shared file system) is a one-line error naming the node.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from clipxai.errors import ClipxaiError


@dataclass(frozen=True)
class NodeReady:
    node: str            # its IP address
    seconds: float
    hashed: bool         # False: an earlier run's stamp vouched for the files


def _prepare(bundles: list[tuple[str, str]], threads: int | None, cache_dir: str | None) -> dict:
    """On one node: verify and stamp each (path, kind) bundle, warm the CPU graph cache of CLIP bundles."""
    import ray

    from clipxai.contract import KIND_CLIP
    from clipxai.runtime.bundle import load_bundle
    from clipxai.runtime.predictor import Predictor
    from clipxai.runtime.stamps import default_stamp_dir

    t0 = time.perf_counter()
    stamps = default_stamp_dir(cache_dir)
    node = ray.util.get_node_ip_address()
    try:
        hashed = False
        for path, kind in bundles:
            hashed = load_bundle(path, kind=kind, stamps=stamps).hashed or hashed
            if kind == KIND_CLIP:
                Predictor.from_bundle(path, providers="cpu", threads=threads, graph_cache="sync",
                                      cache_dir=cache_dir, stamps=stamps)
    except ClipxaiError as e:
        return {"node": node, "error": str(e)}
    return {"node": node, "seconds": time.perf_counter() - t0, "hashed": hashed}


def prepare_nodes(ray, bundles: list[tuple[str, str]], threads: int | None = None,
                  cache_dir: str | None = None) -> list[NodeReady]:
    """Run ``_prepare`` once on every alive node; ClipxaiError (one line) if any node fails."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    task = ray.remote(num_cpus=0, max_retries=1)(_prepare)
    nodes = [n for n in ray.nodes() if n.get("Alive") and n.get("Resources", {}).get("CPU", 0) > 0]
    if not nodes:
        raise ClipxaiError("the Ray cluster has no alive node with CPUs")
    refs = [task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
            .remote(bundles, threads, cache_dir) for n in nodes]
    ready = []
    for result in ray.get(refs):
        if "error" in result:
            raise ClipxaiError(f"node {result['node']}: {result['error']} (every node must read the bundle at "
                               "the same path: a shared file system, docs/scale.md)")
        ready.append(NodeReady(result["node"], result["seconds"], result["hashed"]))
    return ready
