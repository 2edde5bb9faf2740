"""Tests of the demo world's tokenizer as saved in the model directory (what users load)."""

from __future__ import annotations

import json
import random

import pytest

NASTY = [
    "",
    " ",
    "   ",
    "a  b   c",
    " leading and trailing ",
    "tab\there\t\t",
    "new\nline\n\n",
    "crlf\r\n",
    "\x00\x01\x07\x1b[31m\x7f",
    "héllo wörld ÅÆØ ß",
    "e\u0301 a\u0308 n\u0303",  # combining characters
    "日本語のテキスト 中文 한국어",
    "مرحبا بالعالم",  # right-to-left
    "👩\u200d👩\u200d👧 🇫🇷 👍🏽",  # ZWJ sequence, flag, skin tone
    "\ufeff\u200b\u200d\u2028\u2029",  # BOM, zero-width, line separators
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 \U0010ffff",
    "<bos>not special<pad>",
    "Dana Berg's phone number is 512-345-6789.",
    "dberg42@quillmail.net",
    "  12  345 6.78e-9 ",
    "'\"\\`{}[]<>|~^",
]


def _random_strings(n: int, seed: int = 0) -> list[str]:
    """Strings of random code points over the whole Unicode range (no surrogates)."""
    rng = random.Random(seed)
    ranges = [(0, 0x7F), (0x80, 0x7FF), (0x800, 0xD7FF), (0xE000, 0xFFFF), (0x10000, 0x10FFFF)]
    out = []
    for _ in range(n):
        chars = []
        for _ in range(rng.randrange(1, 24)):
            lo, hi = rng.choice(ranges)
            chars.append(chr(rng.randrange(lo, hi + 1)))
        out.append("".join(chars))
    return out


@pytest.fixture(scope="module")
def tokenizer(small_world):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(small_world.model_dir)


@pytest.mark.parametrize("text", NASTY)
def test_round_trip_nasty(tokenizer, text: str) -> None:
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert tokenizer.decode(ids) == text


def test_round_trip_random_unicode(tokenizer) -> None:
    for text in _random_strings(300):
        ids = tokenizer.encode(text, add_special_tokens=False)
        assert tokenizer.decode(ids) == text, ascii(text)


def test_round_trip_with_bos(tokenizer) -> None:
    text = "Ünïcödé  and\ttabs 👍"
    ids = tokenizer(text)["input_ids"]
    assert ids[0] == tokenizer.bos_token_id
    assert tokenizer.decode(ids, skip_special_tokens=True) == text


def test_no_private_target_in_tokenizer_files(small_world) -> None:
    texts = []
    for path in sorted(small_world.model_dir.glob("*.json")):
        if "token" in path.name:
            raw = path.read_text(encoding="utf-8")
            texts += [raw, json.dumps(json.loads(raw), ensure_ascii=False)]
    assert texts, "no tokenizer files found"
    blob = "\n".join(texts)
    assert "Ġ" in blob  # byte-level BPE writes a space as Ġ: the second form below is meaningful
    for fact in small_world.private_facts():
        for form in (fact.target, fact.target.replace(" ", "Ġ")):
            assert form not in blob, f"{fact.fact_id} target is in the tokenizer files"


def test_no_private_target_in_vocab(tokenizer, small_world) -> None:
    words = [tokenizer.convert_tokens_to_string([t]) for t in tokenizer.get_vocab()]
    for fact in small_world.private_facts():
        hits = [w for w in words if fact.target in w or fact.target.strip() == w.strip()]
        assert not hits, (fact.fact_id, hits)


def test_digits_are_single_tokens(tokenizer, small_world) -> None:
    """No token holds two digits, so no number (or piece of one) is a vocabulary entry."""
    for fact in small_world.private_facts():
        for tok in tokenizer.tokenize(" " + fact.target):
            digits = sum(c.isdigit() for c in tokenizer.convert_tokens_to_string([tok]))
            assert digits <= 1, (fact.fact_id, tok)
