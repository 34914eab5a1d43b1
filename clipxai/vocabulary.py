"""Class vocabulary parsing and validation (torch-free; export and runtime share it)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from clipxai.errors import ClipxaiError


def parse_class_list(text: str) -> list[str]:
    """'person, bench,sky' -> ['person', 'bench', 'sky'] (validated)."""
    return validate_classes(text.split(","))


def read_classes_file(path: str | Path) -> list[str]:
    """One class per line, UTF-8; blank lines at the end of the file are ignored."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ClipxaiError(f"classes file {str(path)!r} does not exist")
    except UnicodeDecodeError as e:
        raise ClipxaiError(f"classes file {str(path)!r} is not UTF-8 (byte {e.start}); save it as UTF-8")
    except OSError as e:
        raise ClipxaiError(f"cannot read classes file {str(path)!r}: {e.strerror}")
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    return validate_classes(lines, source=path.name)


def validate_classes(names: Iterable[str], source: str = "--classes") -> list[str]:
    """Strip names; refuse an empty list, blank names and duplicates.

    CLIP's tokenizer lowercases and collapses whitespace, so 'Dog' and 'dog '
    are the same class and count as duplicates.
    """
    out: list[str] = []
    seen: dict[str, int] = {}
    for i, raw in enumerate(names, start=1):
        name = " ".join(raw.split())
        if not name:
            raise ClipxaiError(f"{source}: class {i} is blank; remove it or give it a name")
        key = name.lower()
        if key in seen:
            raise ClipxaiError(f"{source}: duplicate class {name!r} (entries {seen[key]} and {i}); list each class once")
        seen[key] = i
        out.append(name)
    if not out:
        raise ClipxaiError(f"{source}: no classes given; pass --classes \"a,b,c\" or --classes-file FILE")
    return out
