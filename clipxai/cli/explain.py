"""``clipxai explain BUNDLE IMAGE --text "..." --out DIR``: parse, run ``run_explain`` (clipxai/apps/explain.py), report."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from clipxai.cli import options as opt
from clipxai.cli.console import cli_errors


@click.command(context_settings=opt.COMMAND, epilog="Exit status: 0 done, 2 bad input, 130 interrupted.")
@click.argument("bundle", type=click.Path())
@click.argument("image", type=click.Path())
@click.option("--text", required=True,
              help="The sentence to explain (at most 75 CLIP tokens: 77 with the start and end tokens).")
@opt.out_dir()
@click.option("--truncate", is_flag=True, help="Explain the first 75 tokens of a longer text instead of refusing it.")
@opt.expect_digest()
@opt.runtime_options
def explain(bundle, image, text, out_dir, truncate, expect_digest, runtime):
    """Explain an image-text match with Grad-ECLIP: the weight of each word, and (grad-eclip bundles)
    the image regions. Needs a bundle exported with --text-encoder --text-explainer."""
    from clipxai.apps.explain import ExplainJob, run_explain
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    job = ExplainJob(bundle=bundle, image=image, text=text, out_dir=Path(out_dir), truncate=truncate,
                     expect_digest=expect_digest, runtime=runtime)
    with cli_errors():
        result = run_explain(job)
    e = result.explanation
    click.echo(f"cosine {e.cosine:.4f}" + ("  (text truncated to its first 75 tokens)" if e.truncated else ""))
    for word, weight in sorted(e.words(), key=lambda w: -w[1])[:5]:
        click.echo(f"  {weight:6.1%}  {word}")
    for note in result.notes:
        click.echo(f"  {note}", err=True)
    click.echo(f"results: {out_dir}  ({', '.join(p.name for p in result.files)})")


main = explain  # the clipxai explain alias

if __name__ == "__main__":  # pragma: no cover
    explain()
