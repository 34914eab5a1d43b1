"""What one process needs to segment: ``Segmenter`` opens the predictor (and SAM) for a job once.

The local runners make one; each Ray actor makes its own (ray.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from clipxai.apps.segment.job import SamOptions, SegmentationOptions, SegmentJob
from clipxai.errors import ClipxaiError


@dataclass(frozen=True)
class SamAttachment:
    """A mask predictor and the classes it masks: each class's object mask from its points."""

    predictor: object           # clipxai.runtime.sam.MaskPredictor
    classes: tuple[str, ...]

    def masks(self, image, prediction) -> dict:
        """class -> ObjectMask (bool [H, W], score, bbox) or None (no points), for ``prediction`` of ``image``."""
        self.predictor.set_image(image)
        return self.predictor.masks_for(prediction, list(self.classes))


def segmenting_predictor(bundle: str, runtime, segmentation: SegmentationOptions, digest: str | None = None,
                         stamps: str | Path | None = None):
    """A Predictor for ``bundle`` with ``segmentation``'s settings, its sliding windows checked against the
    bundle's size (segment and evaluate alike); digest, stamps: see Predictor.from_bundle."""
    from clipxai.runtime.predictor import Predictor
    seg = segmentation
    predictor = Predictor.from_bundle(bundle, options=runtime, digest=digest, stamps=stamps)
    if seg.slide is not None:
        from clipxai.runtime.sliding import check_slide
        check_slide(seg.slide.stride, seg.slide.short_side, predictor.bundle.image_size)
    predictor.set_segmentation(seg.logit_scale, seg.prob_threshold, seg.background_classes, seg.background_threshold)
    return predictor


def open_predictor(job: SegmentJob, stamps: str | Path | None = None):
    """The job's Predictor, with its segmentation settings; stamps: see Predictor.from_bundle."""
    return segmenting_predictor(job.bundle, job.runtime, job.segmentation, job.expect_digest, stamps)


def choose_classes(job: SegmentJob, predictor) -> list[str] | None:
    """The classes to report: new names on a text-encoder bundle (set on the predictor; None returned),
    else the subset of the bundle's classes (None: all)."""
    from clipxai.runtime.text.encoder import has_text_encoder
    if job.classes is None:
        return None
    if has_text_encoder(predictor.bundle):  # any names: the vocabulary itself changes
        predictor.set_classes(list(job.classes))
        return None
    unknown = [c for c in job.classes if c not in predictor.classes]
    if unknown:
        raise ClipxaiError(f"--classes: {unknown[0]!r} is not in the bundle (it has: {', '.join(predictor.classes)}); "
                           "to name new classes on the device, export the bundle with clipxai export --text-encoder")
    return list(job.classes)


def attach_sam(options: SamOptions | None, job: SegmentJob, classes: list[str],
               stamps: str | Path | None = None) -> SamAttachment | None:
    """The mask predictor of ``options`` for ``classes`` (all, or the chosen ones), or None without SAM."""
    if options is None:
        return None
    from clipxai.runtime.sam import MaskPredictor
    predictor = MaskPredictor.from_bundle(options.bundle, options=job.runtime, stamps=stamps)
    wanted = tuple(options.classes) if options.classes else tuple(classes)
    unknown = [c for c in wanted if c not in classes]
    if unknown:
        raise ClipxaiError(f"--sam-classes: {unknown[0]!r} is not one of the classes ({', '.join(classes)})")
    return SamAttachment(predictor, wanted)


class Segmenter:
    """The predictor, the classes to report (``subset``, None: all) and the SAM attachment of a job."""

    def __init__(self, job: SegmentJob, stamps: str | Path | None = None):
        self.job = job
        self.predictor = open_predictor(job, stamps)
        self.subset = choose_classes(job, self.predictor)
        self.sam = attach_sam(job.sam, job, self.subset or self.predictor.classes, stamps)

    @property
    def classes(self) -> list[str]:
        return self.subset or self.predictor.classes

    def select(self, prediction):
        """``prediction`` restricted to the reported classes."""
        return prediction.select(self.subset) if self.subset is not None else prediction

    def describe(self, count: int, unit: str) -> str:
        b = self.predictor.bundle
        return (f"{count} {unit}{'s' if count != 1 else ''} with {b.path} ({b.backbone_name}, "
                f"{len(self.classes)} classes, {self.predictor.provider})")
