"""Word explanations on the device: the bundle's Grad-ECLIP text explainer graph (``--text-explainer``).

The graph (clipxai/models/text_explainer.py, docs/design.md §11) takes full 77-token
rows, the end-token index and one image embedding; it returns per-token weights
(tokens 1 .. eot-1 sum to 1) and the image-text cosine they explain. This module
tokenizes, checks the text, runs the graph and names each token by its word piece.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from clipxai.contract import (
    BPE_VOCAB_FILE, CONTEXT_LENGTH, EXPLAIN_INPUT_EMBEDDING, EXPLAIN_OUTPUT_COSINE, EXPLAIN_OUTPUT_WEIGHTS,
    TEXT_EXPLAINER_FILE, TEXT_INPUT_EOT, TEXT_INPUT_IDS,
)
from clipxai.errors import BundleError, ClipxaiError
from clipxai.runtime.bundle import Bundle
from clipxai.runtime.providers import ProviderSpec
from clipxai.runtime.text.encoder import open_text_graph
from clipxai.runtime.text.tokenizer import Tokenizer


@dataclass
class TextExplanation:
    """Which tokens of ``text`` made its embedding match the image (Grad-ECLIP).

    tokens: the T word pieces between the start and end tokens, as decoded text.
    weights: float32 [T], >= 0, summing to 1 (all 0 when no token had positive relevance).
    word_ends: [T] whether each piece ends a word (pieces of one word are adjacent).
    cosine: the image-text cosine that was explained (the explainer's forward, docs/design.md §11).
    truncated: the text was cut to CLIP's 77 tokens (only with truncate=True).
    """

    text: str
    tokens: list[str]
    weights: np.ndarray
    word_ends: list[bool]
    cosine: float
    truncated: bool = False
    ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64), repr=False)

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
                "tokens": [{"piece": p, "weight": float(w), "ends_word": e, "id": int(i)}
                           for p, w, e, i in zip(self.tokens, self.weights, self.word_ends, self.ids)],
                "words": [{"word": w, "weight": v} for w, v in self.words()]}


def has_text_explainer(bundle: Bundle) -> bool:
    return "text_explainer" in bundle.manifest


def require_text_explainer(bundle: Bundle) -> None:
    if not has_text_explainer(bundle):
        raise ClipxaiError(f"{bundle.path}: this bundle has no word explainer; re-export it with "
                           "clipxai-export --text-encoder --text-explainer")


def token_row(tokenizer: Tokenizer, text: str, truncate: bool) -> tuple[np.ndarray, int, bool]:
    """text -> (ids int64 [77] padded with 0, end-token index, truncated?); ClipxaiError when it is
    empty, or longer than 77 tokens and truncate is False (saying where it would be cut)."""
    if not isinstance(text, str) or not text.strip():
        raise ClipxaiError("the text is empty; give a sentence to explain")
    body = tokenizer.encode(text)
    if not body:
        raise ClipxaiError(f"the text {text!r} has no tokens after clean-up; give a sentence with words")
    room = CONTEXT_LENGTH - 2
    truncated = len(body) > room
    if truncated and not truncate:
        last = "".join(tokenizer.piece(i)[0] for i in body[max(0, room - 3):room])
        raise ClipxaiError(f"the text is {len(body) + 2} tokens, more than CLIP's {CONTEXT_LENGTH}: it would be "
                           f"truncated after {last!r} (token {room} of {len(body)}); shorten it, or pass "
                           "truncate=True (--truncate) to explain the first 75 tokens")
    body = body[:room]
    ids = np.zeros(CONTEXT_LENGTH, np.int64)
    ids[0], ids[1:len(body) + 1], ids[len(body) + 1] = tokenizer.start_id, body, tokenizer.end_id
    return ids, len(body) + 1, truncated


class WordExplainer:
    """A bundle's text-explainer graph and its tokenizer. Create with ``WordExplainer.from_bundle``."""

    def __init__(self, session, tokenizer: Tokenizer):
        self.session = session
        self.tokenizer = tokenizer

    @classmethod
    def from_bundle(cls, bundle: Bundle, providers: ProviderSpec = "cpu", threads: int | None = None
                    ) -> "WordExplainer":
        require_text_explainer(bundle)
        if bundle.manifest["text_explainer"].get("context_length") != CONTEXT_LENGTH:
            raise BundleError(f"{bundle.path}: word explainer for another context length; re-export the bundle")
        inputs = [TEXT_INPUT_IDS, TEXT_INPUT_EOT, EXPLAIN_INPUT_EMBEDDING]
        outputs = [EXPLAIN_OUTPUT_WEIGHTS, EXPLAIN_OUTPUT_COSINE]
        session = open_text_graph(bundle, TEXT_EXPLAINER_FILE, inputs, outputs, "word explainer", providers, threads)
        return cls(session, Tokenizer(bundle.path / BPE_VOCAB_FILE))

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
            pieces = [self.tokenizer.piece(int(i)) for i in body]
            out.append(TextExplanation(text, [s for s, _ in pieces], weights[p, 1:e].astype(np.float32),
                                       [end for _, end in pieces], float(cosine[p]), cut, body))
        return out
