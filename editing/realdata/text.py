"""Natural English text shipped with featureedit: Wikipedia paragraphs for SAE training and ΔPPL.

``wikipedia_train.txt`` (SAE training) and ``wikipedia_heldout.txt`` (perplexity) hold one
paragraph per line, from disjoint articles; provenance and license (CC BY-SA) in
``TEXT_LICENSE.md``. The held-out file is also a valid registry ``ppl_file``.
"""

from __future__ import annotations

from pathlib import Path

SPLITS = ("train", "heldout")
TEXT_DIR = Path(__file__).parent
LICENSE_FILE = TEXT_DIR / "TEXT_LICENSE.md"


def text_file(split: str) -> Path:
    """Path of the ``split`` file (``train`` or ``heldout``)."""
    from editing.errors import ConfigError

    if split not in SPLITS:
        raise ConfigError(f"Unknown text split {split!r}; valid splits: {list(SPLITS)}.")
    return TEXT_DIR / f"wikipedia_{split}.txt"


def load_text(split: str) -> list[str]:
    """The passages (paragraphs) of ``split``."""
    return [line for line in text_file(split).read_text().splitlines() if line.strip()]
