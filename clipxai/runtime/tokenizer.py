"""Kept for the public import path ``clipxai.runtime.tokenizer.tokenize``: the tokenizer lives in
``clipxai.runtime.text.tokenizer``."""

from clipxai.runtime.text.tokenizer import CONTEXT_LENGTH, Tokenizer, tokenize  # noqa: F401
