"""onnxruntime on the CPU, through the CPU graph cache (clipxai/runtime/cpu/graph_cache.py).

A graph's entry is keyed by that graph's files (the graph and its weights, by digest), so every
graph of a bundle has its own. Mode "off" opens the bundle's graph; "sync" fills the entry while
loading; "background" (the default) opens the bundle's graph and has a detached process fill it.
Never imports clipxai.runtime.nvidia.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from clipxai.common.cache import cache_root, report_once
from clipxai.errors import ClipxaiError
from clipxai.runtime.backends.ort import OnnxruntimeBackend
from clipxai.runtime.cpu import graph_cache as gc
from clipxai.runtime.providers import SessionOptions, load_graph, session_options, started

log = logging.getLogger("clipxai")


class CpuBackend(OnnxruntimeBackend):
    name = "cpu"

    def open(self, bundle, graph_file: str, options, resolved: list):
        so = session_options(SessionOptions(threads=options.threads))
        mode = gc.resolve_mode(options.graph_cache)
        if mode == "background" and not gc.background_supported():
            mode = "sync"
        if mode == "off":
            session = load_graph(bundle.path / graph_file, so, resolved)
        else:
            session = _open_cached(bundle, graph_file, so, resolved, mode, cache_root(options.cache_dir),
                                   options.threads)
        return started(session, resolved)


def _open_cached(bundle, graph_file: str, so, resolved: list, mode: str, root: Path, threads: int | None):
    """The cached optimized graph; on a miss the bundle's graph, with the entry filled in a background
    process (mode "background") or now (mode "sync")."""
    path = bundle.path / graph_file
    files = bundle.graph_files(graph_file)  # this graph's files, digests from the checked manifest
    key = gc.cache_key(files)
    cached = gc.lookup(root, key)  # an entry whose record holds another key is discarded, never used
    if cached is not None:
        try:
            session = load_graph(cached, so, resolved)
            log.info("loaded the optimized graph from %s (%s)", cached.parent, graph_file)
            return session
        except ClipxaiError as e:
            log.warning("discarding an unreadable graph cache entry %s (%s)", cached.parent, e)
            gc.discard(cached.parent)
    if mode == "background":
        session = load_graph(path, so, resolved)
        try:
            proc = gc.start_background_build(bundle.path, files, root, graph_file, bundle.kind)
        except OSError as e:
            log.warning("could not start filling the graph cache in %s (%s); loading without it", root, e)
        else:
            if proc is not None:
                log.info("filling the graph cache in %s in the background (pid %d, %s); later loads are faster",
                         gc.graphs_dir(root), proc.pid, graph_file)
        return session
    try:
        entry = gc.build(path, files, root, threads=int(threads or os.cpu_count() or 1))
    except OSError as e:  # a full disk, a folder removed meanwhile: loading goes on without the cache
        report_once(f"graph-cache-build:{root}", "could not fill the graph cache in %s (%s); loading without it",
                    root, e.strerror or e)
        entry = None
    cached = gc.lookup(root, key) if entry is not None else None
    if cached is None:  # not writable, or another process is filling it right now
        return load_graph(path, so, resolved)
    log.info("cached the optimized graph in %s (%s; next loads are faster)", gc.graphs_dir(root), graph_file)
    return load_graph(cached, so, resolved)
