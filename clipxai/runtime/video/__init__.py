"""Video files and cameras: frame sources, the pipelined ``Predictor.stream`` and ``clipxai segment``
on videos (docs/video.md). PyAV (``clipxai[video]``) and OpenCV (``clipxai[camera]``) are optional:
the runtime imports and runs without them."""
