"""``clipxai-explain BUNDLE IMAGE --text "..." --out DIR``: which words made CLIP match the image.

The click command parses; ``run_explain`` does the work (clipxai/runtime/explain/run.py).
"""

from __future__ import annotations

import logging
from pathlib import Path

import click

from clipxai.common.cli import cli_errors
from clipxai.runtime.explain.run import ExplainJob, run_explain


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("bundle", type=click.Path())
@click.argument("image", type=click.Path())
@click.option("--text", required=True, help="The sentence to explain (at most 77 CLIP tokens).")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Folder for the results.")
@click.option("--truncate", is_flag=True, help="Explain the first 77 tokens of a longer text instead of refusing it.")
@click.option("--providers", default="auto", show_default=True, help="auto, cpu, cuda or tensorrt.")
@click.option("--threads", type=click.IntRange(1), default=None, help="onnxruntime intra-op threads.")
@click.option("--expect-digest", default=None, metavar="SHA256",
              help="Refuse the bundle unless its manifest's sha256 is this (clipxai-export prints it).")
def main(bundle, image, text, out_dir, truncate, providers, threads, expect_digest):
    """Explain an image-text match with Grad-ECLIP: the weight of each word, and (grad-eclip bundles)
    the image regions. Needs a bundle exported with --text-encoder --text-explainer.

    Exit status: 0 done, 2 bad input, 130 interrupted.
    """
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    job = ExplainJob(bundle=bundle, image=image, text=text, out_dir=Path(out_dir), truncate=truncate,
                     providers=providers, threads=threads, expect_digest=expect_digest)
    with cli_errors():
        result = run_explain(job)
    e = result.explanation
    click.echo(f"cosine {e.cosine:.4f}" + ("  (text truncated to 77 tokens)" if e.truncated else ""))
    for word, weight in sorted(e.words(), key=lambda w: -w[1])[:5]:
        click.echo(f"  {weight:6.1%}  {word}")
    for note in result.notes:
        click.echo(f"  {note}", err=True)
    click.echo(f"results: {out_dir}  ({', '.join(p.name for p in result.files)})")


if __name__ == "__main__":  # pragma: no cover
    main()
