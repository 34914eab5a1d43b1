"""Torch-free runtime: numpy + onnxruntime + Pillow.

    from clipxai.runtime import Predictor
    p = Predictor.from_bundle("bundles/vitb16-448", providers="auto")
    pred = p.predict("photo.jpg")
    pred.heatmaps      # float32 [K, H, W] in [0, 1] at the original size
"""

from clipxai.runtime.bundle import Bundle, load_bundle
from clipxai.runtime.predictor import Prediction, Predictor

__all__ = ["Bundle", "Prediction", "Predictor", "load_bundle"]
