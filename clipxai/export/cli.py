"""``clipxai-export``: parse options, call ``export_bundle``, report."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import click

from clipxai.common.cli import cli_errors
from clipxai.common.images import IMAGE_SUFFIXES, image_files
from clipxai.contract import METHODS, PRECISIONS
from clipxai.errors import ClipxaiError
from clipxai.methods import METHOD_TABLE
from clipxai.models.backbones import DEFAULT_BACKBONE  # torch-free table


class ClickReporter:
    """Reporter for the terminal: steps on stdout, warnings on stderr, click progress bars."""

    def step(self, message: str) -> None:
        click.echo(f"• {message}")

    def warn(self, message: str) -> None:
        click.secho(f"WARNING: {message}", fg="red", bold=True, err=True)

    def table(self, lines: list[str]) -> None:
        click.echo("\n".join(["", *lines, ""]))

    @contextlib.contextmanager
    def progress(self, total: int, label: str):
        with click.progressbar(length=total, label=f"  {label}", show_pos=True, show_eta=True,
                               file=sys.stderr) as bar:
            yield bar.update


def _human(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB"):
        if size < 1024:
            return f"{n} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GB"


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--backbone", default=DEFAULT_BACKBONE, show_default=True,
              help="ViT-B/32, ViT-B/16, ViT-L/14, ViT-L/14@336px, or an open_clip name (ViT-B-16, ViT-B-16-quickgelu).")
@click.option("--pretrained", default="openai", show_default=True,
              help="'openai', an open_clip pretrained tag (e.g. laion2b_s34b_b88k), a checkpoint file, or 'random' / 'random:SEED' (tests only).")
@click.option("--method", type=click.Choice(METHODS), default="surgery", show_default=True,
              help="Method baked into the graph (docs/methods.md): " + "; ".join(
                  f"{m.name}: {m.summary}" for m in METHOD_TABLE) + ".")
@click.option("--classes", "classes_text", help='Comma-separated class names, e.g. "person,bench,sky".')
@click.option("--classes-file", type=click.Path(dir_okay=False), help="UTF-8 file with one class name per line.")
@click.option("--image-size", type=int, default=224, show_default=True, help="Square input size of the graph (a multiple of the patch size).")
@click.option("--redundancy", type=click.Choice(["classes", "empty", "none"]), default=None,
              help="Feature-surgery mode, --method surgery only [default: classes for several classes, empty for one].")
@click.option("--precision", type=click.Choice(PRECISIONS), default="fp32", show_default=True,
              help="Graph precision: fp32; int8 for CPUs; fp16 for GPUs/TensorRT. int8 and fp16 are checked "
                   "against fp32 and refused below the fidelity gate (unless --force).")
@click.option("--fidelity-images", type=click.Path(exists=True, file_okay=False), default=None,
              help="Directory of your own images for the int8/fp16 fidelity check [default: synthetic scenes].")
@click.option("--output", "-o", required=True, type=click.Path(file_okay=True), help="Bundle directory to create.")
@click.option("--overwrite", is_flag=True, help="Replace an existing output directory.")
@click.option("--force", is_flag=True,
              help="Write an int8/fp16 graph even if it fails the fidelity gate (the manifest records the failure).")
@click.option("--no-verify", is_flag=True, help="Skip the onnxruntime-vs-PyTorch check.")
@click.option("--opset", type=int, default=17, show_default=True, help="ONNX opset (17 or newer).")
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None, help="Where open_clip keeps downloaded weights.")
@click.option("--text-batch-size", type=click.IntRange(1), default=256, show_default=True, help="Prompts per text-encoder batch.")
@click.option("--text-encoder", is_flag=True,
              help="Also export the text tower and BPE vocabulary, so the device can set any classes.")
@click.option("--text-explainer", is_flag=True,
              help="With --text-encoder: add Grad-ECLIP's word explainer (clipxai-explain, Predictor.explain_text).")
@click.option("--explainer-blocks", type=click.IntRange(1), default=8, show_default=True,
              help="With --text-explainer: the last N text blocks it re-runs with one head (the reference's 8).")
@click.option("--int8-layers", type=click.Choice(["auto", "all"]), default="auto", show_default=True,
              help="int8: auto keeps the weight MatMuls that measurably hurt the maps in fp32 "
                   "(docs/performance.md); all quantizes every one.")
@click.option("--report", "sensitivity_report", is_flag=True,
              help="int8: print the per-layer sensitivity table the selection measured.")
def main(**options):
    """Export a CLIP Surgery backbone and a class vocabulary as an ONNX bundle.

    Exit status: 0 done, 2 bad input or failed verification, 3 weights could not
    be downloaded, 130 interrupted. No partial bundle is ever left at --output.
    """
    with cli_errors(interrupted="interrupted: no bundle written"):
        result = run(**options)
    report(result)


def report(result) -> None:
    v = result.verification
    click.echo(f"bundle: {result.path}  ({_human(result.bytes)})")
    click.echo(f"digest: {result.digest}  (sha256 of manifest.json; pin it with clipxai-segment --expect-digest)")
    if v is not None:
        click.echo(f"verified: max abs error similarity {v['similarity']:.2e}, heatmaps {v['heatmaps']:.2e}, "
                   f"scores {v['scores']:.2e} (tolerance {v['tolerance']:g}, batch {v['batch']})")
        if "text_encoder" in v:
            click.echo(f"verified text encoder: max abs error {v['text_encoder']:.2e} (normalised embeddings)")
        if "text_explainer" in v:
            click.echo(f"verified word explainer: max abs error {v['text_explainer']:.2e} (weights and cosines)")
    else:
        click.echo("verification skipped (--no-verify)")
    f = result.manifest.get("fidelity")
    if f is not None:
        click.echo(f"{result.manifest['precision']} fidelity vs fp32 ({f['images']} images, {f['provider']}): "
                   f"heatmap correlation {f['correlation']:.4f} (min {f['correlation_min']:.4f}), "
                   f"pixel agreement {100 * f['pixel_agreement']:.1f}%, top-1 agreement "
                   f"{100 * f['top1_agreement']:.0f}% -> {'PASSED' if f['passed'] else 'FAILED'} gate "
                   f"(correlation >= {f['gate']['correlation']}, pixels >= {100 * f['gate']['pixel_agreement']:.0f}%)"
                   + (f"; {f['note']}" if f.get("note") else ""))
        conv = f.get("conversion") or {}
        if "int8_flop_share" in conv:
            kept = conv["sensitive_fp32"]
            click.echo(f"int8 layers: {len(kept)} weight MatMul{'s' if len(kept) != 1 else ''} kept in fp32 by "
                       f"measurement{': ' + ', '.join(kept) if kept else ''}; "
                       f"{100 * conv['int8_flop_share']:.1f}% of the FLOPs in int8")
    click.echo(f"time: {result.seconds:.1f} s")
    if result.manifest["weights"]["source"] == "random":
        click.secho("WARNING: this bundle has RANDOM weights (for tests only)", fg="red", bold=True, err=True)


def _image_files(folder: str) -> list[Path]:
    files = image_files(folder)
    if not files:
        raise ClipxaiError(f"--fidelity-images {folder}: no .jpg/.png/... images in it "
                           f"(suffixes: {', '.join(sorted(IMAGE_SUFFIXES))})")
    return files


def run(backbone, method, pretrained, classes_text, classes_file, image_size, redundancy, precision,
        fidelity_images, output, overwrite, force, no_verify, opset, cache_dir, text_batch_size, text_encoder=False,
        int8_layers="auto", sensitivity_report=False, text_explainer=False, explainer_blocks=8):
    """The options of ``clipxai-export`` -> ``export_bundle``'s result."""
    # Imported here so that `--help` and option errors stay fast and torch-free.
    from clipxai.vocabulary import parse_class_list, read_classes_file

    if classes_text is not None and classes_file is not None:
        raise ClipxaiError("give either --classes or --classes-file, not both")
    if classes_text is None and classes_file is None:
        raise ClipxaiError('no classes given; pass --classes "a,b,c" or --classes-file FILE')
    classes = parse_class_list(classes_text) if classes_text is not None else read_classes_file(classes_file)
    try:
        from clipxai.export.pipeline import ExportConfig, export_bundle
    except ImportError as e:
        raise ClipxaiError(f"the exporter needs the export extra ({e.name} is missing): pip install \"clipxai[export]\"")
    cfg = ExportConfig(output=Path(output), classes=classes, backbone=backbone, method=method, pretrained=pretrained,
                       image_size=image_size, redundancy=redundancy, overwrite=overwrite, force=force,
                       verify=not no_verify, opset=opset, cache_dir=cache_dir, text_batch_size=text_batch_size, precision=precision,
                       fidelity_images=_image_files(fidelity_images) if fidelity_images else None,
                       text_encoder=text_encoder, int8_layers=int8_layers, report=sensitivity_report,
                       text_explainer=text_explainer, explainer_blocks=explainer_blocks)
    return export_bundle(cfg, ClickReporter())


if __name__ == "__main__":  # pragma: no cover
    main()
