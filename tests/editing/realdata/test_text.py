"""The shipped Wikipedia text: two disjoint, non-trivial splits of prose with a license note."""

from __future__ import annotations

import pytest

from editing.errors import ConfigError
from editing.realdata.text import LICENSE_FILE, load_text, text_file


def test_splits_are_prose_and_disjoint() -> None:
    train, heldout = load_text("train"), load_text("heldout")
    assert len(train) >= 300 and len(heldout) >= 100
    assert not set(train) & set(heldout)
    for passage in train + heldout:
        assert 200 <= len(passage) <= 2000
        assert not any(m in passage for m in ("[[", "]]", "{{", "'''", "|", "<ref"))
    words = " ".join(train).split()
    assert len(words) > 40_000 and sum(w in {"the", "of", "and"} for w in words) > 0.05 * len(words)


def test_sizes_and_license() -> None:
    total = sum(text_file(s).stat().st_size for s in ("train", "heldout"))
    assert 100_000 < total < 500_000
    note = LICENSE_FILE.read_text()
    assert "CC BY-SA" in note and "gensim" in note


def test_unknown_split() -> None:
    with pytest.raises(ConfigError, match="heldout"):
        text_file("test")
