"""clipxai: CLIP Surgery explainability, exported to ONNX and run on devices.

Importing ``clipxai`` (or ``clipxai.runtime``) never imports torch; only
``clipxai.export`` and ``clipxai.models`` need the ``export`` extra.
"""

__version__ = "0.1.0"
