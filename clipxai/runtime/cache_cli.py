"""``clipxai-cache``: fill or clear the runtime's CPU graph cache (see graph_cache.py)."""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

import click

from clipxai.contract import MODEL_FILE
from clipxai.errors import ClipxaiError
from clipxai.runtime import graph_cache as gc


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main():
    """The CPU graph cache: onnxruntime's optimized, prepacked graph of a bundle, kept so loads are fast."""


@main.command()
@click.argument("bundle", type=click.Path())
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None,
              help="Cache root [default: $CLIPXAI_CACHE_DIR or ~/.cache/clipxai].")
def warm(bundle, cache_dir):
    """Fill BUNDLE's cache entry now (e.g. in a Docker build step), so even the first load is fast."""
    from clipxai.runtime.bundle import load_bundle
    try:
        b = load_bundle(bundle)
        root = gc.cache_root(cache_dir)
        t = time.perf_counter()
        entry = gc.build(b.path / MODEL_FILE, b.manifest["files"][MODEL_FILE]["sha256"], root,
                         threads=os.cpu_count() or 1)
    except (ClipxaiError, OSError) as e:
        click.secho(f"error: {e}", fg="red", err=True)
        sys.exit(2)
    if entry is None:
        click.secho("error: another process is filling this cache entry; run again when it has finished",
                    fg="red", err=True)
        sys.exit(1)
    try:
        fused = json.loads((entry / gc.DONE_FILE).read_text()).get("attention_fused", 0)
    except (OSError, ValueError):
        fused = 0
    how = f"{fused} attention blocks fused" if fused else "attention not fused"
    click.echo(f"graph cache ready: {entry} ({time.perf_counter() - t:.1f} s, {how})")


@main.command()
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None,
              help="Cache root [default: $CLIPXAI_CACHE_DIR or ~/.cache/clipxai].")
def clear(cache_dir):
    """Delete every cached graph (always safe: the next load rebuilds what it needs)."""
    graphs = gc.cache_root(cache_dir) / "graphs"
    size = sum(f.stat().st_size for f in graphs.rglob("*") if f.is_file()) if graphs.exists() else 0
    shutil.rmtree(graphs, ignore_errors=True)
    click.echo(f"removed {graphs} ({size / 2 ** 20:.0f} MB)")


@main.command(hidden=True)
@click.argument("model", type=click.Path())
@click.option("--sha256", required=True)
@click.option("--cache-root", required=True)
def build(model, sha256, cache_root):
    """What a first load starts in the background: fill one entry at the lowest priority."""
    gc.lower_priority()
    try:
        gc.build(Path(model), sha256, Path(cache_root))
    except Exception:  # noqa: BLE001 - a background helper: the next load simply tries again
        sys.exit(1)


if __name__ == "__main__":  # pragma: no cover
    main()
