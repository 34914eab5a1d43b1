"""What a segment run did (``Summary``), and its first line (``announce``): shared by every runner."""

from __future__ import annotations

from dataclasses import dataclass, field

from clipxai.common.report import Reporter


@dataclass
class Summary:
    """What a run did: inputs done, (input, why) failures, whether it was stopped and how many inputs
    it did not reach, notes for the user; unit: "image" or "video"."""

    done: list = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)
    interrupted: bool = False
    remaining: int = 0
    unit: str = "image"
    notes: list[str] = field(default_factory=list)


def announce(reporter: Reporter, segmenter, count: int, unit: str) -> None:
    """The run's first line, and the random-weights warning where it applies."""
    reporter.step(segmenter.describe(count, unit))
    if segmenter.predictor.bundle.random_weights:
        reporter.warn("this bundle has RANDOM weights: its maps mean nothing (tests only)")

