"""``clipxai export-sam``: parse options into a ``SamExportConfig``, call ``export_mask_bundle``, report."""

from __future__ import annotations

from pathlib import Path

import click

from clipxai.cli import options as opt
from clipxai.cli.console import ConsoleReporter, cli_errors
from clipxai.export.cli import bundle_folder, export_extra
from clipxai.contract import DEFAULT_PRECISION, MIN_OPSET, PRECISIONS
from clipxai.errors import ClipxaiError
from clipxai.mask_models import MASK_MODEL_TABLE, RECOMMENDED


@click.command(context_settings=opt.COMMAND, epilog="Exit status: 0 done, 2 bad input or failed verification, "
               "130 interrupted. No partial bundle is ever left at --out.")
@click.option("--model", required=True, metavar="NAME",
              help=f"One of {', '.join(m.name for m in MASK_MODEL_TABLE)} ({RECOMMENDED}: the edge choice).")
@click.option("--checkpoint", type=click.Path(dir_okay=False), default=None,
              help="The model's weights: the official .pth/.pt file, or .safetensors (read without running code).")
@opt.out_dir(help="Bundle directory to create.", required=False)
@opt.hidden_alias("--output", "out")
@click.option("--precision", type=click.Choice(PRECISIONS), default=DEFAULT_PRECISION, show_default=True,
              help="The image encoder's precision: int8 for CPUs, fp16 for GPUs; refused below mean mask IoU 0.95 "
                   "against fp32 (unless --force).")
@click.option("--fidelity-images", type=click.Path(exists=True, file_okay=False), default=None,
              help="Your own images for the int8/fp16 check [default: synthetic scenes].")
@click.option("--overwrite", is_flag=True, help="Replace an existing bundle at --out.")
@click.option("--force", is_flag=True, help="Write an int8/fp16 encoder even if it fails the IoU gate.")
@click.option("--no-verify", is_flag=True, help="Skip the check against the package's PyTorch predictor.")
@click.option("--video/--no-video", default=None,
              help="SAM 2.1: also export the tracking graphs (memory attention, memory encoder, tracking decoder) "
                   "for `clipxai segment --track` and MaskTracker [default: on for SAM 2.1]. SAM 1 has no memory.")
@click.option("--opset", type=int, default=MIN_OPSET, show_default=True, help=f"ONNX opset ({MIN_OPSET} or newer).")
def export_sam(model, checkpoint, out_dir, precision, fidelity_images, overwrite, force, no_verify, video, opset):
    """Export SAM or SAM 2.1 as a mask-model bundle for `clipxai segment --sam` and MaskPredictor."""
    with cli_errors(interrupted="interrupted: no bundle written"):
        out = bundle_folder(out_dir)
        images = _fidelity_images(model, fidelity_images)  # before the slow imports: errors stay fast
        with export_extra():
            from clipxai.export.sam import SamExportConfig, export_mask_bundle
        cfg = SamExportConfig(model=model, checkpoint=Path(checkpoint) if checkpoint else None, output=out,
                              precision=precision, overwrite=overwrite, force=force, verify=not no_verify,
                              opset=opset, fidelity_images=images, video=video)
        result = export_mask_bundle(cfg, ConsoleReporter())
    report(result)


def _fidelity_images(model: str, folder: str | None):
    """The fidelity images of ``folder`` (None: synthetic scenes); an unknown model or an empty folder
    is a one-line error."""
    from clipxai.common.images import image_files
    from clipxai.mask_models import resolve_mask_model
    resolve_mask_model(model)
    images = image_files(folder) if folder else None
    if folder and not images:
        raise ClipxaiError(f"--fidelity-images {folder}: no images in it")
    return images


def report(result) -> None:
    v, f = result.verification, result.manifest.get("fidelity")
    click.echo(f"bundle: {result.path}  ({result.bytes / 2 ** 20:.1f} MB)")
    click.echo(f"digest: {result.digest}  (sha256 of manifest.json)")
    if v:
        click.echo(f"verified against the package's predictor: max abs error low-res logits "
                   f"{v['low_res_masks']:.2e}, IoU {v['iou_predictions']:.2e} (tolerance {v['tolerance']:g})")
    else:
        click.echo("verification skipped (--no-verify)")
    tracking = result.manifest.tracking
    if tracking is not None and tracking.verification:
        t = tracking.verification
        click.echo(f"tracker verified against SAM2VideoPredictor ({t['frames']} frames, {t['objects']} objects): max "
                   f"abs error mask logits {t['mask_logits']:.2e}, object scores {t['object_scores']:.2e} "
                   f"(tolerance {t['tolerance']:g})")
    if f:
        click.echo(f"{result.manifest['precision']} encoder vs fp32 ({f['image_source']}, {f['masks']} masks): mean "
                   f"IoU {f['mean_iou']:.3f} (min {f['min_iou']:.3f}) -> {'PASSED' if f['passed'] else 'FAILED'} gate "
                   f"(>= {f['gate']['mean_iou']})")
    click.echo(f"time: {result.seconds:.1f} s")


main = export_sam  # the clipxai-export-sam alias

if __name__ == "__main__":  # pragma: no cover
    export_sam()
