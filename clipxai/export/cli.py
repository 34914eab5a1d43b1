"""``clipxai export``: parse options into an ``ExportConfig``, call ``export_bundle``, report."""

from __future__ import annotations

import contextlib
from pathlib import Path

import click

from clipxai.cli import options as opt
from clipxai.cli.console import ConsoleReporter, cli_errors
from clipxai.common.images import IMAGE_SUFFIXES, image_files
from clipxai.contract import (
    DEFAULT_LABELS_MERGE_RATE,
    DEFAULT_EXPLAINER_BLOCKS, DEFAULT_IMAGE_SIZE, DEFAULT_METHOD, DEFAULT_PRECISION, DEFAULT_PRETRAINED,
    DEFAULT_TEXT_BATCH, METHODS, MIN_OPSET, PRECISIONS, REDUNDANCY_MODES,
)
from clipxai.errors import ClipxaiError
from clipxai.methods import METHOD_TABLE
from clipxai.templates import DEFAULT_TEMPLATES
from clipxai.models.backbones import DEFAULT_BACKBONE  # torch-free table


def _human(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB"):
        if size < 1024:
            return f"{n} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GB"


@click.command(context_settings=opt.COMMAND, epilog="Exit status: 0 done, 2 bad input or failed verification, "
               "3 weights could not be downloaded, 130 interrupted. No partial bundle is ever left at --out.")
@click.option("--backbone", default=DEFAULT_BACKBONE, show_default=True,
              help="ViT-B/32, ViT-B/16, ViT-L/14, ViT-L/14@336px, or an open_clip name (ViT-B-16, ViT-B-16-quickgelu).")
@click.option("--pretrained", default=DEFAULT_PRETRAINED, show_default=True,
              help="'openai', an open_clip pretrained tag (e.g. laion2b_s34b_b88k), a checkpoint file, or 'random' / 'random:SEED' (tests only).")
@click.option("--method", type=click.Choice(METHODS), default=DEFAULT_METHOD, show_default=True,
              help="Method baked into the graph (docs/methods.md): " + "; ".join(
                  f"{m.name}: {m.summary}" for m in METHOD_TABLE) + ".")
@click.option("--classes", "classes_text", help='Comma-separated class names, e.g. "person,bench,sky".')
@click.option("--classes-file", type=click.Path(dir_okay=False), help="UTF-8 file with one class name per line.")
@click.option("--image-size", type=int, default=DEFAULT_IMAGE_SIZE, show_default=True, help="Square input size of the graph (a multiple of the patch size).")
@click.option("--redundancy", type=click.Choice(REDUNDANCY_MODES), default=None,
              help="Feature-surgery mode, --method surgery only [default: classes for several classes, empty for one].")
@click.option("--precision", type=click.Choice(PRECISIONS), default=DEFAULT_PRECISION, show_default=True,
              help="Graph precision: fp32; int8 for CPUs; fp16 for GPUs/TensorRT. int8 and fp16 are checked "
                   "against fp32 and refused below the fidelity gate (unless --force).")
@click.option("--fidelity-images", type=click.Path(exists=True, file_okay=False), default=None,
              help="Directory of your own images for the int8/fp16 fidelity check [default: synthetic scenes].")
@opt.out_dir(help="Bundle directory to create.", required=False)
@opt.hidden_alias("--output", "out")
@click.option("--overwrite", is_flag=True, help="Replace an existing bundle at --out.")
@click.option("--force", is_flag=True,
              help="Write an int8/fp16 graph even if it fails the fidelity gate (the manifest records the failure).")
@click.option("--no-verify", is_flag=True, help="Skip the onnxruntime-vs-PyTorch check.")
@click.option("--opset", type=int, default=MIN_OPSET, show_default=True, help=f"ONNX opset ({MIN_OPSET} or newer).")
@click.option("--weights-dir", type=click.Path(file_okay=False), default=None,
              help="Where open_clip keeps downloaded weights [default: open_clip's own folder].")
@click.option("--cache-dir", hidden=True, expose_value=False, callback=lambda ctx, param, value: value and _retired(
    "--cache-dir is clipxai's cache root (runtime commands); open_clip's download folder is --weights-dir"))
@click.option("--text-batch-size", type=click.IntRange(1), default=DEFAULT_TEXT_BATCH, show_default=True, help="Prompts per text-encoder batch.")
@click.option("--text-encoder", is_flag=True,
              help="Also export the text tower and BPE vocabulary, so the device can set any classes.")
@click.option("--text-explainer", is_flag=True,
              help="With --text-encoder: add Grad-ECLIP's word explainer (clipxai explain, Predictor.explain_text).")
@click.option("--explainer-blocks", type=click.IntRange(1), default=DEFAULT_EXPLAINER_BLOCKS, show_default=True,
              help="With --text-explainer: the last N text blocks it re-runs with one head (the reference's 8).")
@click.option("--templates", default=DEFAULT_TEMPLATES, show_default=True,
              help="Prompt templates: openai-85 (the 85-template ensemble), single ('a photo of a {}.'), or a "
                   "UTF-8 FILE with one template per line, each with {} for the class. Recorded in the bundle; "
                   "the device's text encoder uses them too.")
@click.option("--labels-merge-rate", type=click.FloatRange(0.0, 1.0), default=DEFAULT_LABELS_MERGE_RATE,
              show_default=True, help="Multi-label scores: the weight of the local (dense) logits, the class "
                                      "token's get 1 - it (TaI-DPT's GL_merge_rate; docs/methods.md).")
@click.option("--int8-layers", type=click.Choice(["auto", "all"]), default="auto", show_default=True,
              help="int8: auto keeps the weight MatMuls that measurably hurt the maps in fp32 "
                   "(docs/performance.md); all quantizes every one.")
@click.option("--report", "sensitivity_report", is_flag=True,
              help="int8: print the per-layer sensitivity table the selection measured.")
def export(out_dir, classes_text, classes_file, fidelity_images, no_verify, sensitivity_report, **options):
    """Export a CLIP model, with one explanation method (--method) baked in, and a class
    vocabulary (or a text encoder: --text-encoder) as an ONNX bundle."""
    with cli_errors(interrupted="interrupted: no bundle written"):
        out = bundle_folder(out_dir)
        classes = _classes(classes_text, classes_file)  # before the slow imports: errors stay fast
        with export_extra():
            from clipxai.export.pipeline import ExportConfig, export_bundle
        cfg = ExportConfig(output=out, classes=classes, verify=not no_verify,
                           fidelity_images=_image_files(fidelity_images) if fidelity_images else None,
                           report=sensitivity_report, **options)
        result = export_bundle(cfg, ConsoleReporter())
    report(result)


def bundle_folder(out_dir: str | None) -> Path:
    """The exporters' --out (or its retired name --output); a one-line error without one."""
    out = opt.alias_value(out_dir, "out")
    if out is None:
        raise ClipxaiError("no bundle folder given; pass --out DIR")
    return Path(out)


@contextlib.contextmanager
def export_extra():
    """Imports of the torch side: a missing package is a one-line error naming the extra."""
    try:
        yield
    except ImportError as e:
        raise ClipxaiError(f"the exporter needs the export extra ({e.name} is missing): "
                           "pip install \"clipxai[export]\" (from a clone: pip install \".[export]\")") from None


def _retired(message: str):
    raise click.UsageError(message)


def _classes(classes_text: str | None, classes_file: str | None) -> list[str]:
    from clipxai.vocabulary import parse_class_list, read_classes_file
    if classes_text is not None and classes_file is not None:
        raise ClipxaiError("give either --classes or --classes-file, not both")
    if classes_text is None and classes_file is None:
        raise ClipxaiError('no classes given; pass --classes "a,b,c" or --classes-file FILE')
    return parse_class_list(classes_text) if classes_text is not None else read_classes_file(classes_file)


def report(result) -> None:
    v = result.verification
    click.echo(f"bundle: {result.path}  ({_human(result.bytes)})")
    click.echo(f"digest: {result.digest}  (sha256 of manifest.json; pin it with clipxai segment --expect-digest)")
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
        ConsoleReporter().warn("this bundle has RANDOM weights (for tests only)")


def _image_files(folder: str) -> list[Path]:
    files = image_files(folder)
    if not files:
        raise ClipxaiError(f"--fidelity-images {folder}: no .jpg/.png/... images in it "
                           f"(suffixes: {', '.join(sorted(IMAGE_SUFFIXES))})")
    return files


main = export  # the clipxai-export alias

if __name__ == "__main__":  # pragma: no cover
    export()
