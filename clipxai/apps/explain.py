"""``clipxai explain``: which words made CLIP match an image, explained into files.

In ``out_dir`` (each file written atomically, so nothing partial is left):

- ``<image>_words.png``: the sentence with each word shaded by its Grad-ECLIP weight;
- ``<image>_heatmap.png``: the image-side Grad-ECLIP heatmap for the same sentence, where the
  bundle's method is grad-eclip (other methods' maps explain classes, not this cosine);
- ``<image>_explanation.json``: tokens, word pieces, weights, words and the cosine.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from clipxai.common.files import atomic_write, atomic_write_text, prepare_output_dir
from clipxai.runtime.backends import RuntimeOptions
from clipxai.runtime.explain.render import words_image
from clipxai.runtime.outputs import json_safe, safe_name


@dataclass
class ExplainJob:
    """One ``clipxai explain`` run: the sentence ``text`` against ``image`` with ``bundle`` (exported
    --text-encoder --text-explainer), results in ``out_dir``; ``truncate``: explain the first 75 tokens
    of a longer text instead of refusing it."""

    bundle: str
    image: str
    text: str
    out_dir: Path
    truncate: bool = False
    expect_digest: str | None = None
    runtime: RuntimeOptions = field(default_factory=RuntimeOptions)


@dataclass
class ExplainResult:
    explanation: object                 # TextExplanation
    files: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def run_explain(job: ExplainJob) -> ExplainResult:
    """Load the bundle, explain, write the files; ClipxaiError (one line) on bad input."""
    from clipxai.runtime.explain.text import require_text_explainer
    from clipxai.runtime.visualize import stamp
    from clipxai.runtime.predictor import Predictor
    from clipxai.runtime.preprocess import open_image

    predictor = Predictor.from_bundle(job.bundle, options=job.runtime, digest=job.expect_digest)
    require_text_explainer(predictor.bundle)
    image = open_image(job.image, predictor.max_pixels)
    explanation = predictor.explain_text(image, job.text, truncate=job.truncate)
    prepare_output_dir(job.out_dir)
    stem = safe_name(Path(job.image).stem)
    result = ExplainResult(explanation)
    random = predictor.bundle.random_weights
    words = words_image(explanation, title=f"Grad-ECLIP word weights, cosine {explanation.cosine:.4f}"
                        + (" (truncated to its first 75 tokens)" if explanation.truncated else ""))
    if random:
        words = stamp(words)
    result.files.append(_save_png(job.out_dir / f"{stem}_words.png", words))
    if predictor.bundle.method == "grad-eclip":
        heat = _heatmap(predictor, image, job.text)
        result.files.append(_save_png(job.out_dir / f"{stem}_heatmap.png", stamp(heat) if random else heat))
    else:
        result.notes.append(f"no image-side heatmap: the bundle's method is {predictor.bundle.method}, "
                            "and only grad-eclip's map explains this cosine (export with --method grad-eclip)")
    record = dict(explanation.to_json(), image=str(job.image), bundle=str(job.bundle),
                  method=predictor.bundle.method, random_weights=random)
    path = job.out_dir / f"{stem}_explanation.json"
    atomic_write_text(path, json.dumps(json_safe(record), indent=2) + "\n")
    result.files.append(path)
    return result


def _heatmap(predictor, image, text: str):
    """The grad-eclip map of the sentence itself (template "{}"), over the image, above the words."""
    from clipxai.runtime.visualize import overlay
    predictor.set_classes([" ".join(text.split())], templates=["{}"], cache=False)
    prediction = predictor.predict(image)
    return overlay(image.convert("RGB"), lambda a, b: prediction.heatmap_rows(0, a, b))


def _save_png(path: Path, picture) -> Path:
    atomic_write(path, lambda tmp: picture.save(tmp, format="PNG"))
    return path
