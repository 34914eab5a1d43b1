"""``python -m clipxai.cli.trt_args BUNDLE``: trtexec arguments for jetson/build_engine.sh
(clipxai/runtime/nvidia/trt_args.py)."""

from __future__ import annotations

import click

from clipxai.cli.console import cli_errors
from clipxai.runtime.nvidia import engine_cache
from clipxai.runtime.nvidia.trt_args import EngineRequest, emit


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("bundle", type=click.Path())
@click.option("--precision", type=click.Choice(engine_cache.ENGINE_PRECISIONS), default=None,
              help="Engine precision (default: the bundle's; fp16 may lower an fp32 bundle).")
@click.option("--min-batch", type=click.IntRange(1), default=None, help="Smallest batch [1].")
@click.option("--opt-batch", type=click.IntRange(1), default=None, help="Batch TensorRT tunes for [min-batch].")
@click.option("--max-batch", type=click.IntRange(1), default=None, help="Largest batch [4].")
@click.option("--fp32-layers", default="auto", show_default=True,
              help="auto (LayerNorm, softmax, normalisations), none, or comma-separated layer names.")
@click.option("--engine-root", type=click.Path(file_okay=False), default=None,
              help="Engine folder root [BUNDLE/engines, or the user cache if the bundle is read-only].")
@click.option("--graph", default=None, help="A mask-model bundle's graph: encoder or decoder.")
@click.option("--emit", "emit_what", type=click.Choice(["graphs", "args", "engine-dir", "record"]), default="args",
              show_default=True,
              help="graphs: the bundle's graphs to build; args: trtexec arguments, one a line; engine-dir: create "
                   "and print the key's folder; record: write engine.json there after a successful build.")
@click.option("--trt-version", default=None, help="Override the detected TensorRT version (cross-checks only).")
@click.option("--gpu", "gpu_label", default=None, help="Override the detected GPU label (cross-checks only).")
def main(bundle, precision, min_batch, opt_batch, max_batch, fp32_layers, engine_root, graph, emit_what, trt_version,
         gpu_label):
    """Print trtexec arguments for BUNDLE, or the engine folder for this machine's key."""
    with cli_errors():
        request = EngineRequest(precision, min_batch, opt_batch, max_batch, fp32_layers, engine_root, trt_version,
                                gpu_label, graph)
        click.echo(emit(bundle, emit_what, request))


if __name__ == "__main__":
    main()
