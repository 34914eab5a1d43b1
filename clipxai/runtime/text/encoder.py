"""Class names -> prompt-ensemble embeddings on the device (bundles exported with ``--text-encoder``).

The same computation as the exporter (docs/design.md §5), torch-free: every
class is formatted with every template, tokenized, run through the bundle's
text graph, each row L2-normalised, averaged per class and normalised again.
Prompts are sorted by length and each batch is cut to its longest real
sequence (the causal mask makes the ids after the end token irrelevant).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from clipxai.contract import (
    INPUT_REDUNDANCY, INPUT_TEXT, BPE_VOCAB_FILE, CONTEXT_LENGTH, TEXT_ENCODER_FILE, TEXT_INPUT_EOT, TEXT_INPUT_IDS,
    TEXT_OUTPUT,
)
from clipxai.errors import BundleError, ClipxaiError
from clipxai.runtime.bundle import Bundle
from clipxai.runtime.text.cache import EncodingCache, default_cache_dir
from clipxai.runtime.backends import ProviderSpec, RuntimeOptions, open_graph
from clipxai.runtime.text.tokenizer import Tokenizer
from clipxai.templates import TEMPLATES, template_problem
from clipxai.vocabulary import validate_classes

BATCH_SIZE = 256
# Batches are cut to at least this many tokens: the longest template prompts
# are about this long anyway, and tiny matmuls gain nothing.
MIN_LENGTH = 16


def l2_normalize(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """x / max(||x||, 1e-12), like torch.nn.functional.normalize."""
    return x / np.maximum(np.linalg.norm(x, axis=axis, keepdims=True), 1e-12)


def has_text_encoder(bundle: Bundle) -> bool:
    return bundle.manifest.text_encoder is not None


def require_text_encoder(bundle: Bundle) -> None:
    if not has_text_encoder(bundle):
        raise ClipxaiError(f"{bundle.path}: this bundle has no text encoder, so its classes are fixed; "
                           "re-export it with clipxai export --text-encoder to set classes on the device")


@dataclass(frozen=True)
class Vocabulary:
    """What the image graph of a text-encoder bundle is fed.

    text: float32 [K, D] L2-normalised class embeddings; redundancy: float32 [D].
    """

    classes: list[str]
    text: np.ndarray
    redundancy: np.ndarray
    templates: tuple[str, ...]


class TextEncoder:
    """A bundle's text graph and BPE vocabulary. Create with ``TextEncoder.from_bundle``."""

    def __init__(self, bundle: Bundle, session, tokenizer: Tokenizer):
        self.bundle = bundle
        self.session = session
        self.tokenizer = tokenizer
        self.dim = int(session.get_outputs()[0].shape[1])
        files = bundle.manifest.files
        self.digest = hashlib.sha256(
            (files[TEXT_ENCODER_FILE].sha256 + files[BPE_VOCAB_FILE].sha256).encode()).hexdigest()

    @classmethod
    def from_bundle(cls, bundle: Bundle, providers: ProviderSpec = "cpu", threads: int | None = None, *,
                    options: RuntimeOptions | None = None) -> "TextEncoder":
        """The bundle's text graph, opened with ``options`` (default: ``providers`` and ``threads``)."""
        require_text_encoder(bundle)  # its tokenizer (clip-bpe, 77 tokens) was checked at load
        session = open_graph(bundle, TEXT_ENCODER_FILE, options or RuntimeOptions(providers, threads))
        return cls(bundle, session, bpe_tokenizer(bundle))

    def encode_prompts(self, prompts: Sequence[str], batch_size: int = BATCH_SIZE) -> np.ndarray:
        """prompts -> float32 [P, D], each row L2-normalised."""
        ids = self.tokenizer(list(prompts), CONTEXT_LENGTH)
        return l2_normalize(self.encode_ids(ids, batch_size))

    def encode_ids(self, ids: np.ndarray, batch_size: int = BATCH_SIZE) -> np.ndarray:
        """int64 token ids [P, 77] -> unnormalised embeddings float32 [P, D] (open_clip's encode_text).

        Pools at each row's first end token, found by comparison (not by argmax over ids).
        """
        is_end = ids == self.tokenizer.end_id
        if not is_end.any(axis=1).all():
            raise ClipxaiError("every row of token ids needs an end-of-text token")
        eot = is_end.argmax(axis=1).astype(np.int64)
        order = np.argsort(eot, kind="stable")
        out = np.empty((len(ids), self.dim), np.float32)
        for start in range(0, len(ids), batch_size):
            idx = order[start:start + batch_size]
            length = min(ids.shape[1], max(int(eot[idx].max()) + 1, MIN_LENGTH))
            out[idx] = self.session.run([TEXT_OUTPUT], {TEXT_INPUT_IDS: np.ascontiguousarray(ids[idx, :length]),
                                                        TEXT_INPUT_EOT: eot[idx]})[0]
        return out

    def encode_classes(self, classes: Sequence[str], templates: Sequence[str] = TEMPLATES,
                       batch_size: int = BATCH_SIZE) -> np.ndarray:
        """Prompt-ensemble embeddings float32 [K, D], L2-normalised rows."""
        if not classes:
            return np.zeros((0, self.dim), np.float32)
        prompts = [tpl.format(c) for c in classes for tpl in templates]
        rows = self.encode_prompts(prompts, batch_size).reshape(len(classes), len(templates), self.dim)
        return l2_normalize(rows.mean(axis=1)).astype(np.float32)


def bpe_tokenizer(bundle: Bundle) -> Tokenizer:
    """The BPE tokenizer of a bundle's text-side graphs (its vocabulary file digest-checked by load_bundle)."""
    if BPE_VOCAB_FILE not in bundle.manifest.files:
        raise BundleError(f"{bundle.path / BPE_VOCAB_FILE}: not listed in the manifest; re-export the bundle")
    return Tokenizer(bundle.path / BPE_VOCAB_FILE)


def check_templates(templates: Sequence[str] | None) -> tuple[str, ...]:
    if templates is None:
        return TEMPLATES
    if isinstance(templates, str):
        raise ClipxaiError("templates must be a list of strings such as ['a photo of a {}.'], not one string")
    out = tuple(templates)
    if not out:
        raise ClipxaiError("templates is empty; pass None for the 85-template ensemble")
    for t in out:
        if (problem := template_problem(t)) is not None:
            raise ClipxaiError(problem)
    return out


def build_vocabulary(bundle: Bundle, encoder: TextEncoder, names: Sequence[str],
                     templates: Sequence[str] | None = None, cache: bool | str | Path = True) -> Vocabulary:
    """Embeddings for ``names`` with ``templates`` (None: the bundle's, ``bundle_templates``).

    With the bundle's own templates, its exported classes and redundancy vector
    are taken from the bundle; other names come from the cache or are encoded.
    cache: True (default directory), False (none) or a directory.
    """
    classes = validate_classes(names, source="classes")
    tpl = bundle_templates(bundle) if templates is None else check_templates(templates)
    exported = bundle.manifest.templates
    own = tpl == bundle_templates(bundle) and exported is not None and exported.count == len(tpl)
    store = None
    if cache is not False:
        root = default_cache_dir() if cache is True else Path(cache)
        store = EncodingCache(root, encoder.digest, tpl, encoder.dim)

    known: dict[str, np.ndarray] = {}
    if own:
        exported = bundle.text_embeddings()
        known = {c: exported[i] for i, c in enumerate(bundle.classes)}
        known[""] = bundle.redundancy()
    wanted = list(classes) + [""]  # "" is the redundancy vector's class
    found: dict[str, np.ndarray] = {}
    for name in wanted:
        if name in known:
            found[name] = known[name].astype(np.float32)
        elif store is not None and (hit := store.get(name)) is not None:
            found[name] = hit
    missing = [n for n in wanted if n not in found]
    if missing:
        encoded = encoder.encode_classes(missing, tpl)
        for name, vec in zip(missing, encoded):
            found[name] = vec
            if store is not None:
                store.put(name, vec)
    text = np.stack([found[c] for c in classes]).astype(np.float32)
    return Vocabulary(classes, text, found[""].astype(np.float32), tpl)


def bundle_templates(bundle: Bundle) -> tuple[str, ...]:
    """The templates the bundle was exported with: the manifest's ``templates.prompts`` (``clipxai export
    --templates``), else the 85 of docs/design.md §5 (bundles exported with the default, or before)."""
    exported = bundle.manifest.templates
    return tuple(exported.prompts) if exported is not None and exported.prompts else TEMPLATES


def initial_vocabulary(bundle: Bundle) -> Vocabulary | None:
    """A text-encoder bundle starts with its exported classes; others have them baked in (None)."""
    if not has_text_encoder(bundle):
        return None
    return Vocabulary(bundle.classes, bundle.text_embeddings(), bundle.redundancy(), bundle_templates(bundle))


def vocabulary_feeds(vocabulary: Vocabulary | None, graph_inputs=None) -> dict[str, np.ndarray]:
    """The image graph's vocabulary inputs ({} when it is baked in). graph_inputs: the names the
    graph takes (the manifest's); a method without feature surgery has no redundancy input."""
    if vocabulary is None:
        return {}
    feeds = {INPUT_TEXT: vocabulary.text, INPUT_REDUNDANCY: vocabulary.redundancy}
    return feeds if graph_inputs is None else {k: v for k, v in feeds.items() if k in graph_inputs}
