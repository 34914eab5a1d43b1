"""Word explanations on the device: the bundle's Grad-ECLIP text explainer graph (``--text-explainer``).

The graph (clipxai/models/text_explainer.py, docs/design.md §11) takes full 77-token
rows, the end-token index and one image embedding; it returns per-token weights
(tokens 1 .. eot-1 sum to 1) and the image-text cosine they explain. This module
tokenizes, checks the text, runs the graph and names each token by its word piece.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass, field

import numpy as np

from clipxai.contract import (
    CONTEXT_LENGTH, EXPLAIN_INPUT_EMBEDDING, EXPLAIN_OUTPUT_COSINE, EXPLAIN_OUTPUT_WEIGHTS,
    TEXT_EXPLAINER_FILE, TEXT_INPUT_EOT, TEXT_INPUT_IDS,
)
from clipxai.errors import ClipxaiError
from clipxai.runtime.bundle import Bundle
from clipxai.runtime.backends import ProviderSpec, RuntimeOptions, open_graph
from clipxai.runtime.text.encoder import bpe_tokenizer
from clipxai.runtime.text.tokenizer import Tokenizer


@dataclass
class TextExplanation:
    """Which tokens of ``text`` made its embedding match the image (Grad-ECLIP).

    tokens: the T word pieces between the start and end tokens, as text: each piece holds the
    characters whose last byte it holds ("" for a piece with only the first bytes of a character),
    so a word's pieces joined are the word (``piece_texts``).
    weights: float32 [T], >= 0, summing to 1 (all 0 when no token had positive relevance).
    word_ends: [T] whether each piece ends a word (pieces of one word are adjacent; words as
    ``Tokenizer.encode_words`` groups them).
    cosine: the image-text cosine that was explained (the explainer's forward, docs/design.md §11).
    truncated: the text was cut to CLIP's 77 tokens (only with truncate=True).
    piece_bytes: [T] each piece's UTF-8 bytes (the JSON's "bytes", hex).
    Words and pieces read as CLIP's clean-up left the text: lower-cased, ftfy-fixed, HTML entities
    decoded, whitespace collapsed (docs/explain.md).
    """

    text: str
    tokens: list[str]
    weights: np.ndarray
    word_ends: list[bool]
    cosine: float
    truncated: bool = False
    ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64), repr=False)
    piece_bytes: list[bytes] = field(default_factory=list, repr=False)

    def words(self) -> list[tuple[str, float]]:
        """Whole words with the summed weight of their pieces: [(word, weight), ...]."""
        out: list[tuple[str, float]] = []
        current, weight = "", 0.0
        for piece, w, end in zip(self.tokens, self.weights, self.word_ends):
            current, weight = current + piece, weight + float(w)
            if end:
                out.append((current, weight))
                current, weight = "", 0.0
        if current:
            out.append((current, weight))
        return out

    def to_json(self) -> dict:
        return {"text": self.text, "cosine": self.cosine, "truncated": self.truncated,
                "tokens": [{"piece": p, "weight": float(w), "ends_word": e, "id": int(i), "bytes": b.hex()}
                           for p, w, e, i, b in zip(self.tokens, self.weights, self.word_ends, self.ids,
                                                    self.piece_bytes or [b""] * len(self.tokens))],
                "words": [{"word": w, "weight": v} for w, v in self.words()]}


def has_text_explainer(bundle: Bundle) -> bool:
    return bundle.manifest.text_explainer is not None


def require_text_explainer(bundle: Bundle) -> None:
    if not has_text_explainer(bundle):
        raise ClipxaiError(f"{bundle.path}: this bundle has no word explainer; re-export it with "
                           "clipxai export --text-encoder --text-explainer")


def token_row(tokenizer: Tokenizer, text: str, truncate: bool) -> tuple[np.ndarray, int, bool]:
    """text -> (ids int64 [77] padded with 0, end-token index, truncated?); ClipxaiError when it is
    empty, or longer than 77 tokens and truncate is False (saying where it would be cut)."""
    if not isinstance(text, str) or not text.strip():
        raise ClipxaiError("the text is empty; give a sentence to explain")
    words = tokenizer.encode_words(text)
    body = [i for word in words for i in word]
    if not body:
        raise ClipxaiError(f"the text {text!r} has no tokens after clean-up; give a sentence with words")
    room = CONTEXT_LENGTH - 2
    truncated = len(body) > room
    if truncated and not truncate:
        raise ClipxaiError(f"the text is {len(body)} tokens, more than the {room} that fit in CLIP's {CONTEXT_LENGTH} "
                           f"(with its start and end tokens): it would be truncated {_cut(tokenizer, words, room)} "
                           f"(token {room} of {len(body)}); shorten it, or pass truncate=True (--truncate) to "
                           f"explain the first {room} tokens")
    body = body[:room]
    ids = np.zeros(CONTEXT_LENGTH, np.int64)
    ids[0], ids[1:len(body) + 1], ids[len(body) + 1] = tokenizer.start_id, body, tokenizer.end_id
    return ids, len(body) + 1, truncated


def word_text(tokenizer: Tokenizer, ids) -> str:
    """Pieces -> their text, bytes joined before decoding (a character may span two pieces)."""
    return b"".join(tokenizer.piece_bytes(int(i))[0] for i in ids).decode("utf-8", errors="replace")


def piece_texts(raw: list[bytes]) -> list[str]:
    """Each piece's bytes -> the characters whose last byte it holds, so that the pieces joined are
    the text; a character cut off by truncation ends as U+FFFD."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    out = [decoder.decode(b) for b in raw]
    if out:
        out[-1] += decoder.decode(b"", final=True)
    return out


def word_ends(words: list[list[int]], n: int) -> list[bool]:
    """For the first n ids of ``words`` (ids grouped by word): whether each ends a word (the n-th
    always does: a word cut by truncation ends there)."""
    ends = [k == len(word) - 1 for word in words for k in range(len(word))][:n]
    return ends[:-1] + [True] if ends else ends


def _cut(tokenizer: Tokenizer, words: list[list[int]], room: int, shown: int = 40) -> str:
    """Where ``room`` tokens end: "after '<the last words kept>'", and ", inside a word" when it cuts one."""
    kept, n = [], 0
    for word in words:
        part = word[:max(0, room - n)]
        if part:  # a character cut in two is left out of the hint
            kept.append(b"".join(tokenizer.piece_bytes(int(i))[0] for i in part).decode("utf-8", errors="ignore"))
        n += len(word)
        if n >= room:
            break
    phrase = " ".join(kept)
    phrase = phrase if len(phrase) <= shown else "…" + phrase[-shown:]
    return f"after {phrase!r}" + (", inside a word" if n > room else "")


class WordExplainer:
    """A bundle's text-explainer graph and its tokenizer. Create with ``WordExplainer.from_bundle``."""

    def __init__(self, session, tokenizer: Tokenizer):
        self.session = session
        self.tokenizer = tokenizer

    @classmethod
    def from_bundle(cls, bundle: Bundle, providers: ProviderSpec = "cpu", threads: int | None = None, *,
                    options: RuntimeOptions | None = None) -> "WordExplainer":
        """The bundle's word explainer graph, opened with ``options`` (default: ``providers`` and ``threads``)."""
        require_text_explainer(bundle)  # its context length (77) was checked at load
        session = open_graph(bundle, TEXT_EXPLAINER_FILE, options or RuntimeOptions(providers, threads))
        return cls(session, bpe_tokenizer(bundle))

    def explain(self, image_embedding: np.ndarray, texts: list[str], truncate: bool = False
                ) -> list[TextExplanation]:
        """image_embedding float32 [D] (the image graph's, L2-normalised) and P texts -> P explanations."""
        rows = [token_row(self.tokenizer, t, truncate) for t in texts]
        ids = np.stack([r[0] for r in rows])
        eot = np.array([r[1] for r in rows], np.int64)
        weights, cosine = self.session.run(
            [EXPLAIN_OUTPUT_WEIGHTS, EXPLAIN_OUTPUT_COSINE],
            {TEXT_INPUT_IDS: ids, TEXT_INPUT_EOT: eot,
             EXPLAIN_INPUT_EMBEDDING: np.ascontiguousarray(image_embedding, np.float32)})
        out = []
        for p, (text, (row, e, cut)) in enumerate(zip(texts, rows)):
            body = row[1:e]
            raw = [self.tokenizer.piece_bytes(int(i))[0] for i in body]
            out.append(TextExplanation(text, piece_texts(raw), weights[p, 1:e].astype(np.float32),
                                       word_ends(self.tokenizer.encode_words(text), len(body)), float(cosine[p]),
                                       cut, body, raw))
        return out
