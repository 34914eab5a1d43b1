"""Exporter: torch -> ONNX bundle. Needs the ``export`` extra."""
