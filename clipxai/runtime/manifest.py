"""The manifest schema, as data: every field a bundle's ``manifest.json`` may carry, its type and range.

``validate(manifest)`` returns the first problem as "field 'a.b': what is wrong",
or None. One table per bundle kind; a field the table does not name is kept
but never read. docs/bundle-format.md lists the same fields for people.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Callable

from clipxai.contract import (
    MAX_CLASSES, MAX_IMAGE_SIZE, METHODS, PRECISIONS, REDUNDANCY_AUTO, REDUNDANCY_MODES, SUPPORTED_SCHEMAS,
)

Check = Callable[[Any], "str | None"]  # a value -> its problem, or None

_SHA256 = re.compile(r"[0-9a-f]{64}")


def integer(lo: int, hi: int) -> Check:
    def check(v):
        if isinstance(v, bool) or not isinstance(v, int):
            return f"must be an integer, got {_show(v)}"
        return None if lo <= v <= hi else f"must be in {lo}..{hi}, got {v}"
    return check


def one_of(choices) -> Check:
    def check(v):
        return None if isinstance(v, (str, int)) and not isinstance(v, bool) and v in choices else \
            f"must be one of {', '.join(map(str, choices))}, got {_show(v)}"
    return check


def text(v) -> str | None:
    return None if isinstance(v, str) and v.strip() else f"must be a non-empty string, got {_show(v)}"


def mapping(v) -> str | None:
    return None if isinstance(v, dict) else f"must be an object, got {_show(v)}"


def optional(check: Check) -> Check:
    return lambda v: None if v is None else check(v)


def numbers(n: int, positive: bool = False) -> Check:
    def check(v):
        if not isinstance(v, list) or len(v) != n:
            return f"must be a list of {n} numbers, got {_show(v)}"
        for x in v:
            if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
                return f"must hold finite numbers, got {_show(x)}"
            if positive and not x > 0:
                return f"must hold positive numbers, got {x}"
        return None
    return check


def class_list(v) -> str | None:
    if not isinstance(v, list) or not v:
        return f"must be a non-empty list of class names, got {_show(v)}"
    if len(v) > MAX_CLASSES:
        return f"has {len(v)} classes, more than {MAX_CLASSES}"
    seen: dict[str, int] = {}
    for i, name in enumerate(v):
        if not isinstance(name, str) or not name.strip():
            return f"entry {i} must be a non-empty string, got {_show(name)}"
        key = " ".join(name.split()).lower()
        if key in seen:
            return f"lists {name!r} twice (entries {seen[key]} and {i}); class names must be unique"
        seen[key] = i
    return None


def file_table(v) -> str | None:
    if not isinstance(v, dict) or not v:
        return f"must map file names to their sha256, got {_show(v)}"
    for name, info in v.items():
        if not isinstance(info, dict) or not isinstance(info.get("sha256"), str) or not _SHA256.fullmatch(
                info["sha256"]):
            return f"entry {name!r} has no valid sha256 (64 lower-case hex digits)"
    return None


def tensor_specs(v) -> str | None:
    if not isinstance(v, dict) or not v:
        return f"must map tensor names to dtype and shape, got {_show(v)}"
    for name, spec in v.items():
        if not isinstance(spec, dict) or not isinstance(spec.get("dtype"), str) or not isinstance(
                spec.get("shape"), list):
            return f"entry {name!r} needs a dtype string and a shape list"
        for d in spec["shape"]:
            if not (isinstance(d, str) or (isinstance(d, int) and not isinstance(d, bool) and 0 < d <= 1 << 24)):
                return f"entry {name!r} has a bad dimension {_show(d)}"
    return None


def _show(v) -> str:
    s = repr(v)
    return s if len(s) <= 40 else s[:37] + "..."


@dataclass(frozen=True)
class Field:
    path: str                 # dotted: "preprocess.mean"
    check: Check
    required: bool = True


COMMON_FIELDS: tuple[Field, ...] = (
    Field("schema_version", one_of(SUPPORTED_SCHEMAS)),
    Field("files", file_table),
    Field("image_size", integer(1, MAX_IMAGE_SIZE)),
    Field("preprocess", mapping),
    Field("preprocess.mean", numbers(3)),
    Field("preprocess.std", numbers(3, positive=True)),
)

CLIP_FIELDS: tuple[Field, ...] = COMMON_FIELDS + (
    Field("method", one_of(METHODS)),
    Field("precision", one_of(PRECISIONS)),
    Field("grid_size", integer(1, MAX_IMAGE_SIZE)),
    Field("classes", class_list),
    Field("backbone", mapping),
    Field("backbone.name", text),
    Field("graph", mapping),
    Field("graph.inputs", tensor_specs),
    Field("graph.outputs", tensor_specs),
    Field("redundancy", optional(one_of(REDUNDANCY_MODES + (REDUNDANCY_AUTO,))), required=False),
    Field("embed_dim", integer(1, 1 << 16), required=False),
    Field("weights", optional(mapping), required=False),
    Field("fidelity", optional(mapping), required=False),
    Field("text_encoder", optional(mapping), required=False),
    Field("text_explainer", optional(mapping), required=False),
    Field("text_explainer.blocks", integer(1, 1024), required=False),
    Field("text_explainer.inputs", tensor_specs, required=False),
    Field("text_explainer.outputs", tensor_specs, required=False),
)

def positive(v) -> str | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not v > 0:
        return f"must be a positive number, got {_show(v)}"
    return None


MASK_FIELDS: tuple[Field, ...] = COMMON_FIELDS + (
    Field("kind", one_of(("mask-model",))),
    Field("model", text),
    Field("family", one_of(("sam", "sam2"))),
    Field("precision", one_of(PRECISIONS)),
    Field("preprocess.resize", one_of(("longest-side", "stretch"))),
    Field("preprocess.scale", positive),
    Field("graphs", mapping),
    Field("graphs.encoder", mapping),
    Field("graphs.encoder.inputs", tensor_specs),
    Field("graphs.encoder.outputs", tensor_specs),
    Field("graphs.decoder", mapping),
    Field("graphs.decoder.inputs", tensor_specs),
    Field("graphs.decoder.outputs", tensor_specs),
    Field("fidelity", optional(mapping), required=False),
)

SCHEMAS: dict[str, tuple[Field, ...]] = {"clip": CLIP_FIELDS, "mask-model": MASK_FIELDS}


def _get(manifest: dict, path: str):
    value = manifest
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            raise KeyError(path)
        value = value[part]
    return value


def validate(manifest: dict, kind: str = "clip") -> str | None:
    """The first problem of ``manifest`` against the schema of ``kind`` as one phrase, or None."""
    for field in SCHEMAS[kind]:
        try:
            value = _get(manifest, field.path)
        except KeyError:
            if field.required:
                return f"missing field {field.path!r}"
            continue
        problem = field.check(value)
        if problem:
            return f"field {field.path!r} {problem}"
    return None
