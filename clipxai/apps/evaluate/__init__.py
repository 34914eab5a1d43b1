"""Evaluations as tasks: ``clipxai evaluate segmentation`` (mIoU, segmentation.py) and
``clipxai evaluate faithfulness`` (deletion/insertion, faithfulness.py)."""
