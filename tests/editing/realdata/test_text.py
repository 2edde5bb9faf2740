"""The shipped natural text: two sources of prose, disjoint splits, a license note."""

from __future__ import annotations

import pytest

from editing.errors import ConfigError
from editing.realdata.text import (
    LICENSE_FILE,
    SOURCES,
    load_text,
    text_file,
    training_files,
    training_text,
)


@pytest.mark.parametrize("source", SOURCES)
def test_splits_are_prose_and_disjoint(source: str) -> None:
    train, heldout = load_text("train", source), load_text("heldout", source)
    assert len(train) >= 500 and len(heldout) >= 80
    assert not set(train) & set(heldout)
    for passage in train + heldout:
        assert 200 <= len(passage) <= 2000
        assert not any(m in passage for m in ("[[", "]]", "{{", "'''", "|", "<ref", "Gutenberg"))
    words = " ".join(train).split()
    assert len(words) > 80_000 and sum(w in {"the", "of", "and"} for w in words) > 0.05 * len(words)


def test_training_text_interleaves_every_passage_once() -> None:
    for split in ("train", "heldout"):
        mixed = training_text(split)
        parts = [load_text(split, s) for s in SOURCES]
        assert sorted(mixed) == sorted(p for part in parts for p in part)
        for part in parts:  # each source keeps its order ...
            assert [p for p in mixed if p in set(part)] == part
        # ... and is spread over the whole: the first tenth holds about a tenth of each source
        head = set(mixed[: len(mixed) // 10])
        for part in parts:
            assert 0.05 * len(part) <= len(head & set(part)) <= 0.15 * len(part)


def test_sizes_and_license() -> None:
    total = sum(f.stat().st_size for f in training_files())
    assert 2_000_000 < total < 5_000_000
    assert text_file("heldout").stat().st_size < 100_000  # the ΔPPL text stays cheap to score
    note = LICENSE_FILE.read_text()
    assert "CC BY-SA" in note and "gensim" in note and "public domain" in note
    assert all(f.name in note for f in training_files())


def test_unknown_split_or_source() -> None:
    with pytest.raises(ConfigError, match="heldout"):
        text_file("test")
    with pytest.raises(ConfigError, match="books"):
        text_file("train", "news")
