"""``python -m clipxai.cli.latency BUNDLE``: the latency split of a bundle on this machine
(clipxai/runtime/latency.py), as a markdown table. jetson/benchmark.sh runs it."""

from __future__ import annotations

import json
from pathlib import Path

import click

from clipxai.cli.console import cli_errors
from clipxai.runtime.latency import TABLE_HEADER, benchmark, describe_device, format_rows


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("bundle", type=click.Path())
@click.option("--image", type=click.Path(dir_okay=False), default=None,
              help="Image to run [examples/rocket.jpg of a source checkout, else a 640x480 gray image].")
@click.option("--backend", type=click.Choice(["onnxruntime", "tensorrt"]), default="onnxruntime", show_default=True)
@click.option("--providers", default="auto", show_default=True, help="onnxruntime: auto, cpu, cuda or tensorrt.")
@click.option("--trt-fp16", is_flag=True, help="fp16 TensorRT engine from an fp32 bundle.")
@click.option("--batch", "batches", type=click.IntRange(1), multiple=True, default=(1, 4), show_default=True)
@click.option("--runs", type=click.IntRange(1), default=20, show_default=True)
@click.option("--warmup", type=click.IntRange(0), default=3, show_default=True)
@click.option("--power-mode", default="n/a", show_default=True, help="Power mode to print with the figures "
              "(benchmark.sh passes the nvpmodel mode and jetson_clocks state).")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None, help="Also write rows as JSON.")
def main(bundle, image, backend, providers, trt_fp16, batches, runs, warmup, power_mode, json_out):
    """Print the latency split of BUNDLE on this machine as a markdown table."""
    from PIL import Image

    from clipxai.runtime.predictor import Predictor
    from clipxai.runtime.backends import NvidiaOptions
    with cli_errors():
        p = Predictor.from_bundle(bundle, providers=providers,
                                  nvidia=NvidiaOptions(backend=backend, trt_fp16=trt_fp16))
        if image is None:
            rocket = Path(__file__).resolve().parents[2] / "examples" / "rocket.jpg"
            image = str(rocket) if rocket.is_file() else Image.new("RGB", (640, 480), (128, 128, 128))
        rows = benchmark(p, image, batches, runs, warmup)
    precision = p.bundle.precision + ("->fp16 engine" if trt_fp16 else "")
    meta = {"device": describe_device(p), "power_mode": power_mode,
            "backend": p.provider if backend == "onnxruntime" else "tensorrt (native)",
            "precision": precision, "image_size": p.bundle.image_size}
    if p.provider == "CPUExecutionProvider":
        click.echo("note: CPU provider: no device copies, H2D/D2H are n/a and compute is the whole session.run")
    click.echo("\n".join([*TABLE_HEADER, *format_rows(rows, meta)]))
    if json_out:
        Path(json_out).write_text(json.dumps({"meta": meta, "rows": rows}, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
