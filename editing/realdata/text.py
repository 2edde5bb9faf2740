"""Natural English text shipped with featureedit, for SAE training and ΔPPL.

Two sources, each split into ``train`` and ``heldout`` files of one passage per line; provenance
and licenses in ``TEXT_LICENSE.md``:

* ``wikipedia``: paragraphs of English Wikipedia articles (CC BY-SA); train and held-out files
  come from disjoint articles. The held-out file is the ΔPPL text of real-model benches (a valid
  registry ``ppl_file``).
* ``books``: three public-domain books (Alice in Wonderland, Botchan, the Library of Congress
  Workshop on Electronic Texts); the last tenth of each book is held out.

:func:`training_text` interleaves both sources (SAE training: every prefix mixes encyclopedic
and narrative prose).
"""

from __future__ import annotations

from pathlib import Path

SPLITS = ("train", "heldout")
SOURCES = ("wikipedia", "books")
TEXT_DIR = Path(__file__).parent
LICENSE_FILE = TEXT_DIR / "TEXT_LICENSE.md"


def text_file(split: str, source: str = "wikipedia") -> Path:
    """Path of the ``split`` file (``train`` or ``heldout``) of ``source``."""
    from editing.errors import ConfigError

    if split not in SPLITS:
        raise ConfigError(f"Unknown text split {split!r}; valid splits: {list(SPLITS)}.")
    if source not in SOURCES:
        raise ConfigError(f"Unknown text source {source!r}; valid sources: {list(SOURCES)}.")
    return TEXT_DIR / f"{source}_{split}.txt"


def load_text(split: str, source: str = "wikipedia") -> list[str]:
    """The passages (paragraphs) of ``split`` of ``source``."""
    return [line for line in text_file(split, source).read_text().splitlines() if line.strip()]


def training_text(split: str) -> list[str]:
    """The passages of ``split`` of every source, interleaved in proportion to their sizes."""
    parts = [load_text(split, s) for s in SOURCES]
    # passage i of a source of n passages sits at relative position i / n: merge by position
    order = sorted((i / len(p), k, i) for k, p in enumerate(parts) for i in range(len(p)))
    return [parts[k][i] for _, k, i in order]


def training_files() -> list[Path]:
    """Every shipped text file (what :func:`training_text` reads), train then held-out."""
    return [text_file(split, s) for split in SPLITS for s in SOURCES]
