"""How result files are named and written as JSON (shared by the image and the video outputs)."""

from __future__ import annotations

import hashlib
import math
import re
import unicodedata
from collections import Counter


# What no file name part may hold on Linux, macOS or Windows: separators, reserved and control
# characters; whitespace too (names stay one shell word). Readable Unicode (Café, 猫, עץ) is kept.
_UNSAFE = re.compile(r'[\x00-\x1f\x7f<>:"/\\|?*\s\u200b-\u200f\u202a-\u202e\u2066-\u2069]+')
MAX_PART_BYTES = 80  # UTF-8 bytes of one part: a prefix, a suffix and the class fit in 255


def safe_name(name: str) -> str:
    """A class or source name as a file-name part: NFC Unicode kept, runs of unsafe characters (see
    ``_UNSAFE``, bidirectional controls included) become '_', no leading or trailing dots; a longer
    part than MAX_PART_BYTES is cut and given its name's suffix. Never empty."""
    part = _UNSAFE.sub("_", unicodedata.normalize("NFC", name)).strip("._") or "class"
    if len(part.encode("utf-8")) > MAX_PART_BYTES:
        part = part.encode("utf-8")[:MAX_PART_BYTES - 7].decode("utf-8", "ignore") + "-" + stable_suffix(name)
    return part


def stable_suffix(text: str) -> str:
    """Six hex digits that depend on ``text`` only: what tells two names apart that would meet."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:6]


def unique_names(names) -> dict[str, str]:
    """Each name -> its file part, unique among ``names`` even on a case-insensitive file system: names
    whose parts would meet ("a b" and "a_b", "Sky" and "sky") all get ``-<stable_suffix(name)>``."""
    parts = {n: safe_name(n) for n in names}
    meets = Counter(p.casefold() for p in parts.values())
    return {n: p if meets[p.casefold()] == 1 else f"{p}-{stable_suffix(n)}" for n, p in parts.items()}


def json_safe(value):
    """``value`` with every non-finite float replaced by None, so the JSON is valid."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value
