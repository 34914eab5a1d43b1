"""The tasks users run, each as a typed job and its runners (docs/design.md, "The app layer").

- ``apps.segment``: images, videos, cameras and Ray -> result files;
- ``apps.explain``: which words made CLIP match an image -> pictures and JSON;
- ``apps.evaluate``: mIoU on a segmentation dataset, deletion/insertion faithfulness.

A command (clipxai/cli) parses its flags into a job and calls the task's ``run``;
the task opens predictors from clipxai.runtime, reports through a
``clipxai.common.report.Reporter`` and stops when the command's stop event is set.
Nothing here imports click or handles signals.
"""
