"""``clipxai-cache``: fill or clear the runtime's CPU graph cache (clipxai/runtime/cpu/graph_cache.py)."""

from __future__ import annotations

import json
import os
import shutil
import sys
import time

import click

from clipxai.common.cache import cache_root
from clipxai.common.cli import cli_errors, fail
from clipxai.runtime.cpu import graph_cache as gc

CACHE_DIR_HELP = "Cache root [default: $CLIPXAI_CACHE_DIR, else the user cache folder, ~/.cache/clipxai on Linux]."


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main():
    """The CPU graph cache: onnxruntime's optimized, prepacked graph of a bundle, kept so loads are fast."""


@main.command()
@click.argument("bundle", type=click.Path())
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None, help=CACHE_DIR_HELP)
def warm(bundle, cache_dir):
    """Fill BUNDLE's cache entry now (e.g. in a Docker build step), so even the first load is fast."""
    from clipxai.runtime.bundle import load_bundle
    with cli_errors():
        b = load_bundle(bundle)
        root = cache_root(cache_dir)
        t = time.perf_counter()
        entry = gc.build(b.model_path, b.graph_files(), root, threads=os.cpu_count() or 1)
        if entry is None and gc.usable_root(root) is None:
            fail(f"the graph cache {gc.graphs_dir(root)} cannot be used (see the warning above)")
    if entry is None:
        fail("another process is filling this cache entry; run again when it has finished", 1)
    fused = json.loads((entry / gc.DONE_FILE).read_text()).get("attention_fused", 0)
    how = f"{fused} attention blocks fused" if fused else "attention not fused"
    click.echo(f"graph cache ready: {entry} ({time.perf_counter() - t:.1f} s, {how})")


@main.command()
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None, help=CACHE_DIR_HELP)
def clear(cache_dir):
    """Delete every cached graph (always safe: the next load rebuilds what it needs)."""
    graphs = gc.graphs_dir(cache_root(cache_dir))
    size = sum(f.stat().st_size for f in graphs.rglob("*") if f.is_file()) if graphs.is_dir() else 0
    shutil.rmtree(graphs, ignore_errors=True)
    click.echo(f"removed {graphs} ({size / 2 ** 20:.0f} MB)")


@main.command(hidden=True)
@click.argument("bundle", type=click.Path())
@click.option("--cache-root", required=True)
def build(bundle, cache_root):
    """What a first load starts in the background: check the bundle, fill its entry at the lowest priority."""
    from clipxai.runtime.bundle import load_bundle
    gc.lower_priority()
    try:
        b = load_bundle(bundle)  # checked again: nothing is cached from a bundle that changed since
        gc.build(b.model_path, b.graph_files(), cache_root)
    except Exception:  # noqa: BLE001 - a background helper: the next load simply tries again
        sys.exit(1)


if __name__ == "__main__":  # pragma: no cover
    main()
