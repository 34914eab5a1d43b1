#!/usr/bin/env python3
"""One heatmap overlay per method and class on a sample image, side by side.

    python scripts/method_gallery.py [--pretrained FILE|TAG|random] [--backbone ViT-B/16]
                                     [--image examples/rocket.jpg] [--classes rocket,sky,smoke]
                                     [--out docs/methods]

Exports a bundle per method (every method of ``clipxai.contract.METHODS``) into
a temporary directory, runs it with the runtime's ``Predictor`` and writes, into
``--out``: ``<method>.png`` (one overlay per class, side by side, captioned) and
``methods.png`` (all methods, one row each). Without real weights (the default
``random``, as no weights can be downloaded offline) every row carries the
random-weights banner above it: such pictures show the mechanics, not what a
method finds.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import click
from PIL import Image, ImageDraw, ImageFont

ROOT = Path(__file__).resolve().parent.parent


def caption(image: Image.Image, text: str, height: int = 18) -> Image.Image:
    """The image with a white caption strip underneath."""
    out = Image.new("RGB", (image.width, image.height + height), (255, 255, 255))
    out.paste(image, (0, 0))
    ImageDraw.Draw(out).text((4, image.height + 3), text, fill=(0, 0, 0), font=ImageFont.load_default())
    return out


def hstack(pictures: list[Image.Image], gap: int = 4) -> Image.Image:
    width = sum(p.width for p in pictures) + gap * (len(pictures) - 1)
    out = Image.new("RGB", (width, max(p.height for p in pictures)), (255, 255, 255))
    x = 0
    for p in pictures:
        out.paste(p, (x, 0))
        x += p.width + gap
    return out


def vstack(pictures: list[Image.Image], gap: int = 6) -> Image.Image:
    out = Image.new("RGB", (max(p.width for p in pictures), sum(p.height for p in pictures) + gap * (len(pictures) - 1)),
                    (255, 255, 255))
    y = 0
    for p in pictures:
        out.paste(p, (0, y))
        y += p.height + gap
    return out


def method_row(bundle: Path, image_path: Path, width: int, random_weights: bool) -> Image.Image:
    """Overlays of every class of the bundle on the image, side by side, each captioned (under the
    random-weights banner when ``random_weights``)."""
    from clipxai.runtime import Predictor
    from clipxai.runtime.preprocess import open_image
    from clipxai.runtime.visualize import overlay, stamp

    predictor = Predictor.from_bundle(bundle, providers="cpu")
    image = open_image(image_path)
    pred = predictor.predict(image)
    method = predictor.bundle.manifest["method"]
    small = (width, round(image.height * width / image.width))
    tiles = []
    for k, name in enumerate(pred.classes):
        pic = overlay(image, pred.heatmap(k)).resize(small, Image.BICUBIC)
        tiles.append(caption(pic, f"{method}: {name}  (score {pred.scores[k]:.2f})"))
    return stamp(hstack(tiles)) if random_weights else hstack(tiles)


def make_gallery(out: Path, pretrained: str, backbone: str, image: Path, classes: list[str], image_size: int,
                 width: int) -> list[Path]:
    from clipxai.contract import METHODS
    from clipxai.export.pipeline import ExportConfig, export_bundle

    out.mkdir(parents=True, exist_ok=True)
    random_weights = pretrained == "random"
    rows, written = [], []
    with tempfile.TemporaryDirectory(prefix="clipxai-gallery-") as tmp:
        for method in METHODS:
            start = time.perf_counter()
            res = export_bundle(ExportConfig(output=Path(tmp) / method, classes=classes, backbone=backbone,
                                             method=method, pretrained=pretrained, image_size=image_size))
            row = method_row(res.path, image, width, random_weights)
            path = out / f"{method}.png"
            row.save(path, format="PNG", optimize=True)
            rows.append(row)
            written.append(path)
            print(f"{method}: {path} ({time.perf_counter() - start:.1f} s)", file=sys.stderr)
    path = out / "methods.png"
    vstack(rows).save(path, format="PNG", optimize=True)
    written.append(path)
    return written


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--pretrained", default="random", show_default=True,
              help="A local weights file, an open_clip tag (needs network or the cache), or 'random'.")
@click.option("--backbone", default="ViT-B/16", show_default=True)
@click.option("--image", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=ROOT / "examples" / "rocket.jpg", show_default=True)
@click.option("--classes", default="rocket,sky,smoke", show_default=True, help="Comma-separated class names.")
@click.option("--image-size", type=int, default=224, show_default=True)
@click.option("--width", type=int, default=320, show_default=True, help="Width of each overlay in pixels.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=ROOT / "docs" / "methods",
              show_default=True)
def main(pretrained, backbone, image, classes, image_size, width, out):
    """Write one heatmap overlay per method and class on a sample image."""
    from clipxai.cli.console import cli_errors
    with cli_errors():
        paths = make_gallery(out, pretrained, backbone, image, [c.strip() for c in classes.split(",")],
                             image_size, width)
    for p in paths:
        click.echo(p)


if __name__ == "__main__":
    main()
