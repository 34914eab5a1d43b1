"""``clipxai-segment BUNDLE INPUT... --out DIR``: overlays, segmentation and JSON per image."""

from __future__ import annotations

import glob
import json
import logging
import os
import re
import sys
from pathlib import Path

import click

from clipxai.errors import ClipxaiError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


def expand_inputs(inputs: list[str]) -> tuple[list[Path], list[tuple[str, str]]]:
    """Images, folders (their image files, sorted) and globs -> (files, [(input, problem)])."""
    files: list[Path] = []
    problems: list[tuple[str, str]] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                problems.append((item, "folder holds no image files"))
            files.extend(found)
        elif p.is_file():
            files.append(p)
        elif any(ch in item for ch in "*?["):
            found = sorted(Path(f) for f in glob.glob(item, recursive=True) if Path(f).is_file())
            if not found:
                problems.append((item, "pattern matches no files"))
            files.extend(found)
        else:
            problems.append((item, "no such file or folder"))
    seen, unique = set(), []
    for f in files:
        key = f.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(f)
    return unique, problems


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "class"


def _write_atomic(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.partial")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("bundle", type=click.Path())
@click.argument("inputs", nargs=-1, required=True)
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Folder for the results.")
@click.option("--classes", "classes_text",
              help="Comma-separated classes: any names with a --text-encoder bundle, else a subset of its classes.")
@click.option("--batch-size", type=click.IntRange(1), default=4, show_default=True, help="Images per graph run.")
@click.option("--providers", default="auto", show_default=True, help="auto, cpu, cuda or tensorrt.")
@click.option("--threads", type=click.IntRange(1), default=None, help="onnxruntime intra-op threads.")
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
              help="Folder caching on-device class encodings [default: ~/.cache/clipxai/text].")
def main(bundle, inputs, out_dir, classes_text, batch_size, providers, threads, background_threshold,
         slide_stride, short_side, logit_scale, prob_threshold, background_classes, trt_fp16, trt_cache, no_overlays, text_cache):
    """Segment images with a clipxai bundle: heatmap overlays, a segmentation and a JSON per image."""
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    try:
        failures, done = run(bundle, list(inputs), Path(out_dir), classes_text, batch_size, providers, threads,
                             background_threshold, trt_fp16, trt_cache, no_overlays,
                             slide=(slide_stride, short_side), logit_scale=logit_scale,
                             prob_threshold=prob_threshold, background_classes=background_classes, text_cache=text_cache)
    except ClipxaiError as e:
        click.secho(f"error: {e}", fg="red", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        click.secho("interrupted", fg="red", err=True)
        sys.exit(130)
    click.echo(f"results: {out_dir}  ({done} image{'s' if done != 1 else ''})")
    if failures:
        click.secho(f"{len(failures)} input{'s' if len(failures) != 1 else ''} failed, {done} processed:",
                    fg="red", err=True)
        for item, why in failures:
            click.echo(f"  {item}: {why}", err=True)
        sys.exit(1)


def run(bundle_path, inputs, out_dir: Path, classes_text, batch_size, providers, threads, background_threshold,
        trt_fp16, trt_cache, no_overlays, slide=(None, None), logit_scale=None, prob_threshold=None,
        background_classes=None, text_cache=None):
    from clipxai.runtime.predictor import Predictor
    from clipxai.runtime.text_encoder import has_text_encoder
    from clipxai.runtime.preprocess import open_image
    from clipxai.vocabulary import parse_class_list

    predictor = Predictor.from_bundle(bundle_path, providers=providers, threads=threads, trt_fp16=trt_fp16,
                                      trt_cache_dir=trt_cache, background_threshold=background_threshold)
    predictor.set_segmentation(logit_scale, prob_threshold,
                               parse_class_list(background_classes) if background_classes else ())
    stride, short_side = slide
    if (stride is None) != (short_side is None):
        raise ClipxaiError("--slide and --short-side go together: give both (e.g. --slide 112 --short-side 336)")
    if stride is not None:
        from clipxai.runtime.sliding import check_slide
        check_slide(stride, short_side, predictor.bundle.image_size)
    subset = None
    if classes_text is not None:
        subset = parse_class_list(classes_text)
        if has_text_encoder(predictor.bundle):  # any names: the vocabulary itself changes
            predictor.set_classes(subset, cache=text_cache if text_cache is not None else True)
            subset = None
        unknown = [c for c in subset or () if c not in predictor.classes]
        if unknown:
            raise ClipxaiError(f"--classes: {unknown[0]!r} is not in the bundle (it has: {', '.join(predictor.classes)}); "
                               "to name new classes on the device, export the bundle with clipxai-export --text-encoder")
    files, failures = expand_inputs(inputs)
    if not files:
        raise ClipxaiError("no images to process: " + "; ".join(f"{i}: {w}" for i, w in failures))
    out_dir.mkdir(parents=True, exist_ok=True)
    click.echo(f"• {len(files)} image{'s' if len(files) != 1 else ''} with {Path(bundle_path)} "
               f"({predictor.bundle.manifest['backbone']['name']}, {len(predictor.classes)} classes, "
               f"{predictor.provider})")
    if predictor.bundle.manifest.get("weights", {}).get("source") == "random":
        click.secho("WARNING: this bundle has RANDOM weights: its maps mean nothing (tests only)",
                    fg="red", bold=True, err=True)

    stems: dict[str, int] = {}
    done = 0
    with click.progressbar(length=len(files), label="  segmenting", show_pos=True, file=sys.stderr) as bar:
        for start in range(0, len(files), batch_size):
            batch = []
            for f in files[start:start + batch_size]:
                try:
                    batch.append((f, open_image(f, predictor.max_pixels)))
                except ClipxaiError as e:
                    failures.append((str(f), str(e).split(": ", 1)[-1] if str(e).startswith(str(f)) else str(e)))
                    bar.update(1)
            if not batch:
                continue
            if stride is None:
                preds = predictor.predict_batch([im for _, im in batch], batch_size=len(batch))
            else:
                preds = [predictor.predict_slide(im, stride, short_side, batch_size) for _, im in batch]
            for (f, im), pred in zip(batch, preds):
                if subset is not None:
                    pred = pred.select(subset)
                stem = f.stem
                stems[stem] = stems.get(stem, 0) + 1
                if stems[stem] > 1:
                    stem = f"{stem}_{stems[stem]}"
                write_results(out_dir, stem, f, im, pred, predictor, overlays=not no_overlays)
                done += 1
                bar.update(1)
    return failures, done


def write_results(out_dir: Path, stem: str, source: Path, image, pred, predictor, overlays: bool = True) -> None:
    from clipxai.runtime.visualize import overlay, segmentation_image, stamp

    random_weights = predictor.bundle.manifest.get("weights", {}).get("source") == "random"
    label = (lambda pic: stamp(pic, "RANDOM WEIGHTS - not a real result")) if random_weights else (lambda pic: pic)
    if overlays:
        for k, name in enumerate(pred.classes):
            pic = label(overlay(image, pred.heatmap(k)))
            _write_atomic(out_dir / f"{stem}_heatmap_{_safe(name)}.png", lambda p: pic.save(p, format="PNG"))
    seg = label(segmentation_image(image, pred.segmentation, pred.classes))
    _write_atomic(out_dir / f"{stem}_segmentation.png", lambda p: seg.save(p, format="PNG"))
    points = {}
    for k, name in enumerate(pred.classes):
        coords, labels = pred.points(k)
        points[name] = {"coords": coords.tolist(), "labels": labels.tolist()}
    record = {
        "image": str(source),
        "size": {"height": pred.size[0], "width": pred.size[1]},
        "bundle": str(predictor.bundle.path),
        "weights": predictor.bundle.manifest.get("weights", {}).get("source"),
        "provider": predictor.provider,
        "top_class": pred.classes[pred.top_class],
        "scores": {name: float(s) for name, s in zip(pred.classes, pred.scores)},
        "points": points,
    }
    text = json.dumps(record, indent=2, ensure_ascii=False) + "\n"
    _write_atomic(out_dir / f"{stem}.json", lambda p: p.write_text(text, encoding="utf-8"))


if __name__ == "__main__":  # pragma: no cover
    main()
