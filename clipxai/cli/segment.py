"""``clipxai segment BUNDLE INPUT... --out DIR``: parse the flags into a ``SegmentJob``, run it, report.

The work is in clipxai/apps/segment (command -> job -> runner -> Predictor -> writer).
"""

from __future__ import annotations

import logging
from pathlib import Path

import click

from clipxai.cli import options as opt
from clipxai.cli.console import COMMAND_EXIT_HELP, EXIT_INTERRUPTED, ConsoleReporter, cli_errors, plural, \
    stop_on_signals
from clipxai.contract import DEFAULT_BATCH_SIZE, DEFAULT_FRAMES_PER_BATCH
from clipxai.errors import ClipxaiError


@click.command(context_settings=opt.COMMAND, epilog=COMMAND_EXIT_HELP)
@click.argument("bundle", type=click.Path())
@click.argument("inputs", nargs=-1)
@opt.out_dir()
@click.option("--classes", "classes_text",
              help="Comma-separated classes: any names with a --text-encoder bundle, else a subset of its classes.")
@click.option("--batch-size", type=click.IntRange(1), default=DEFAULT_BATCH_SIZE, show_default=True,
              help="Images per graph run.")
@click.option("--no-overlays", is_flag=True, help="Skip the per-class heatmap pictures.")
@opt.expect_digest()
@opt.runtime_options
@opt.segmentation_options
@click.option("--camera", type=click.IntRange(0), default=None, metavar="N",
              help="Video mode: segment camera N live (needs clipxai[camera]).")
@click.option("--heatmap", "heatmap_class", default=None, metavar="CLASS",
              help="Video mode: the annotated video shows this class's heatmap instead of the segmentation.")
@click.option("--every-n", type=click.IntRange(1), default=1, show_default=True,
              help="Video mode: predict one frame in N.")
@click.option("--smooth", "smoothing", type=click.FloatRange(0, 1, min_open=True), default=None, metavar="ALPHA",
              help="Video mode: exponential moving average of the maps, ALPHA = the newest frame's weight.")
@click.option("--frames-per-batch", type=click.IntRange(1), default=DEFAULT_FRAMES_PER_BATCH, show_default=True,
              help="Video mode: frames per graph run.")
@click.option("--sam", "sam_bundle", type=click.Path(), default=None, metavar="SAM_BUNDLE",
              help="A mask-model bundle (clipxai export-sam): each class's object mask from its points.")
@click.option("--sam-classes", default=None, help="With --sam: masks for these classes only (comma-separated).")
@opt.track_options
@opt.ray_options
def segment(bundle, inputs, out_dir, classes_text, batch_size, no_overlays, expect_digest, runtime, segmentation,
            camera, heatmap_class, every_n, smoothing, frames_per_batch, sam_bundle, sam_classes, track, ray):
    """Segment images, videos or a camera with a bundle.

    Images: heatmap overlays, a segmentation and a JSON per image. Videos (.mp4, .mov, .mkv, ...;
    needs clipxai[video]) and --camera N: an annotated video and a JSON Lines file per video; with
    --sam SAM2_BUNDLE --track, the objects' tracks instead (NAME_tracks.mp4, NAME_tracks.jsonl).
    """
    from clipxai.apps.segment import SamOptions, SegmentJob, VideoOptions, run_segment
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    with cli_errors():
        if sam_classes is not None and sam_bundle is None:
            raise ClipxaiError("--sam-classes needs --sam SAM_BUNDLE")
        sam = SamOptions(sam_bundle, opt.class_list(sam_classes, "--sam-classes")) if sam_bundle else None
        job = SegmentJob(bundle=bundle, inputs=tuple(inputs), out_dir=Path(out_dir),
                         classes=opt.class_list(classes_text, "--classes"), expect_digest=expect_digest,
                         batch_size=batch_size, overlays=not no_overlays, runtime=runtime, segmentation=segmentation,
                         video=VideoOptions(camera, heatmap_class, every_n, smoothing, frames_per_batch),
                         sam=sam, track=track, ray=ray)
        with stop_on_signals() as stop:
            summary = run_segment(job, ConsoleReporter(), stop)
    report(summary, out_dir)


def report(summary, out_dir) -> None:
    """The summary: what was written, what failed; exits 1 on failures, 130 when stopped."""
    done, failures, unit = len(summary.done), summary.failures, summary.unit
    for note in summary.notes:
        click.echo(f"  {note}", err=True)
    if summary.interrupted:
        click.secho(f"interrupted: {plural(done, unit)} written to {out_dir} before the stop, "
                    f"{summary.remaining} not processed; nothing partial was left", fg="red", err=True)
    else:
        click.echo(f"results: {out_dir}  ({plural(done, unit)})")
    if failures:
        click.secho(f"{plural(len(failures), 'input')} failed, {done} processed:", fg="red", err=True)
        for item, why in failures:
            click.echo(f"  {item}: {why}", err=True)
    if summary.interrupted:
        raise SystemExit(EXIT_INTERRUPTED)
    if failures:
        raise SystemExit(1)


main = segment  # the clipxai segment alias

if __name__ == "__main__":  # pragma: no cover
    segment()
