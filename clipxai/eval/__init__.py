"""Dataset evaluation with the runtime (numpy + onnxruntime, no torch): mIoU on segmentation datasets."""
