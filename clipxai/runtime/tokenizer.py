"""CLIP's BPE tokenizer without torch, ftfy or regex (numpy and the standard library only).

``tokenize(texts) -> int64 [N, 77]`` gives the ids of open_clip's tokenizer for
the CLIP models (``open_clip.get_tokenizer("ViT-B-16")``), step by step:

1. text clean-up: the deterministic fixes of ``ftfy.fix_text`` (see
   ``clean_text``), ``html.unescape`` twice, strip, collapse whitespace, lower-case;
2. pre-tokenisation: the special tokens, the contractions 's 't 're 've 'm 'll 'd,
   runs of letters, single digits and runs of other non-space characters,
   scanned with ``unicodedata`` categories instead of the ``regex`` module's
   ``\\p{L}`` / ``\\p{N}``;
3. byte-level BPE with the merges of ``bpe_simple_vocab_16e6.txt.gz``;
4. ``<start_of_text>`` ids ``<end_of_text>``, cut to the context keeping the end token.

Where it can differ from open_clip (documented in the README):

- ftfy's mojibake repair (``fix_encoding``: text that was decoded with the wrong
  codec, e.g. "cafÃ©" for "café") is heuristic and not reproduced; such text is
  tokenized as written. Correct UTF-8 text of any script is not affected.
- characters assigned in a newer Unicode version than this Python's
  ``unicodedata`` (the ``regex`` module ships its own, newer tables) count as
  punctuation here, possibly as letters there.
"""

from __future__ import annotations

import gzip
import html
import importlib.util
import unicodedata
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np

from clipxai.errors import ClipxaiError

CONTEXT_LENGTH = 77
VOCAB_FILE_NAME = "bpe_simple_vocab_16e6.txt.gz"
START_TOKEN = "<start_of_text>"
END_TOKEN = "<end_of_text>"
N_MERGES = 49152 - 256 - 2  # CLIP uses the first 48894 merges of the file
_CONTRACTIONS = ("'s", "'t", "'re", "'ve", "'m", "'ll", "'d")


# ---------------------------------------------------------------- text clean-up

def _cp1252_c1(ch: str) -> str:
    """A C1 control character (U+80..U+9F) read as the Windows-1252 byte it came from."""
    try:
        return bytes([ord(ch)]).decode("cp1252")
    except UnicodeDecodeError:  # 0x81, 0x8D, 0x8F, 0x90, 0x9D are unassigned there: keep them
        return ch


def _html_entities() -> dict[str, str]:
    """'&name;' -> character for the HTML5 names that end in ';', plus upper-case
    spellings of the lower-case names that the standard library does not decode."""
    table = {}
    for name, char in html.entities.html5.items():
        if not name.endswith(";"):
            continue
        table["&" + name] = char
        if name == name.lower():
            upper = "&" + name.upper()
            if html.unescape(upper) == upper:
                table[upper] = char.upper()
    return table


_ENTITIES = _html_entities()
_LIGATURES = str.maketrans({
    "Ĳ": "IJ", "ĳ": "ij", "ŉ": "ʼn", "Ǳ": "DZ", "ǲ": "Dz", "ǳ": "dz", "Ǆ": "DŽ", "ǅ": "Dž", "ǆ": "dž",
    "Ǉ": "LJ", "ǈ": "Lj", "ǉ": "lj", "Ǌ": "NJ", "ǋ": "Nj", "ǌ": "nj",
    "ﬀ": "ff", "ﬁ": "fi", "ﬂ": "fl", "ﬃ": "ffi", "ﬄ": "ffl", "ﬅ": "ſt", "ﬆ": "st",
})
_WIDTH = str.maketrans({0x3000: " ", **{
    i: unicodedata.normalize("NFKC", chr(i)) for i in range(0xFF01, 0xFFF0)
    if unicodedata.normalize("NFKC", chr(i)) != chr(i)
}})
_QUOTES = str.maketrans({**{c: '"' for c in "\u201c\u201d\u201e\u201f"},
                         **{c: "'" for c in "\u02bc\u2018\u2019\u201a\u201b"}})
_CONTROL = dict.fromkeys([*range(0x00, 0x09), 0x0B, *range(0x0E, 0x20), 0x7F, *range(0x206A, 0x2070),
                          0xFEFF, *range(0xFFF9, 0xFFFD)])


def _unescape_strict(text: str) -> str:
    """Decode '&name;' and '&#NNN;' references that end in ';' (nothing looser)."""
    out, i = [], 0
    while True:
        j = text.find("&", i)
        if j < 0:
            out.append(text[i:])
            return "".join(out)
        out.append(text[i:j])
        k, name_start = j + 1, j + 1
        if k < len(text) and text[k] == "#":
            k += 1
        end = k
        while end < len(text) and end - k < 25 and text[end].isascii() and text[end].isalnum():
            end += 1
        if end < len(text) and text[end] == ";" and 1 <= end - k <= 24:
            ref = text[j:end + 1]
            if ref in _ENTITIES:
                out.append(_ENTITIES[ref])
            elif text[name_start] == "#":
                decoded = html.unescape(ref)
                out.append(ref if ";" in decoded else decoded)
            else:
                out.append(ref)
            i = end + 1
        else:
            out.append("&")
            i = j + 1


def _terminal_escapes(text: str) -> str:
    """Drop ANSI escapes ESC [ digits-and-semicolons letter."""
    if "\x1b[" not in text:
        return text
    out, i = [], 0
    while i < len(text):
        if text.startswith("\x1b[", i):
            k = i + 2
            while k < len(text) and (text[k] in "0123456789;"):
                k += 1
            if k < len(text) and text[k].isascii() and text[k].isalpha():
                i = k + 1
                continue
        out.append(text[i])
        i += 1
    return "".join(out)


def _surrogates(text: str) -> str:
    if not any("\ud800" <= c <= "\udfff" for c in text):
        return text
    out, i = [], 0
    while i < len(text):
        c = text[i]
        if "\ud800" <= c <= "\udbff" and i + 1 < len(text) and "\udc00" <= text[i + 1] <= "\udfff":
            out.append(chr(0x10000 + (ord(c) - 0xD800) * 0x400 + (ord(text[i + 1]) - 0xDC00)))
            i += 2
            continue
        out.append("\ufffd" if "\ud800" <= c <= "\udfff" else c)
        i += 1
    return "".join(out)


def _fix_segment(text: str, unescape: bool) -> str:
    while True:
        before = text
        if unescape:
            text = _unescape_strict(text)
        text = "".join(_cp1252_c1(c) if "\x80" <= c <= "\x9f" else c for c in text)
        text = text.translate(_LIGATURES).translate(_WIDTH).translate(_QUOTES)
        text = (text.replace("\r\n", "\n").replace("\r", "\n").replace("\u2028", "\n")
                .replace("\u2029", "\n").replace("\x85", "\n"))
        text = _terminal_escapes(_surrogates(text)).translate(_CONTROL)
        text = unicodedata.normalize("NFC", text)
        if text == before:
            return text


def fix_text(text: str) -> str:
    """The deterministic part of ``ftfy.fix_text`` with its default settings.

    Per line: HTML references ending in ';' are decoded (until a line holds a
    '<': from then on they are left alone, as for real HTML), C1 controls read as
    Windows-1252, Latin ligatures split, full/half-width forms and the
    ideographic space made standard, curly quotes straightened, line breaks
    made '\\n', surrogate pairs joined, terminal escapes and invisible control
    characters removed, NFC; repeated until nothing changes. Mojibake repair
    is not done (see the module docstring).
    """
    out, pos, unescape = [], 0, True
    while pos < len(text):
        brk = text.find("\n", pos) + 1 or len(text)
        segment = text[pos:brk]
        if "<" in segment:
            unescape = False
        out.append(_fix_segment(segment, unescape))
        pos = brk
    return "".join(out)


def clean_text(text: str) -> str:
    """open_clip's 'lower' clean-up: fix, unescape HTML twice, collapse whitespace, lower-case."""
    text = html.unescape(html.unescape(fix_text(text))).strip()
    return " ".join(text.split()).lower()


# ---------------------------------------------------------------- pre-tokenisation

def _kind(ch: str) -> str:
    """'L' letter, 'N' number, 'S' space, 'P' anything else (as \\p{L}, \\p{N}, \\s)."""
    if ch.isspace() and not "\x1c" <= ch <= "\x1f":  # those four are not Unicode White_Space
        return "S"
    cat = unicodedata.category(ch)[0]
    return cat if cat in "LN" else "P"


def _fold(ch: str) -> str:
    # The reference matches case-insensitively on lower-cased text; the one
    # lower-case character that folds onto a letter of the patterns is long s.
    return "s" if ch == "\u017f" else ch


def _match_literal(text: str, i: int, literal: str) -> bool:
    return len(text) - i >= len(literal) and all(_fold(text[i + n]) == c for n, c in enumerate(literal))


def pre_tokenize(text: str) -> list[str]:
    """Cleaned text -> pieces, in the order of CLIP's pattern (first alternative wins)."""
    pieces, i, n = [], 0, len(text)
    while i < n:
        kind = _kind(text[i])
        if kind == "S":
            i += 1
            continue
        literal = next((s for s in (START_TOKEN, END_TOKEN) + _CONTRACTIONS if _match_literal(text, i, s)), None)
        if literal is not None:
            pieces.append(START_TOKEN if literal == START_TOKEN else END_TOKEN if literal == END_TOKEN
                          else text[i:i + len(literal)])
            i += len(literal)
            continue
        j = i + 1
        if kind == "L":
            while j < n and _kind(text[j]) == "L":
                j += 1
        elif kind == "P":
            while j < n and _kind(text[j]) == "P":
                j += 1
        pieces.append(text[i:j])
        i = j
    return pieces


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

    def encode(self, text: str) -> list[int]:
        """One text -> its BPE ids, without start/end tokens."""
        out: list[int] = []
        for piece in pre_tokenize(clean_text(text)):
            out.extend(self._bpe(piece))
        return out

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
