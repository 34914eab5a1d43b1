"""Object masks on the device: SAM and SAM 2.1 bundles (clipxai export-sam) run with onnxruntime, prompted
by clipxai's points (docs/sam.md). Torch-free.

    from clipxai.runtime.sam import MaskPredictor
    sam = MaskPredictor.from_bundle("bundles/sam2-tiny")
    sam.set_image(image)
    masks = sam.masks_for(prediction)      # class -> ObjectMask (bool [H, W], score, bbox) or None
"""

from clipxai.runtime.sam.objects import label_map, mask_record, rle
from clipxai.runtime.sam.predictor import MaskPredictor, ObjectMask

__all__ = ["MaskPredictor", "ObjectMask", "label_map", "mask_record", "rle"]
