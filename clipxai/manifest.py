"""The bundle manifest, typed: one frozen dataclass per bundle kind, shared by the exporters and the runtime.

``ClipManifest`` (kind "clip", ``clipxai export``) and ``MaskManifest`` (kind "mask-model",
``clipxai export-sam``) describe ``manifest.json`` field by field; nested objects are their own
dataclasses (``Backbone``, ``Graph``, ``TensorSpec``, ...). Each field carries its rule in its
metadata (``value``, ``section``, ``table`` below), so the reader's validation is derived from the
types: ``ClipManifest.from_dict(d)`` returns the typed manifest or raises ``ManifestError`` with
the first problem as one line ("field 'preprocess.std' must hold positive numbers, got 0.0"), then
checks the fields that must agree with each other (``_consistency``). ``to_dict()`` gives the JSON
the exporters write, key for key and in order. A field the dataclasses do not name is kept
(``extra``) but never read. docs/bundle-format.md lists the same fields for people, and
tests/test_manifest.py checks the two against each other. Torch-free.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
from dataclasses import dataclass
from typing import Any, Callable, ClassVar

from clipxai.contract import (
    BPE_VOCAB_FILE, CONTEXT_LENGTH, EXPLAIN_INPUT_EMBEDDING, EXPLAIN_OUTPUT_COSINE, EXPLAIN_OUTPUT_WEIGHTS,
    KIND_CLIP, KIND_MASK, MASK_DECODER_FILE, MASK_EMBEDDINGS, MASK_ENCODER_FILE, MASK_FAMILIES,
    MASK_BINARIZE, MASK_CONDITIONED, MASK_HIGH_RES, MASK_IMAGE_SIZE, MASK_INPUT_IMAGE, MASK_IOU, MASK_LOW_RES,
    MASK_MASK_LOGITS, MASK_MEMORIES, MASK_MEMORY_ATTENTION_FILE, MASK_MEMORY_ENCODER_FILE, MASK_MEMORY_SLOTS,
    MASK_OBJECT_SCORE, MASK_POINT_COORDS, MASK_POINT_LABELS, MASK_POINTER_DISTANCES, MASK_POINTERS,
    MASK_TRACK_DECODER_FILE,
    MAX_CLASSES, MAX_IMAGE_SIZE, METHODS, MODEL_FILE, OUTPUTS, PRECISIONS, REDUNDANCY_AUTO, REDUNDANCY_MODES,
    SUPPORTED_SCHEMAS, TEXT_ENCODER_FILE, TEXT_EXPLAINER_FILE, TEXT_INPUT_EOT, TEXT_INPUT_IDS, TEXT_OUTPUT,
)
from clipxai.errors import BundleError

Check = Callable[[Any], "str | None"]  # a JSON value -> its problem, or None

_SHA256 = re.compile(r"[0-9a-f]{64}")
_META = "clipxai.manifest"

# Manifest dtype strings -> onnxruntime's element types.
ORT_TYPES = {"float32": "tensor(float)", "float16": "tensor(float16)", "int64": "tensor(int64)",
             "int32": "tensor(int32)", "uint8": "tensor(uint8)"}


class ManifestError(BundleError):
    """A manifest that fails its schema; the message is the problem alone (the reader adds the file)."""


# ---- rules: a value's type (as docs/bundle-format.md writes it) and its check ----------------------------

@dataclass(frozen=True)
class Rule:
    type: str
    check: Check


def _show(v) -> str:
    s = repr(v)
    return s if len(s) <= 40 else s[:37] + "..."


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def integer(lo: int, hi: int) -> Rule:
    def check(v):
        if not _is_int(v):
            return f"must be an integer, got {_show(v)}"
        return None if lo <= v <= hi else f"must be in {lo}..{hi}, got {v}"
    return Rule("integer", check)


def one_of(choices, type: str = "string") -> Rule:
    def check(v):
        ok = isinstance(v, (str, int)) and not isinstance(v, bool) and v in choices
        return None if ok else f"must be one of {', '.join(map(str, choices))}, got {_show(v)}"
    return Rule(type, check)


def number(positive: bool = False) -> Rule:
    def check(v):
        if not _is_number(v) or not math.isfinite(v):
            return f"must be a finite number, got {_show(v)}"
        return f"must be a positive number, got {_show(v)}" if positive and not v > 0 else None
    return Rule("number", check)


def fraction() -> Rule:
    """A number in [0, 1]."""
    def check(v):
        return number().check(v) or (None if 0 <= v <= 1 else f"must be in [0, 1], got {_show(v)}")
    return Rule("number", check)


def numbers(n: int, positive: bool = False) -> Rule:
    def check(v):
        if not isinstance(v, list) or len(v) != n:
            return f"must be a list of {n} numbers, got {_show(v)}"
        for x in v:
            if not _is_number(x) or not math.isfinite(x):
                return f"must hold finite numbers, got {_show(x)}"
            if positive and not x > 0:
                return f"must hold positive numbers, got {x}"
        return None
    return Rule(f"{n} numbers", check)


def exactly(want, type_name: str) -> Rule:
    """A value that states what this clipxai does: anything else is refused."""
    def check(v):
        same = type(v) is type(want) and v == want
        return None if same else f"must be {want!r} (what this clipxai does), got {_show(v)}"
    return Rule(type_name, check)


def optional(rule: Rule) -> Rule:
    return Rule(f"{rule.type} or null", lambda v: None if v is None else rule.check(v))


def record(nullable: bool = True, **keys: Rule) -> Rule:
    """A free object, kept as written, whose listed keys (when present) pass their rules."""
    def check(v):
        if v is None and nullable:
            return None
        if not isinstance(v, dict):
            return f"must be an object, got {_show(v)}"
        for key, rule in keys.items():
            problem = rule.check(v[key]) if key in v else None
            if problem:
                return f"entry {key!r} {problem}"
        return None
    return Rule("object or null" if nullable else "object", check)


TEXT = Rule("string", lambda v: None if isinstance(v, str) and v.strip() else
            f"must be a non-empty string, got {_show(v)}")
BOOLEAN = Rule("boolean", lambda v: None if isinstance(v, bool) else f"must be true or false, got {_show(v)}")
OBJECT = record(nullable=False)


def _class_list(v) -> str | None:
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


def _file_table(v) -> str | None:
    if not isinstance(v, dict) or not v:
        return f"must map file names to their sha256, got {_show(v)}"
    for name, info in v.items():
        if not isinstance(info, dict) or not isinstance(info.get("sha256"), str) or not _SHA256.fullmatch(
                info["sha256"]):
            return f"entry {name!r} has no valid sha256 (64 lower-case hex digits)"
        if "bytes" in info and not (_is_int(info["bytes"]) and info["bytes"] >= 0):
            return f"entry {name!r} has a bad size {_show(info['bytes'])}"
    return None


def _dims(v) -> str | None:
    """A shape: a list of dimensions, each a name (dynamic) or an integer 1..2**24."""
    if not isinstance(v, list):
        return f"must be a list of dimensions, got {_show(v)}"
    bad = [d for d in v if not (isinstance(d, str) or (_is_int(d) and 0 < d <= 1 << 24))]
    return f"has a bad dimension {_show(bad[0])}" if bad else None


def _tensor_specs(v) -> str | None:
    if not isinstance(v, dict) or not v:
        return f"must map tensor names to dtype and shape, got {_show(v)}"
    for name, spec in v.items():
        if not isinstance(spec, dict) or not isinstance(spec.get("dtype"), str) or not isinstance(
                spec.get("shape"), list):
            return f"entry {name!r} needs a dtype string and a shape list"
        problem = _dims(spec["shape"])
        if problem:
            return f"entry {name!r} {problem}"
    return None


CLASS_LIST = Rule("list of strings", _class_list)


def _template_list(v) -> str | None:
    from clipxai.templates import MAX_TEMPLATES, template_problem
    if not isinstance(v, list) or not v or len(v) > MAX_TEMPLATES:
        return f"must be a list of 1..{MAX_TEMPLATES} prompt templates, got {_show(v)}"
    return next((f"entry {i}: {p}" for i, t in enumerate(v) if (p := template_problem(t))), None)


TEMPLATE_LIST = Rule("list of strings", _template_list)
FILE_TABLE = Rule("object", _file_table)
TENSOR_TABLE = Rule("object", _tensor_specs)


# ---- fields: how one key is read, checked and written ----------------------------------------------------

def _freeze(v):
    """JSON lists -> tuples (the manifest is immutable); objects stay dicts."""
    if isinstance(v, list):
        return tuple(_freeze(x) for x in v)
    if isinstance(v, dict):
        return {k: _freeze(x) for k, x in v.items()}
    return v


def _thaw(v):
    """A field's value -> its JSON (records -> objects, tuples -> lists)."""
    if isinstance(v, tuple):
        return [_thaw(x) for x in v]
    if isinstance(v, dict):
        return {k: _thaw(x) for k, x in v.items()}
    if isinstance(v, Record):
        return v.to_dict()
    return v


@dataclass(frozen=True)
class Spec:
    """One field's schema. Exactly one of rule (a JSON value), section (a nested Record) or table
    (name -> nested Record, the whole object checked by rule first) describes the value."""

    rule: Rule | None = None
    section: type | None = None
    table: type | None = None
    required: bool = False
    nullable: bool = False     # sections: null is allowed (and means absent)
    omit_none: bool = False    # written only when set

    @property
    def accepts_none(self) -> bool:
        return self.nullable if self.section is not None else self.rule.check(None) is None

    @property
    def type(self) -> str:
        if self.section is not None:
            return "object or null" if self.nullable else "object"
        return self.rule.type

    def read(self, v, path: str):
        if self.table is not None:
            _raise(path, self.rule.check(v))
            return {name: self.table.from_dict(item, f"{path}.{name}.") for name, item in v.items()}
        if self.section is not None:
            if v is None and self.nullable:
                return None
            _raise(path, None if isinstance(v, dict) else f"must be an object, got {_show(v)}")
            return self.section.from_dict(v, path + ".")
        _raise(path, self.rule.check(v))
        return _freeze(v)


def _raise(path: str, problem: str | None) -> None:
    if problem:
        raise ManifestError(f"field {path!r} {problem}")


def value(rule: Rule, required: bool = False, default=None, omit_none: bool = False):
    return dataclasses.field(default=default, metadata={_META: Spec(rule, required=required, omit_none=omit_none)})


def section(cls: type, required: bool = False, nullable: bool = False, omit_none: bool = False):
    return dataclasses.field(default=None, metadata={
        _META: Spec(section=cls, required=required, nullable=nullable, omit_none=omit_none)})


def table(cls: type, rule: Rule, required: bool = False, omit_none: bool = False):
    return dataclasses.field(default=None, metadata={
        _META: Spec(rule, table=cls, required=required, omit_none=omit_none)})


def extra():
    """The keys of this object that the schema does not name: kept, written back, never read."""
    return dataclasses.field(default_factory=dict, repr=False, compare=False)


class Record:
    """A manifest object: its dataclass fields are its keys, in the order they are written."""

    extra: dict

    @classmethod
    def specs(cls) -> list[tuple[str, Spec]]:
        return [(f.name, f.metadata[_META]) for f in dataclasses.fields(cls) if _META in f.metadata]

    @classmethod
    def from_dict(cls, d: dict, where: str = ""):
        """A checked record from its JSON object; ManifestError naming the first bad field."""
        values: dict[str, Any] = {}
        for name, spec in cls.specs():
            if name in d:
                values[name] = spec.read(d[name], where + name)
            elif spec.required:
                raise ManifestError(f"missing field {where + name!r}")
        known = {name for name, _ in cls.specs()}
        out = cls(**values, extra={k: _freeze(v) for k, v in d.items() if k not in known})
        if not where:
            _raise_plain(out._consistency())
        return out

    def _consistency(self) -> str | None:
        return None

    def to_dict(self) -> dict:
        """The JSON object, as the exporters write it (unknown keys last)."""
        out = {}
        for name, spec in self.specs():
            v = getattr(self, name)
            if v is None and (spec.omit_none or not spec.accepts_none):
                continue  # absent (a field that cannot be null is never written as null)
            out[name] = _thaw(v)
        out.update(_thaw(self.extra))
        return out


def _raise_plain(problem: str | None) -> None:
    if problem:
        raise ManifestError(problem)


def describe(cls: type, prefix: str = "") -> list[tuple[str, str, bool]]:
    """(dotted field, type, required) for every field of a record and its sections, in order
    (what docs/bundle-format.md's tables list; entries of tables such as ``files`` are not fields)."""
    rows = []
    for name, spec in cls.specs():
        rows.append((prefix + name, spec.type, spec.required))
        if spec.section is not None:
            rows += describe(spec.section, f"{prefix}{name}.")
    return rows


# ---- the records -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TensorSpec(Record):
    """A graph input or output: dtype ("float32", "int64", ...) and shape (int: fixed, str: a dynamic
    dimension's name)."""

    dtype: str = value(TEXT, required=True)
    shape: tuple[int | str, ...] = value(Rule("list", _dims), required=True)
    extra: dict = extra()

    @classmethod
    def of(cls, dtype: str, shape) -> "TensorSpec":
        return cls(dtype, tuple(shape))


@dataclass(frozen=True)
class FileEntry(Record):
    sha256: str = value(TEXT, required=True)
    bytes: int | None = value(integer(0, 1 << 62), omit_none=True)
    extra: dict = extra()


Tensors = dict  # name -> TensorSpec, in the manifest's order


@dataclass(frozen=True)
class Backbone(Record):
    name: str = value(TEXT, required=True)
    open_clip_name: str | None = value(optional(TEXT))
    arch: str | None = value(optional(one_of(("vit", "resnet"))))
    patch_size: int | None = value(optional(integer(1, MAX_IMAGE_SIZE)))
    activation: str | None = value(optional(one_of(("quick_gelu", "gelu"))))
    surgery_blocks: int | None = value(optional(integer(1, 1024)))
    pretrained_image_size: int | None = value(optional(integer(1, MAX_IMAGE_SIZE)))
    extra: dict = extra()


@dataclass(frozen=True)
class Weights(Record):
    """Where the weights came from; which keys are set depends on the source."""

    source: str = value(TEXT, required=True)
    tag: str | None = value(optional(TEXT), omit_none=True)
    file: str | None = value(optional(TEXT), omit_none=True)
    format: str | None = value(optional(TEXT), omit_none=True)
    sha256: str | None = value(optional(TEXT), omit_none=True)
    seed: int | None = value(optional(integer(0, (1 << 64) - 1)), omit_none=True)
    official: str | None = value(optional(TEXT), omit_none=True)
    extra: dict = extra()


@dataclass(frozen=True)
class ClipPreprocess(Record):
    resize: str | None = value(optional(exactly("squash", "string")))
    interpolation: str | None = value(optional(exactly("bicubic", "string")))
    mean: tuple[float, float, float] = value(numbers(3), required=True)
    std: tuple[float, float, float] = value(numbers(3, positive=True), required=True)
    color: str | None = value(optional(exactly("RGB", "string")))
    extra: dict = extra()


@dataclass(frozen=True)
class Templates(Record):
    set: str | None = value(optional(TEXT))
    count: int | None = value(optional(integer(1, 1 << 20)))
    prompts: tuple[str, ...] | None = value(optional(TEMPLATE_LIST), omit_none=True)
    extra: dict = extra()


@dataclass(frozen=True)
class Graph(Record):
    inputs: Tensors = table(TensorSpec, TENSOR_TABLE, required=True)
    outputs: Tensors = table(TensorSpec, TENSOR_TABLE, required=True)
    extra: dict = extra()


@dataclass(frozen=True)
class TextEncoderSpec(Record):
    file: str | None = value(optional(exactly(TEXT_ENCODER_FILE, "string")))
    vocab_file: str | None = value(optional(exactly(BPE_VOCAB_FILE, "string")))
    tokenizer: str = value(exactly("clip-bpe", "string"), required=True)
    context_length: int = value(exactly(CONTEXT_LENGTH, "integer"), required=True)
    output: str | None = value(optional(exactly("unnormalised", "string")))
    inputs: Tensors | None = table(TensorSpec, TENSOR_TABLE)
    outputs: Tensors | None = table(TensorSpec, TENSOR_TABLE)
    extra: dict = extra()


@dataclass(frozen=True)
class TextExplainerSpec(Record):
    file: str | None = value(optional(exactly(TEXT_EXPLAINER_FILE, "string")))
    method: str | None = value(optional(TEXT))
    blocks: int | None = value(integer(1, 1024))
    context_length: int = value(exactly(CONTEXT_LENGTH, "integer"), required=True)
    inputs: Tensors | None = table(TensorSpec, TENSOR_TABLE)
    outputs: Tensors | None = table(TensorSpec, TENSOR_TABLE)
    extra: dict = extra()


# The figures of a lower-precision graph's fidelity measurement that the runtime reads (the rest is kept).
FIDELITY = record(passed=BOOLEAN, correlation=Rule("number", lambda v: None if _is_number(v) else
                                                   f"must be a number, got {_show(v)}"),
                  pixel_agreement=Rule("number", lambda v: None if _is_number(v) else
                                       f"must be a number, got {_show(v)}"))


def text_encoder_io(embed_dim: int | None) -> tuple[Tensors, Tensors]:
    """The text encoder's (inputs, outputs), fixed by the contract: token ids int64 [P, L] and end-token
    positions int64 [P] -> embeddings float32 [P, D] (D dynamic when the manifest does not say)."""
    return ({TEXT_INPUT_IDS: TensorSpec.of("int64", ["prompts", "length"]),
             TEXT_INPUT_EOT: TensorSpec.of("int64", ["prompts"])},
            {TEXT_OUTPUT: TensorSpec.of("float32", ["prompts", embed_dim or "dim"])})


def text_explainer_io(embed_dim: int | None) -> tuple[Tensors, Tensors]:
    """The word explainer's (inputs, outputs): full rows of ids int64 [T, 77], end positions int64 [T] and
    the image embedding float32 [D] -> token weights float32 [T, 77] and cosines float32 [T]."""
    return ({TEXT_INPUT_IDS: TensorSpec.of("int64", ["texts", CONTEXT_LENGTH]),
             TEXT_INPUT_EOT: TensorSpec.of("int64", ["texts"]),
             EXPLAIN_INPUT_EMBEDDING: TensorSpec.of("float32", [embed_dim or "dim"])},
            {EXPLAIN_OUTPUT_WEIGHTS: TensorSpec.of("float32", ["texts", CONTEXT_LENGTH]),
             EXPLAIN_OUTPUT_COSINE: TensorSpec.of("float32", ["texts"])})


class Manifest(Record):
    """What both kinds have: kind, schema_version, precision, image_size, preprocess, files, weights."""

    KIND: ClassVar[str]

    @functools.cached_property
    def _json(self) -> dict:
        return self.to_dict()

    # Transitional: code not yet converted reads the manifest like its JSON. New code uses the fields.
    def __getitem__(self, key: str):
        return self._json[key]

    def get(self, key: str, default=None):
        return self._json.get(key, default)

    def __contains__(self, key: str) -> bool:
        return key in self._json

    def graph_files(self) -> tuple[str, ...]:
        """The graph files this bundle has (model.onnx and the text graphs; encoder and decoder)."""
        return tuple(self._graph_ios())

    def graph_io(self, graph_file: str) -> tuple[Tensors, Tensors]:
        """(inputs, outputs) the bundle's graph ``graph_file`` must have: name -> TensorSpec, in the
        manifest's order. BundleError for a graph this bundle does not have."""
        ios = self._graph_ios()
        if graph_file not in ios:
            raise BundleError(f"this {self.kind} bundle has no graph {graph_file!r} "
                              f"(it has {', '.join(ios) or 'none'})")
        return ios[graph_file]

    def _graph_ios(self) -> dict[str, tuple[Tensors, Tensors]]:
        raise NotImplementedError

    def _files_problem(self, names) -> str | None:
        for name in names:
            if name not in (self.files or {}):
                return f"'files' must list {name} with its sha256"
        return None


@dataclass(frozen=True)
class ClipManifest(Manifest):
    """manifest.json of a CLIP bundle (docs/bundle-format.md#clip-bundles). Shapes: S = image_size,
    g = grid_size, K = len(classes), D = embed_dim."""

    KIND: ClassVar[str] = KIND_CLIP

    schema_version: int = value(one_of(SUPPORTED_SCHEMAS, "integer"), required=True)
    kind: str = value(one_of((KIND_CLIP,)), default=KIND_CLIP)
    clipxai_version: str | None = value(optional(TEXT))
    created_with: dict | None = value(optional(OBJECT))
    method: str = value(one_of(METHODS), required=True)
    backbone: Backbone = section(Backbone, required=True)
    weights: Weights | None = section(Weights, nullable=True)
    image_size: int = value(integer(1, MAX_IMAGE_SIZE), required=True)
    grid_size: int = value(integer(1, MAX_IMAGE_SIZE), required=True)
    num_patches: int | None = value(optional(integer(1, MAX_IMAGE_SIZE ** 2)))
    embed_dim: int | None = value(integer(1, 1 << 16))
    pos_embed_resize: dict | None = value(optional(OBJECT))
    preprocess: ClipPreprocess = section(ClipPreprocess, required=True)
    classes: tuple[str, ...] = value(CLASS_LIST, required=True)
    templates: Templates | None = section(Templates, nullable=True)
    redundancy: str | None = value(optional(one_of(REDUNDANCY_MODES + (REDUNDANCY_AUTO,))))
    logit_scale: float | None = value(optional(number(positive=True)))
    labels_merge_rate: float | None = value(optional(fraction()))
    opset: int | None = value(optional(integer(1, 1000)))
    precision: str = value(one_of(PRECISIONS), required=True)
    graph: Graph = section(Graph, required=True)
    text_embeddings: dict | None = value(optional(OBJECT))
    redundancy_vector: dict | None = value(optional(OBJECT))
    verification: dict | None = value(optional(OBJECT))
    text_encoder: TextEncoderSpec | None = section(TextEncoderSpec, nullable=True, omit_none=True)
    text_explainer: TextExplainerSpec | None = section(TextExplainerSpec, nullable=True, omit_none=True)
    fidelity: dict | None = value(FIDELITY)
    bf16_fidelity: dict | None = value(FIDELITY, omit_none=True)
    files: dict[str, FileEntry] = table(FileEntry, FILE_TABLE, required=True)
    extra: dict = extra()

    def _graph_ios(self) -> dict[str, tuple[Tensors, Tensors]]:
        ios = {MODEL_FILE: (self.graph.inputs, self.graph.outputs)}
        if self.text_encoder is not None:
            te = self.text_encoder
            default = text_encoder_io(self.embed_dim)
            ios[TEXT_ENCODER_FILE] = (te.inputs or default[0], te.outputs or default[1])
        if self.text_explainer is not None:
            te, default = self.text_explainer, text_explainer_io(self.embed_dim)
            ios[TEXT_EXPLAINER_FILE] = (te.inputs or default[0], te.outputs or default[1])
        return ios

    def _consistency(self) -> str | None:
        """The fields that must agree with each other (the graphs' own IO is checked once they are open)."""
        problem = self._files_problem([MODEL_FILE])
        patch, s, g = self.backbone.patch_size, self.image_size, self.grid_size
        if not problem and patch is not None and g * patch != s:
            problem = f"grid {g} x patch {patch} is not the image size {s}"
        k = len(self.classes)
        for name, spec in self.graph.outputs.items():
            if not problem and name in OUTPUTS and self.text_encoder is None and k not in _fixed(spec):
                problem = f"graph output {name} {list(spec.shape)} has no dimension of the {k} classes listed"
        if not problem and self.text_encoder is not None:
            problem = self._files_problem([TEXT_ENCODER_FILE, BPE_VOCAB_FILE]) or _names(
                "text_encoder", self.text_encoder, [TEXT_INPUT_IDS, TEXT_INPUT_EOT], [TEXT_OUTPUT])
        if not problem and self.text_explainer is not None:
            problem = self._files_problem([TEXT_EXPLAINER_FILE, BPE_VOCAB_FILE]) or _names(
                "text_explainer", self.text_explainer, [TEXT_INPUT_IDS, TEXT_INPUT_EOT, EXPLAIN_INPUT_EMBEDDING],
                [EXPLAIN_OUTPUT_WEIGHTS, EXPLAIN_OUTPUT_COSINE])
        return problem


def _fixed(spec: TensorSpec) -> list[int]:
    return [d for d in spec.shape if isinstance(d, int)]


def _names(where: str, graph, inputs: list[str], outputs: list[str]) -> str | None:
    """The IO names a text-side graph must have (the contract's), when the manifest lists them."""
    for side, want in (("inputs", inputs), ("outputs", outputs)):
        have = getattr(graph, side)
        if have is not None and sorted(have) != sorted(want):
            return f"field '{where}.{side}' must be {', '.join(want)} (the contract's), got {', '.join(have)}"
    return None


# ---- mask-model bundles (SAM, SAM 2.1) ---------------------------------------------------------------------

@dataclass(frozen=True)
class MaskPreprocess(Record):
    resize: str = value(one_of(("longest-side", "stretch")), required=True)
    interpolation: str | None = value(optional(TEXT))
    image_size: int | None = value(optional(exactly(MASK_IMAGE_SIZE, "integer")))
    scale: float = value(number(positive=True), required=True)
    mean: tuple[float, float, float] = value(numbers(3), required=True)
    std: tuple[float, float, float] = value(numbers(3, positive=True), required=True)
    pad: str | None = value(optional(TEXT))
    extra: dict = extra()


@dataclass(frozen=True)
class Stability(Record):
    delta: float = value(number(positive=True), required=True)
    threshold: float = value(number(positive=True), required=True)
    extra: dict = extra()


@dataclass(frozen=True)
class Decoding(Record):
    multimask_tokens: tuple[int, ...] | None = value(optional(exactly([1, 2, 3], "list of integers")))
    single_token: int | None = value(optional(exactly(0, "integer")))
    pad_point: str | None = value(optional(TEXT))
    iou: str | None = value(optional(one_of(("raw", "sigmoid"))))
    mask_threshold: float = value(number(), required=True)
    upscale: str | None = value(optional(TEXT))
    low_res_clamp: float | None = value(optional(number(positive=True)), omit_none=True)
    stability: Stability | None = section(Stability, nullable=True, omit_none=True)
    extra: dict = extra()


@dataclass(frozen=True)
class MaskGraph(Record):
    file: str = value(TEXT, required=True)
    inputs: Tensors = table(TensorSpec, TENSOR_TABLE, required=True)
    outputs: Tensors = table(TensorSpec, TENSOR_TABLE, required=True)
    extra: dict = extra()


@dataclass(frozen=True)
class MaskGraphs(Record):
    encoder: MaskGraph = section(MaskGraph, required=True)
    decoder: MaskGraph = section(MaskGraph, required=True)
    extra: dict = extra()

    def named(self) -> dict[str, MaskGraph]:
        """{"encoder": ..., "decoder": ...}, the names build_engine.sh's --graph takes."""
        return {"encoder": self.encoder, "decoder": self.decoder}


@dataclass(frozen=True)
class Tracking(Record):
    """SAM 2.1's video graphs and the constants of its memory (docs/tracking.md)."""

    num_maskmem: int = value(integer(2, 64), required=True)
    max_obj_ptrs: int = value(integer(2, 1024), required=True)
    mem_dim: int = value(integer(1, 4096), required=True)
    hidden_dim: int = value(integer(1, 4096), required=True)
    multimask_max_points: int = value(integer(0, 1024), required=True)
    fill_hole_area: int = value(integer(0, 1 << 16), required=True)
    no_object_score: float = value(number(), required=True)
    memory_attention: MaskGraph = section(MaskGraph, required=True)
    memory_encoder: MaskGraph = section(MaskGraph, required=True)
    decoder: MaskGraph = section(MaskGraph, required=True)
    verification: dict | None = value(optional(OBJECT))
    extra: dict = extra()

    def graphs(self) -> dict[str, MaskGraph]:
        return {"memory_attention": self.memory_attention, "memory_encoder": self.memory_encoder,
                "track_decoder": self.decoder}


# Per family: how images are resized (what the runtime's preprocessing must be told) and the encoder's features.
MASK_RESIZE = {"sam": "longest-side", "sam2": "stretch"}
MASK_FEATURES = {"sam": (MASK_EMBEDDINGS,), "sam2": (*MASK_HIGH_RES, MASK_EMBEDDINGS)}
MASK_TOKENS = 4  # the decoder returns all four mask tokens' logits and IoU


@dataclass(frozen=True)
class MaskManifest(Manifest):
    """manifest.json of a mask-model bundle (docs/bundle-format.md#mask-model-bundles)."""

    KIND: ClassVar[str] = KIND_MASK

    schema_version: int = value(one_of(SUPPORTED_SCHEMAS, "integer"), required=True)
    kind: str = value(one_of((KIND_MASK,)), required=True, default=KIND_MASK)
    clipxai_version: str | None = value(optional(TEXT))
    created_with: dict | None = value(optional(OBJECT))
    model: str = value(TEXT, required=True)
    family: str = value(one_of(MASK_FAMILIES), required=True)
    weights: Weights | None = section(Weights, nullable=True)
    image_size: int = value(exactly(MASK_IMAGE_SIZE, "integer"), required=True)
    preprocess: MaskPreprocess = section(MaskPreprocess, required=True)
    decoding: Decoding = section(Decoding, required=True)
    precision: str = value(one_of(PRECISIONS), required=True)
    opset: int | None = value(optional(integer(1, 1000)))
    graphs: MaskGraphs = section(MaskGraphs, required=True)
    verification: dict | None = value(optional(OBJECT))
    fidelity: dict | None = value(FIDELITY)
    bf16_fidelity: dict | None = value(FIDELITY, omit_none=True)
    files: dict[str, FileEntry] = table(FileEntry, FILE_TABLE, required=True)
    tracking: Tracking | None = section(Tracking, nullable=True, omit_none=True)
    extra: dict = extra()

    def _graph_ios(self) -> dict[str, tuple[Tensors, Tensors]]:
        graphs = [self.graphs.encoder, self.graphs.decoder]
        graphs += list(self.tracking.graphs().values()) if self.tracking else []
        return {g.file: (g.inputs, g.outputs) for g in graphs}

    def _consistency(self) -> str | None:
        """The family, the preprocessing and both graphs' IO must be what the runtime runs (MASK_* names)."""
        enc, dec, fam = self.graphs.encoder, self.graphs.decoder, self.family
        features = MASK_FEATURES[fam]
        checks = (
            lambda: self._files_problem([MASK_ENCODER_FILE, MASK_DECODER_FILE]),
            lambda: _equal("graphs.encoder.file", enc.file, MASK_ENCODER_FILE),
            lambda: _equal("graphs.decoder.file", dec.file, MASK_DECODER_FILE),
            lambda: None if self.preprocess.resize == MASK_RESIZE[fam] else
            f"family {fam!r} resizes {MASK_RESIZE[fam]!r}, but 'preprocess.resize' is {self.preprocess.resize!r}",
            lambda: _io(fam, "graphs.encoder.inputs", enc.inputs, [MASK_INPUT_IMAGE]),
            lambda: _io(fam, "graphs.encoder.outputs", enc.outputs, features),
            lambda: _io(fam, "graphs.decoder.inputs", dec.inputs, [*features, MASK_POINT_COORDS, MASK_POINT_LABELS]),
            lambda: _io(fam, "graphs.decoder.outputs", dec.outputs, [MASK_LOW_RES, MASK_IOU]),
            lambda: _shape("graphs.encoder.inputs", enc.inputs[MASK_INPUT_IMAGE],
                           (1, 3, MASK_IMAGE_SIZE, MASK_IMAGE_SIZE)),
            lambda: _agree(enc.outputs, dec.inputs, features),
            lambda: _tokens(dec.outputs),
            lambda: _float32(self.graphs),
            lambda: self._tracking_problem(),
        )
        for check in checks:
            problem = check()
            if problem:
                return problem
        return None

    def _tracking_problem(self) -> str | None:
        if self.tracking is None:
            return None
        if self.family != "sam2":
            return f"family {self.family!r} has no memory; 'tracking' is for sam2 bundles only"
        want = tracking_graphs(self.tracking.hidden_dim, self.tracking.mem_dim)
        for name, graph in self.tracking.graphs().items():
            expected = want[name]
            problem = (self._files_problem([expected.file]) or _equal(f"tracking.{name}.file", graph.file, expected.file)
                       or _io(self.family, f"tracking.{name}.inputs", graph.inputs, list(expected.inputs))
                       or _io(self.family, f"tracking.{name}.outputs", graph.outputs, list(expected.outputs)))
            if problem:
                return problem
        return None


def _equal(path: str, got, want) -> str | None:
    return None if got == want else f"field {path!r} must be {want!r}, got {_show(got)}"


def _io(family: str, path: str, have: Tensors, want) -> str | None:
    if sorted(have) == sorted(want):
        return None
    return (f"family {family!r} does not match {path}: a {family} graph has {', '.join(want)}, "
            f"the manifest lists {', '.join(have)}")


def _shape(path: str, spec: TensorSpec, want: tuple) -> str | None:
    return None if tuple(spec.shape) == want else \
        f"field {path!r} says shape {list(spec.shape)}, the runtime feeds {list(want)}"


def _agree(outputs: Tensors, inputs: Tensors, names) -> str | None:
    for name in names:
        if outputs[name] != inputs[name]:
            return (f"encoder output {name} {outputs[name].dtype} {list(outputs[name].shape)} is not the decoder's "
                    f"input {inputs[name].dtype} {list(inputs[name].shape)}")
    return None


def _tokens(outputs: Tensors) -> str | None:
    low, iou = outputs[MASK_LOW_RES].shape, outputs[MASK_IOU].shape
    if len(low) != 4 or low[1] != MASK_TOKENS or len(iou) != 2 or iou[1] != MASK_TOKENS:
        return (f"decoder outputs {MASK_LOW_RES} {list(low)} and {MASK_IOU} {list(iou)} must hold the "
                f"{MASK_TOKENS} mask tokens ([prompts, 4, h, w] and [prompts, 4])")
    return None


def _float32(graphs: MaskGraphs) -> str | None:
    for where, graph in (("encoder", graphs.encoder), ("decoder", graphs.decoder)):
        for name, spec in {**graph.inputs, **graph.outputs}.items():
            if spec.dtype != "float32":
                return f"graphs.{where}: {name} is {spec.dtype}; every mask-model tensor is float32"
    return None


def mask_graphs(family: str) -> MaskGraphs:
    """The encoder and decoder of a ``family`` mask model as the runtime runs them (MASK_* names):
    image [1, 3, 1024, 1024] -> features; features + points [B, N, 2], labels [B, N] -> low-res logits
    [B, 4, 256, 256] and IoU [B, 4] of the four mask tokens."""
    f32 = lambda *shape: TensorSpec.of("float32", shape)  # noqa: E731
    size = MASK_IMAGE_SIZE
    features = {MASK_EMBEDDINGS: f32(1, 256, size // 16, size // 16)}
    if family == "sam2":
        features = {MASK_HIGH_RES[0]: f32(1, 32, size // 4, size // 4),
                    MASK_HIGH_RES[1]: f32(1, 64, size // 8, size // 8), **features}
    encoder = MaskGraph(MASK_ENCODER_FILE, {MASK_INPUT_IMAGE: f32(1, 3, size, size)}, features)
    decoder = MaskGraph(MASK_DECODER_FILE, {**features, MASK_POINT_COORDS: f32("prompts", "points", 2),
                                            MASK_POINT_LABELS: f32("prompts", "points")},
                        {MASK_LOW_RES: f32("prompts", MASK_TOKENS, 256, 256), MASK_IOU: f32("prompts", MASK_TOKENS)})
    return MaskGraphs(encoder, decoder)


MANIFESTS: dict[str, type[Manifest]] = {KIND_CLIP: ClipManifest, KIND_MASK: MaskManifest}


def parse(d: dict, kind: str) -> Manifest:
    """A checked manifest of ``kind`` from its JSON object; ManifestError with the first problem."""
    return MANIFESTS[kind].from_dict(d)


def tracking_graphs(hidden_dim: int = 256, mem_dim: int = 64) -> dict[str, MaskGraph]:
    """SAM 2.1's three tracking graphs as the runtime runs them (docs/tracking.md), named as
    ``Tracking.graphs()`` names them: B objects, M memories, P object pointers, N points."""
    f32 = lambda *shape: TensorSpec.of("float32", shape)  # noqa: E731
    g, low = MASK_IMAGE_SIZE // 16, MASK_IMAGE_SIZE // 4
    embeddings = {MASK_EMBEDDINGS: f32(1, hidden_dim, g, g)}
    attention = MaskGraph(MASK_MEMORY_ATTENTION_FILE, {
        **embeddings, MASK_MEMORIES: f32("objects", "memories", mem_dim, g, g),
        MASK_MEMORY_SLOTS: TensorSpec.of("int64", ["objects", "memories"]),
        MASK_POINTERS: f32("objects", "pointers", hidden_dim), MASK_POINTER_DISTANCES: f32("objects", "pointers")},
        {MASK_CONDITIONED: f32("objects", hidden_dim, g, g)})
    encoder = MaskGraph(MASK_MEMORY_ENCODER_FILE, {
        **embeddings, MASK_MASK_LOGITS: f32("objects", 1, low, low), MASK_OBJECT_SCORE: f32("objects", 1),
        MASK_BINARIZE: f32("objects")}, {MASK_MEMORIES: f32("objects", mem_dim, g, g)})
    decoder = MaskGraph(MASK_TRACK_DECODER_FILE, {
        MASK_CONDITIONED: f32("objects", hidden_dim, g, g), MASK_HIGH_RES[0]: f32(1, 32, low, low),
        MASK_HIGH_RES[1]: f32(1, 64, MASK_IMAGE_SIZE // 8, MASK_IMAGE_SIZE // 8),
        MASK_POINT_COORDS: f32("objects", "points", 2), MASK_POINT_LABELS: f32("objects", "points")},
        {MASK_LOW_RES: f32("objects", MASK_TOKENS, low, low), MASK_IOU: f32("objects", MASK_TOKENS),
         MASK_POINTERS: f32("objects", MASK_TOKENS, hidden_dim), MASK_OBJECT_SCORE: f32("objects", 1)})
    return {"memory_attention": attention, "memory_encoder": encoder, "track_decoder": decoder}
