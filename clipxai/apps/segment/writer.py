"""One image's result files, all or none, in ``out_dir``:

- ``<name>_heatmap_<class>.png``: the class's heatmap over the image (unless overlays are off);
- ``<name>_segmentation.png``: the segmentation with a legend;
- ``<name>.json``: the record of records.py (scores, top class, SAM points, masks) and ``files``,
  which file holds what;
- with SAM: ``<name>_mask_<class>.png`` (8-bit, 255 inside), ``<name>_sam_<class>.png`` (the mask
  and the points), ``<name>_objects.png`` (the label map of the masks).

Class names become file-name parts with ``unique_names`` (readable Unicode kept; names that
would meet, such as "a b" and "a_b", get a short stable suffix). Every file is written atomically (a temporary name, then a rename); a failure part-way removes
the image's files already written; a result path already written in this run for another input
is an error, never an overwrite. Pictures of a random-weights bundle carry the banner above them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from clipxai.apps.segment.records import dumps, image_record
from clipxai.common.files import atomic_write
from clipxai.errors import ClipxaiError
from clipxai.runtime.outputs import unique_names


class ResultWriter:
    """Writes each image's result files (module docstring). names: input -> result prefix (inputs.py);
    sam: a SamAttachment or None."""

    def __init__(self, out_dir: Path, predictor, names: dict[Path, Path], overlays: bool = True, sam=None):
        self.out_dir, self.predictor, self.names, self.overlays, self.sam = out_dir, predictor, names, overlays, sam
        self.owner: dict[Path, Path] = {}  # result path -> the input it belongs to, this run
        self.fresh: list[Path] = []        # files written for the image being written
        self.random = predictor.bundle.random_weights

    def write(self, source: Path, image: Image.Image, pred) -> dict:
        """All result files of one image, or none; returns its JSON record."""
        self.fresh = []
        try:
            return self._write(source, image, pred)
        except BaseException:
            for path in self.fresh:
                path.unlink(missing_ok=True)
            raise

    def _write(self, source: Path, image: Image.Image, pred) -> dict:
        from clipxai.runtime.visualize import overlay, segmentation_image
        (self.out_dir / self.names[source]).parent.mkdir(parents=True, exist_ok=True)
        parts, files = unique_names(pred.classes), {}
        if self.overlays:
            files["heatmaps"] = {}
            for k, name in enumerate(pred.classes):
                rows = (lambda kk: lambda r0, r1: pred.heatmap_rows(kk, r0, r1))(k)
                files["heatmaps"][name] = self._picture(source, f"_heatmap_{parts[name]}.png", overlay(image, rows))
        files["segmentation"] = self._picture(source, "_segmentation.png",
                                              segmentation_image(image, pred.segmentation, pred.classes))
        masks = self._masks(source, image, pred, parts, files) if self.sam is not None else None
        record = dict(image_record(source, pred, self.predictor, masks), files=files)
        text = dumps(record, indent=2) + "\n"
        self._save(source, self._prefix(source, ".json"), lambda p: p.write_text(text, encoding="utf-8"))
        return record

    def _masks(self, source: Path, image: Image.Image, pred, parts: dict, files: dict) -> dict:
        """SAM's object mask per class: mask and overlay pictures, the label map (their names into ``files``)."""
        from clipxai.runtime.sam import label_map
        from clipxai.runtime.visualize import mask_overlay, palette, segmentation_image
        masks = self.sam.masks(image, pred)
        colours = palette(len(pred.classes))
        files["masks"], files["sam"] = {}, {}
        for name, m in masks.items():
            coords, labels = (m.points, m.labels) if m is not None else pred.points(pred.classes.index(name))
            if m is not None:
                pic = Image.fromarray(np.where(m.mask, np.uint8(255), np.uint8(0)), "L")
                path = self._prefix(source, f"_mask_{parts[name]}.png")
                self._save(source, path, lambda p, pic=pic: pic.save(p, format="PNG"))
                files["masks"][name] = path.name
            colour = tuple(int(v) for v in colours[pred.classes.index(name)])
            files["sam"][name] = self._picture(source, f"_sam_{parts[name]}.png", mask_overlay(
                image, m.mask if m is not None else None, coords, labels, colour))
        files["objects"] = self._picture(source, "_objects.png",
                                         segmentation_image(image, label_map(masks, pred), pred.classes))
        return masks

    def _picture(self, source: Path, suffix: str, picture: Image.Image) -> str:
        """Save a picture (with the banner of a random-weights bundle); its file name."""
        from clipxai.runtime.visualize import stamp
        if self.random:
            picture = stamp(picture)
        path = self._prefix(source, suffix)
        self._save(source, path, lambda p: picture.save(p, format="PNG"))
        return path.name

    def _save(self, source: Path, path: Path, write) -> None:
        other = self.owner.setdefault(path, source)
        if other is not source:
            raise ClipxaiError(f"its result {path.name} would overwrite that of {other}; rename one of them")
        atomic_write(path, write)
        self.fresh.append(path)

    def _prefix(self, source: Path, suffix: str) -> Path:
        rel = self.names[source]
        return self.out_dir / rel.parent / f"{rel.name}{suffix}"

    def json_path(self, source: Path) -> Path:
        return self._prefix(source, ".json")
