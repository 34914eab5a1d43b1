"""Explanations on the device, torch-free: Grad-ECLIP's word weights (``Predictor.explain_text``)
and their pictures (docs/explain.md). Faithfulness metrics live in clipxai/eval/faithfulness.py.

    from clipxai.runtime import Predictor
    p = Predictor.from_bundle("bundles/vitb16-explain")
    e = p.explain_text("dog.jpg", "a dog in a car waiting for traffic lights")
    e.words()     # [("a", 0.02), ("dog", 0.41), ...]
"""

from clipxai.runtime.explain.text import TextExplanation, WordExplainer

__all__ = ["TextExplanation", "WordExplainer"]
