"""``clipxai-export-sam``: parse options, call ``export_mask_bundle``, report."""

from __future__ import annotations

from pathlib import Path

import click

from clipxai.common.cli import cli_errors
from clipxai.contract import PRECISIONS
from clipxai.mask_models import MASK_MODEL_TABLE, RECOMMENDED


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--model", required=True, metavar="NAME",
              help=f"One of {', '.join(m.name for m in MASK_MODEL_TABLE)} ({RECOMMENDED}: the edge choice).")
@click.option("--checkpoint", type=click.Path(dir_okay=False), default=None,
              help="The model's weights: the official .pth/.pt file, or .safetensors (read without running code).")
@click.option("--output", "-o", required=True, type=click.Path(), help="Bundle directory to create.")
@click.option("--precision", type=click.Choice(PRECISIONS), default="fp32", show_default=True,
              help="The image encoder's precision: int8 for CPUs, fp16 for GPUs; refused below mean mask IoU 0.95 "
                   "against fp32 (unless --force).")
@click.option("--fidelity-images", type=click.Path(exists=True, file_okay=False), default=None,
              help="Your own images for the int8/fp16 check [default: synthetic scenes].")
@click.option("--overwrite", is_flag=True, help="Replace an existing output directory.")
@click.option("--force", is_flag=True, help="Write an int8/fp16 encoder even if it fails the IoU gate.")
@click.option("--no-verify", is_flag=True, help="Skip the check against the package's PyTorch predictor.")
@click.option("--opset", type=int, default=17, show_default=True, help="ONNX opset (17 or newer).")
def main(model, checkpoint, output, precision, fidelity_images, overwrite, force, no_verify, opset):
    """Export SAM or SAM 2.1 as a mask-model bundle for clipxai-segment --sam and MaskPredictor.

    Exit status: 0 done, 2 bad input or failed verification, 130 interrupted. No partial bundle is
    ever left at --output.
    """
    with cli_errors(interrupted="interrupted: no bundle written"):
        result = run(model, checkpoint, output, precision, fidelity_images, overwrite, force, no_verify, opset)
    v, f = result.verification, result.manifest.get("fidelity")
    click.echo(f"bundle: {result.path}  ({result.bytes / 2 ** 20:.1f} MB)")
    click.echo(f"digest: {result.digest}  (sha256 of manifest.json)")
    if v:
        click.echo(f"verified against the package's predictor: max abs error low-res logits "
                   f"{v['low_res_masks']:.2e}, IoU {v['iou_predictions']:.2e} (tolerance {v['tolerance']:g})")
    else:
        click.echo("verification skipped (--no-verify)")
    if f:
        click.echo(f"{result.manifest['precision']} encoder vs fp32 ({f['image_source']}, {f['masks']} masks): mean "
                   f"IoU {f['mean_iou']:.3f} (min {f['min_iou']:.3f}) -> {'PASSED' if f['passed'] else 'FAILED'} gate "
                   f"(>= {f['gate']['mean_iou']})")
    click.echo(f"time: {result.seconds:.1f} s")


def run(model, checkpoint, output, precision, fidelity_images, overwrite, force, no_verify, opset):
    from clipxai.common.images import image_files
    from clipxai.errors import ClipxaiError
    from clipxai.mask_models import resolve_mask_model
    resolve_mask_model(model)  # an unknown name fails before the slow imports
    try:
        from clipxai.export.sam import SamExportConfig, export_mask_bundle
        from clipxai.export.cli import ClickReporter
    except ImportError as e:
        raise ClipxaiError(f"the exporter needs the export extra ({e.name} is missing): pip install \"clipxai[export]\"")
    images = image_files(fidelity_images) if fidelity_images else None
    if fidelity_images and not images:
        raise ClipxaiError(f"--fidelity-images {fidelity_images}: no images in it")
    cfg = SamExportConfig(model=model, checkpoint=Path(checkpoint) if checkpoint else None, output=Path(output),
                          precision=precision, overwrite=overwrite, force=force, verify=not no_verify, opset=opset,
                          fidelity_images=images)
    return export_mask_bundle(cfg, ClickReporter())


if __name__ == "__main__":  # pragma: no cover
    main()
