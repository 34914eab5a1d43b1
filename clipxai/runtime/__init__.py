"""Torch-free runtime: numpy + onnxruntime + Pillow.

    from clipxai.runtime import Predictor
    p = Predictor.from_bundle("bundles/vitb16-448", providers="auto")
    pred = p.predict("photo.jpg")
    pred.heatmaps      # float32 [K, H, W] in [0, 1] at the original size
"""

from clipxai.runtime.backends import NvidiaOptions, RuntimeOptions
from clipxai.runtime.bundle import Bundle, load_bundle
from clipxai.runtime.prediction import Prediction
from clipxai.runtime.predictor import Predictor

__all__ = ["Bundle", "NvidiaOptions", "Prediction", "Predictor", "RuntimeOptions", "load_bundle"]
