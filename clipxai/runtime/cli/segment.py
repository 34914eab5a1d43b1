"""``clipxai-segment BUNDLE INPUT... --out DIR``: overlays, segmentation and JSON per image.

The click command parses; ``run`` does the work (clipxai/runtime/segment_files.py).
"""

from __future__ import annotations

import logging
from pathlib import Path

import click

from clipxai.common.cli import EXIT_INTERRUPTED, cli_errors
from clipxai.runtime.segment_files import SegmentJob, run


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'s' if n != 1 else ''}"


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("bundle", type=click.Path())
@click.argument("inputs", nargs=-1)
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Folder for the results.")
@click.option("--classes", "classes_text",
              help="Comma-separated classes: any names with a --text-encoder bundle, else a subset of its classes.")
@click.option("--batch-size", type=click.IntRange(1), default=4, show_default=True, help="Images per graph run.")
@click.option("--providers", default="auto", show_default=True, help="auto, cpu, cuda or tensorrt.")
@click.option("--threads", type=click.IntRange(1), default=None,
              help="onnxruntime intra-op threads (at most 4 x the CPU cores).")
@click.option("--background-threshold", type=click.FloatRange(0, 1), default=None,
              help="Mark pixels whose winning class's heatmap is below this as background.")
@click.option("--slide", "slide_stride", type=int, default=None, metavar="STRIDE",
              help="Sliding-window inference: windows of the bundle's size every STRIDE pixels (needs --short-side).")
@click.option("--short-side", type=int, default=None, metavar="N",
              help="With --slide: resize the image so its short side is N pixels (>= the bundle's size).")
@click.option("--logit-scale", type=float, default=None, help="Segmentation: softmax(scale * similarity) over classes.")
@click.option("--prob-threshold", type=float, default=None,
              help="Segmentation: background where the winning class's probability is below this (needs --logit-scale).")
@click.option("--background-classes", default=None,
              help="Segmentation: comma-separated classes whose pixels are background.")
@click.option("--trt-fp16", is_flag=True, help="TensorRT: allow fp16 kernels.")
@click.option("--trt-cache", type=click.Path(file_okay=False), default=None, help="TensorRT engine cache folder.")
@click.option("--no-overlays", is_flag=True, help="Skip the per-class heatmap overlays.")
@click.option("--text-cache", type=click.Path(file_okay=False), default=None,
              help="Folder caching on-device class encodings [default: the cache root's text folder].")
@click.option("--expect-digest", default=None, metavar="SHA256",
              help="Refuse the bundle unless its manifest's sha256 is this (clipxai-export prints it).")
@click.option("--camera", type=click.IntRange(0), default=None, metavar="N",
              help="Video mode: segment camera N live (needs clipxai[camera]).")
@click.option("--heatmap", "heatmap_class", default=None, metavar="CLASS",
              help="Video mode: the annotated video shows this class's heatmap instead of the segmentation.")
@click.option("--every-n", type=click.IntRange(1), default=1, show_default=True,
              help="Video mode: predict one frame in N.")
@click.option("--sam", "sam_bundle", type=click.Path(), default=None, metavar="SAM_BUNDLE",
              help="A mask-model bundle (clipxai-export-sam): each class's object mask from its points.")
@click.option("--sam-classes", default=None, help="With --sam: masks for these classes only (comma-separated).")
@click.option("--smooth", "smoothing", type=click.FloatRange(0, 1, min_open=True), default=None, metavar="ALPHA",
              help="Video mode: exponential moving average of the maps, ALPHA = the newest frame's weight.")
@click.option("--ray", "ray_address", is_flag=False, flag_value="local", default=None, metavar="[ADDRESS]",
              help="Spread the images over Ray actors: a local Ray instance, or the cluster at ADDRESS "
                   "(or $RAY_ADDRESS). Put it after the inputs. Needs clipxai[ray]; docs/scale.md.")
@click.option("--actors", type=click.IntRange(1), default=None,
              help="With --ray: actors, each with its own predictor [default: the cluster's CPUs / threads; "
                   "threads default to 1 per actor].")
def main(bundle, inputs, out_dir, classes_text, batch_size, providers, threads, background_threshold,
         slide_stride, short_side, logit_scale, prob_threshold, background_classes, trt_fp16, trt_cache,
         no_overlays, text_cache, expect_digest, camera, heatmap_class, every_n, sam_bundle, sam_classes, smoothing,
         ray_address, actors):
    """Segment images or videos with a clipxai bundle.

    Images: heatmap overlays, a segmentation and a JSON per image. Videos (.mp4, .mov, .mkv, ...;
    needs clipxai[video]) and --camera N: an annotated video and a JSON Lines file per video.

    Exit status: 0 all done, 1 some inputs failed (listed), 2 bad input, 130 interrupted.
    """
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    job = SegmentJob(bundle=bundle, inputs=list(inputs), out_dir=Path(out_dir), classes=classes_text,
                     batch_size=batch_size, providers=providers, threads=threads,
                     background_threshold=background_threshold, slide=(slide_stride, short_side),
                     logit_scale=logit_scale, prob_threshold=prob_threshold, background_classes=background_classes,
                     trt_fp16=trt_fp16, trt_cache=trt_cache, overlays=not no_overlays, text_cache=text_cache,
                     expect_digest=expect_digest, camera=camera, heatmap=heatmap_class, every_n=every_n,
                     smoothing=smoothing, sam=sam_bundle, sam_classes=sam_classes, ray=ray_address, actors=actors)
    with cli_errors():
        if ray_address is None:
            summary = run(job)
        else:
            from clipxai.cluster.segment import run_on_ray
            summary = run_on_ray(job)
    report(summary, out_dir)


def report(summary, out_dir) -> None:
    """The summary: what was written, what failed; exits 1 on failures, 130 when interrupted."""
    done, failures, unit = len(summary.done), summary.failures, summary.unit
    for note in summary.notes:
        click.echo(f"  {note}", err=True)
    if summary.interrupted:
        click.secho(f"interrupted: {_plural(done, unit)} written to {out_dir} before the stop, "
                    f"{summary.remaining} not processed; nothing partial was left", fg="red", err=True)
    else:
        click.echo(f"results: {out_dir}  ({_plural(done, unit)})")
    if failures:
        click.secho(f"{_plural(len(failures), 'input')} failed, {done} processed:", fg="red", err=True)
        for item, why in failures:
            click.echo(f"  {item}: {why}", err=True)
    if summary.interrupted:
        raise SystemExit(EXIT_INTERRUPTED)
    if failures:
        raise SystemExit(1)


if __name__ == "__main__":  # pragma: no cover
    main()
