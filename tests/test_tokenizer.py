"""The torch-free tokenizer against open_clip's (ids must be identical)."""

from __future__ import annotations

import numpy as np
import pytest

from clipxai.runtime.text.tokenizer import Tokenizer, clean_text, pre_tokenize, tokenize
from clipxai.templates import TEMPLATES

CORPUS = [
    "", "   ", "\n\t ", "a photo of a dog.", "red mug", "traffic light", "A Photo Of A DOG",
    # accents, combining marks, other scripts
    "Café crème brûlée", "naïve façade — résumé", "e\u0301 vs é", "Ünïcödé ÀÉÎÕÜ", "l'été", "Ĳssel ﬂuﬃest",
    "東京タワー", "한국어 텍스트", "Привет мир", "مرحبا بالعالم", "שלום", "नमस्ते", "ไทย", "ＬＯＵＤ　ＮＯＩＳＥＳ", "ﾃｽﾄ",
    # emoji
    "😀🐶 dog 👍🏽", "family 👨‍👩‍👧", "🇫🇷 flag", "😀" * 80,
    # punctuation runs, digits, contractions
    "!!!???...", "hello,,,,world;;;", "über-cool_snake_case", "3.14159 1,000,000 ½ ² ٣", "it's they're we've I'm you'll he'd",
    "IT'S THEY'RE", "ſ's 'ſ", "'s", "'", "''''", "dog's", "a--b__c..d", "(parenthesis) [brackets] {braces}",
    # HTML entities
    "&amp; &lt;b&gt; &quot;hi&quot; &#39;x&#39; &#x1F600; &amp;amp;", "Tom &amp; Jerry", "a<b &amp; c", "&nbsp;nbsp&nbsp",
    "&NTILDE; &ntilde; &nTILDE;", "&ldquo;quoted&rdquo;", "&#8220;x&#8221;", "&#xFB01;le", "&notit; &not it", "&#;&#x;&;",
    "line one <b>\nline two &amp;", "&amp;" * 10,
    # whitespace, line breaks, control and invisible characters
    "multiple     spaces\tand\nnewlines\r\n\r\nhere", "a\u2028b\u2029c\x85d", "\ufeffbom", "\u200bzero width",
    "\x1b[31mred\x1b[0m", "bell\x07 del\x7f", "\x80\x85\x91x\x92\x9d", "“curly” ‘quotes’ ‚low‛", "nbsp\u00a0space",
    # special-token text
    "<start_of_text> <end_of_text> <START_OF_TEXT> x<end_of_text>y",
    # long texts (truncated)
    "x " * 100, "supercalifragilisticexpialidocious " * 20, "A" * 300, " ".join(TEMPLATES),
]
# Mojibake: text decoded with the wrong codec, which ftfy repairs.
MOJIBAKE = ["cafÃ©", "â€œquotedâ€\x9d", "voilÃ le travail", "sÃ³", "Ã¼ber"]


@pytest.fixture(scope="module")
def ref():
    import open_clip
    return open_clip.get_tokenizer("ViT-B-16")


def _random_texts(n, seed=0):
    rng = np.random.default_rng(seed)
    pools = ["abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ", "0123456789", " \t\n", ".,;:!?'\"-_()[]&<>#/",
             "éèêëàâäôöûüçñßøåæœ", "日本語中文字한국어", "😀🐶👍🏽🚀", "αβγδΩЖЯ", "&amp;&lt;&#39;&quot;"]
    out = []
    for _ in range(n):
        parts = [pools[rng.integers(len(pools))] for _ in range(rng.integers(1, 6))]
        chars = "".join(parts)
        out.append("".join(chars[i] for i in rng.integers(0, len(chars), rng.integers(0, 40))))
    return out


def test_ids_equal_open_clip_on_a_varied_corpus(ref):
    ours = tokenize(CORPUS)
    theirs = ref(CORPUS).numpy()
    assert ours.dtype == np.int64 and ours.shape == (len(CORPUS), 77)
    bad = [text for text, a, b in zip(CORPUS, ours, theirs) if not np.array_equal(a, b)]
    assert not bad


def test_ids_equal_open_clip_on_random_mixed_text(ref):
    texts = _random_texts(400)
    np.testing.assert_array_equal(tokenize(texts), ref(texts).numpy())


def test_ids_equal_open_clip_on_the_prompt_ensemble(ref):
    prompts = [t.format(c) for c in ["dog", "traffic light", "", "crème brûlée", "O'Neil's café"] for t in TEMPLATES]
    np.testing.assert_array_equal(tokenize(prompts), ref(prompts).numpy())


@pytest.mark.parametrize("context", [2, 5, 16, 77, 100])
def test_truncation_keeps_the_end_token(ref, context):
    texts = ["a photo of a dog.", "word " * 200, ""]
    ours = tokenize(texts, context_length=context)
    np.testing.assert_array_equal(ours, ref(texts, context_length=context).numpy())
    assert ours[1, -1] == 49407 and ours[1, 0] == 49406


def test_ids_equal_open_clip_on_mojibake(ref):
    """ftfy's mojibake repair (text decoded with the wrong codec) is ftfy's own, so ids agree there too."""
    np.testing.assert_array_equal(tokenize(MOJIBAKE), ref(MOJIBAKE).numpy())
    assert tokenize(["cafÃ©"])[0, 1] == tokenize(["café"])[0, 1]


def test_pre_tokenize_follows_the_pattern_order():
    assert pre_tokenize(clean_text("Dog's toys!!'s 42")) == ["dog", "'s", "toys", "!!'", "s", "4", "2"]
    assert pre_tokenize("x<end_of_text>y") == ["x", "<end_of_text>", "y"]


def test_vocabulary_path_errors(tmp_path):
    from clipxai.errors import ClipxaiError
    bad = tmp_path / "v.txt.gz"
    bad.write_bytes(b"not gzip")
    with pytest.raises(ClipxaiError, match="not a readable BPE vocabulary"):
        Tokenizer(bad)
