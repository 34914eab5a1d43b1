"""CLIP's BPE tokenizer without torch (ftfy, regex and numpy).

``tokenize(texts) -> int64 [N, 77]`` gives the ids of open_clip's tokenizer for
the CLIP models (``open_clip.get_tokenizer("ViT-B-16")``), on every input,
mojibake included (tested), step by step:

1. clean-up: ``ftfy.fix_text``, ``html.unescape`` twice, strip, collapse
   whitespace, lower-case;
2. pre-tokenisation with the ``regex`` module: the special tokens, the
   contractions 's 't 're 've 'm 'll 'd, runs of letters (``\\p{L}``), single
   digits (``\\p{N}``) and runs of other non-space characters;
3. byte-level BPE with the merges of ``bpe_simple_vocab_16e6.txt.gz``;
4. ``<start_of_text>`` ids ``<end_of_text>``, cut to the context keeping the end token.

Pieces are bytes: a BPE piece may hold part of a character (a Chinese character's three
UTF-8 bytes can span two pieces), so text is put back together from the pieces' bytes
(``piece_bytes``), never by decoding pieces one by one. ``encode_words`` groups the ids by
word as the user wrote them (``_WORD_GLUE``).
"""

from __future__ import annotations

import gzip
import html
import importlib.util
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import ftfy
import numpy as np
import regex

from clipxai.errors import ClipxaiError

CONTEXT_LENGTH = 77
VOCAB_FILE_NAME = "bpe_simple_vocab_16e6.txt.gz"
START_TOKEN = "<start_of_text>"
END_TOKEN = "<end_of_text>"
N_MERGES = 49152 - 256 - 2  # CLIP uses the first 48894 merges of the file
# CLIP's pre-tokenisation pattern (a fact of the model: its merges were learnt on these pieces).
_PATTERN = regex.compile(START_TOKEN + "|" + END_TOKEN +
                         r"""|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""", regex.IGNORECASE)


# A pre-tokenisation piece that touches the previous one stays in its word when the junction is
# a combining mark (\p{M}: accents, vowel signs and points of Hebrew, Arabic, Devanagari, Thai) or an
# invisible format character (\p{Cf}: zero-width joiner and non-joiner, left-to-right and
# right-to-left marks): CLIP's pattern splits "كَتَبَ" and "नमस्ते" at every mark, a reader does not.
_WORD_GLUE = regex.compile(r"[\p{M}\p{Cf}]")


def clean_text(text: str) -> str:
    """ftfy's fixes, HTML entities decoded twice, whitespace collapsed, lower-cased."""
    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return " ".join(text.split()).lower()


def pre_tokenize(text: str) -> list[str]:
    """Cleaned text -> the pieces BPE encodes one by one."""
    return _PATTERN.findall(text)


# ---------------------------------------------------------------- BPE

def _byte_alphabet() -> list[str]:
    """Byte b -> a printable character: printable Latin-1 bytes map to themselves,
    the others to 256, 257, ... in byte order (the table CLIP's merges are written in)."""
    keep = set(range(ord("!"), ord("~") + 1)) | set(range(0xA1, 0xAD)) | set(range(0xAE, 0x100))
    out, extra = [], 0
    for b in range(256):
        if b in keep:
            out.append(chr(b))
        else:
            out.append(chr(256 + extra))
            extra += 1
    return out


class Tokenizer:
    """CLIP's BPE vocabulary loaded from ``bpe_simple_vocab_16e6.txt.gz``."""

    def __init__(self, vocab_path: str | Path):
        self.vocab_path = Path(vocab_path)
        try:
            with gzip.open(self.vocab_path, "rt", encoding="utf-8") as f:
                lines = f.read().split("\n")
        except (OSError, EOFError, UnicodeDecodeError) as e:
            raise ClipxaiError(f"{self.vocab_path}: not a readable BPE vocabulary ({e}); re-export the bundle")
        merges = [tuple(line.split()) for line in lines[1:N_MERGES + 1]]
        if len(merges) != N_MERGES or any(len(m) != 2 for m in merges):
            raise ClipxaiError(f"{self.vocab_path}: expected {N_MERGES} BPE merges; re-export the bundle")
        self._bytes = _byte_alphabet()
        # ids 0..255 list the byte characters with the printable ones first (256+ last)
        alphabet = sorted(self._bytes, key=lambda c: (ord(c) >= 256, ord(c)))
        symbols = alphabet + [s + "</w>" for s in alphabet] + ["".join(m) for m in merges]
        symbols += [START_TOKEN, END_TOKEN]
        self.ids = {s: i for i, s in enumerate(symbols)}
        self.symbols = symbols
        self._byte_of = {c: b for b, c in enumerate(self._bytes)}
        self.ranks = {m: r for r, m in enumerate(merges)}
        self.start_id = self.ids[START_TOKEN]
        self.end_id = self.ids[END_TOKEN]
        self.vocab_size = len(symbols)
        self._cache: dict[str, list[int]] = {START_TOKEN: [self.start_id], END_TOKEN: [self.end_id]}

    def _bpe(self, piece: str) -> list[int]:
        cached = self._cache.get(piece)
        if cached is not None:
            return cached
        word = "".join(self._bytes[b] for b in piece.encode("utf-8"))
        parts = list(word[:-1]) + [word[-1] + "</w>"]
        while len(parts) > 1:
            best = min(zip(parts, parts[1:]), key=lambda p: self.ranks.get(p, N_MERGES))
            if best not in self.ranks:
                break
            merged, k = [], 0
            while k < len(parts):
                if k + 1 < len(parts) and parts[k] == best[0] and parts[k + 1] == best[1]:
                    merged.append(parts[k] + parts[k + 1])
                    k += 2
                else:
                    merged.append(parts[k])
                    k += 1
            parts = merged
        ids = [self.ids[p] for p in parts]
        self._cache[piece] = ids
        return ids

    def piece_bytes(self, token_id: int) -> tuple[bytes, bool]:
        """One id -> (its UTF-8 bytes, whether it ends a pre-tokenisation piece). The bytes may be
        part of a character: join a word's pieces' bytes before decoding them."""
        symbol = self.symbols[token_id]
        if symbol in (START_TOKEN, END_TOKEN):
            return symbol.encode(), True
        ends = symbol.endswith("</w>")
        return bytes(self._byte_of[c] for c in (symbol[:-4] if ends else symbol)), ends

    def piece(self, token_id: int) -> tuple[str, bool]:
        """One id -> (its text, whether it ends a piece): 49407 -> ("<end_of_text>", True). A piece
        holding part of a character shows U+FFFD for it: text is rebuilt with ``piece_bytes``."""
        raw, ends = self.piece_bytes(token_id)
        return raw.decode("utf-8", errors="replace"), ends

    def encode(self, text: str) -> list[int]:
        """One text -> its BPE ids, without start/end tokens."""
        out: list[int] = []
        for piece in pre_tokenize(clean_text(text)):
            out.extend(self._bpe(piece))
        return out

    def encode_words(self, text: str) -> list[list[int]]:
        """One text -> its BPE ids grouped by word (concatenated, ``encode(text)``): CLIP's
        pre-tokenisation pieces of the cleaned text, a piece joining the previous one where they
        touch at a combining mark or an invisible format character (``_WORD_GLUE``)."""
        words: list[list[int]] = []
        last, end = "", -1
        for m in _PATTERN.finditer(clean_text(text)):
            piece = m.group()
            glued = m.start() == end and bool(_WORD_GLUE.match(piece[0]) or _WORD_GLUE.match(last[-1]))
            if glued:
                words[-1].extend(self._bpe(piece))
            else:
                words.append(list(self._bpe(piece)))
            last, end = piece, m.end()
        return words

    def __call__(self, texts: str | Sequence[str], context_length: int = CONTEXT_LENGTH) -> np.ndarray:
        return self.tokenize_with_lengths(texts, context_length)[0]

    def tokenize_with_lengths(self, texts: str | Sequence[str], context_length: int = CONTEXT_LENGTH
                              ) -> tuple[np.ndarray, np.ndarray]:
        """texts -> (ids int64 [N, context_length], lengths int64 [N]).

        lengths[i] counts the start and end tokens, so the end token sits at lengths[i] - 1.
        A text longer than the context is cut and its last id replaced by the end token.
        """
        if isinstance(texts, str):
            texts = [texts]
        if context_length < 2:
            raise ClipxaiError(f"context_length must be >= 2, got {context_length}")
        ids = np.zeros((len(texts), context_length), np.int64)
        lengths = np.empty(len(texts), np.int64)
        for row, text in enumerate(texts):
            tokens = [self.start_id, *self.encode(text), self.end_id]
            if len(tokens) > context_length:
                tokens = tokens[:context_length]
                tokens[-1] = self.end_id
            ids[row, :len(tokens)] = tokens
            lengths[row] = len(tokens)
        return ids, lengths


def default_vocab_path() -> Path:
    """The vocabulary file that open_clip installs, found without importing open_clip."""
    try:
        spec = importlib.util.find_spec("open_clip")
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.origin:
        path = Path(spec.origin).parent / VOCAB_FILE_NAME
        if path.is_file():
            return path
    raise ClipxaiError(f"no BPE vocabulary given and open_clip's {VOCAB_FILE_NAME} was not found; pass "
                       "vocab_path= (a bundle exported with --text-encoder carries the file)")


@lru_cache(maxsize=4)
def load_tokenizer(vocab_path: str | Path | None = None) -> Tokenizer:
    """A (cached) Tokenizer for a vocabulary file; None: open_clip's installed copy."""
    return Tokenizer(default_vocab_path() if vocab_path is None else vocab_path)


def tokenize(texts: str | Sequence[str], context_length: int = CONTEXT_LENGTH,
             vocab_path: str | Path | None = None) -> np.ndarray:
    """texts -> int64 token ids [N, context_length], equal to open_clip's CLIP tokenizer.

    vocab_path: ``bpe_simple_vocab_16e6.txt.gz`` (a text-encoder bundle has one);
    None looks for the copy open_clip installs.
    """
    return load_tokenizer(vocab_path)(texts, context_length)
