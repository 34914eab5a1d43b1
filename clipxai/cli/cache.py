"""``clipxai cache warm|clear``: fill a bundle's CPU graph cache entry now, or clear clipxai's caches."""

from __future__ import annotations

import json
import os
import time

import click

from clipxai.cli import options as opt
from clipxai.cli.console import cli_errors, fail
from clipxai.common.cache import CACHES, cache_root


@click.group(context_settings=opt.COMMAND)
def cache():
    """clipxai's caches: the CPU graph cache (onnxruntime's optimized, prepacked graphs), class encodings,
    TensorRT engines and verification stamps (docs/security.md)."""


@cache.command()
@click.argument("bundle", type=click.Path())
@opt.cache_dir()
def warm(bundle, cache_dir):
    """Fill the graph cache entries of every graph of BUNDLE (a CLIP or a mask-model bundle) now, e.g. in
    a Docker build step, so even the first load is fast."""
    from clipxai.runtime.bundle import load_bundle, stated_kind
    from clipxai.runtime.cpu import graph_cache as gc
    with cli_errors():
        b = load_bundle(bundle, kind=stated_kind(bundle))
        root = cache_root(cache_dir)
        for graph in b.manifest.graph_files():
            t = time.perf_counter()
            entry = gc.build(b.path / graph, b.graph_files(graph), root, threads=os.cpu_count() or 1)
            if entry is None and gc.usable_root(root) is None:
                fail(f"the graph cache {gc.graphs_dir(root)} cannot be used (see the warning above)")
            if entry is None:
                fail(f"another process is filling the entry of {graph}; run again when it has finished", 1)
            fused = json.loads((entry / gc.DONE_FILE).read_text()).get("attention_fused", 0)
            how = f"{fused} attention blocks fused" if fused else "attention not fused"
            click.echo(f"{graph}: graph cache ready: {entry} ({time.perf_counter() - t:.1f} s, {how})")


@cache.command()
@opt.cache_dir()
@click.option("--keep", type=click.Choice(list(CACHES)), multiple=True,
              help="Keep this cache (repeatable): " + "; ".join(f"{k}: {v}" for k, v in CACHES.items()) + ".")
def clear(cache_dir, keep):
    """Delete clipxai's caches (always safe: later loads rebuild what they need, and re-hash bundles
    whose verification stamps are gone)."""
    from clipxai.common.cache import clear_caches
    root = cache_root(cache_dir)
    for name, folder, size, what in clear_caches(root, tuple(keep)):
        freed = f" ({size / 2 ** 20:.1f} MB)" if what == "removed" else ""
        click.echo(f"{name:9s} {folder}: {what}{freed}")


main = cache  # the clipxai cache alias

if __name__ == "__main__":  # pragma: no cover
    cache()
