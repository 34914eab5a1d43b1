"""Which files a segment job reads, and the name each one's results get.

Names: each input keeps its path relative to the folder common to all inputs
(``a/x.jpg`` and ``b/x.jpg`` give ``a/x...`` and ``b/x...``), and its stem, or
its whole file name where two inputs in one folder share a stem (``x.png``
and ``x.jpg``). A result path that would still be written twice in one run
is an error for the second input, never an overwrite (writer.py). Names that differ only in case
get a short stable suffix, so a case-insensitive file system never merges two results.
"""

from __future__ import annotations

import glob
import os
from collections import Counter
from pathlib import Path

from clipxai.common.images import image_files
from clipxai.errors import ClipxaiError
from clipxai.runtime.outputs import stable_suffix


def expand_inputs(inputs) -> tuple[list[Path], list[tuple[str, str]]]:
    """Images, folders (their image files, sorted) and globs -> (unique files, [(input, problem)])."""
    files: list[Path] = []
    problems: list[tuple[str, str]] = []
    for item in inputs:
        found, problem = _expand(item)
        files.extend(found)
        if problem:
            problems.append((item, problem))
    unique = list({f.resolve(): f for f in reversed(files)}.values())[::-1]  # first occurrence wins
    return unique, problems


def _expand(item: str) -> tuple[list[Path], str | None]:
    p = Path(item)
    if p.is_dir():
        found = image_files(p)
        return found, None if found else "folder holds no image files"
    if p.is_file():
        return [p], None
    if any(ch in item for ch in "*?["):
        found = sorted(Path(f) for f in glob.glob(item, recursive=True) if Path(f).is_file())
        return found, None if found else "pattern matches no files"
    return [], "no such file or folder"


def image_inputs(inputs) -> tuple[list[Path], list[tuple[str, str]]]:
    """The image files of ``inputs`` and the inputs that gave none; ClipxaiError when there are no images."""
    files, failures = expand_inputs(inputs)
    if not files:
        raise ClipxaiError("no images to process: " + "; ".join(f"{i}: {w}" for i, w in failures))
    return files, failures


def output_names(files: list[Path]) -> dict[Path, Path]:
    """Each input -> its result prefix relative to the output folder (module docstring); prefixes that
    would still meet (on a case-insensitive file system too) get ``-<stable_suffix(input path)>``."""
    absolute = [f.resolve() for f in files]
    common = Path(os.path.commonpath([str(a.parent) for a in absolute])) if absolute else Path()
    rel = [a.relative_to(common) for a in absolute]
    stems = Counter((str(r.parent).casefold(), r.stem.casefold()) for r in rel)
    names = [r.parent / r.stem if stems[(str(r.parent).casefold(), r.stem.casefold())] == 1 else r for r in rel]
    meets = Counter(str(n).casefold() for n in names)
    return {f: n if meets[str(n).casefold()] == 1 else n.parent / f"{n.name}-{stable_suffix(str(r))}"
            for f, n, r in zip(files, names, rel)}
