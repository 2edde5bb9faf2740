"""Rebuild editing/realdata/wikipedia_{train,heldout}.txt from the Wikipedia sample in gensim.

The source is ``gensim/test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-
shortened.bz2`` (shortened English Wikipedia articles; text CC BY-SA, see
editing/realdata/TEXT_LICENSE.md), shipped in the gensim wheel on PyPI. gensim is needed only to
run this script (``pip install gensim``), not by featureedit. Markup is removed with gensim's
``filter_wiki``; prose paragraphs of 200-2000 characters are kept, one per line; every fifth
article (in file order) goes to the held-out file, so no article is in both. The held-out file
keeps its first ``--heldout-passages`` passages only: it is the ΔPPL text of every real-model
bench (a longer one makes each bench slower, not better), and 157 keeps it as it was.

    python scripts/extract_wikipedia_text.py [--max-kb 4000] [--heldout-passages 157]
"""

from __future__ import annotations

import argparse
import bz2
import re
from pathlib import Path

import gensim
from gensim.corpora.wikicorpus import extract_pages, filter_wiki

SOURCE = "test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
OUT = Path(__file__).resolve().parents[1] / "editing" / "realdata"


def paragraphs(wikitext: str) -> list[str]:
    """Prose paragraphs of an article, markup removed, whitespace collapsed."""
    out = []
    for block in filter_wiki(wikitext).split("\n\n"):
        text = " ".join(block.replace("'''", "").replace("''", "").split())
        text = re.sub(r" \([\s,;]*\)", "", text)  # "Alabama () is": emptied by markup removal
        if not 200 <= len(text) <= 2000 or text.count("|") or text.startswith(("*", "#", "=")):
            continue
        if re.search(r"[{}<>\[\]]|thumb|px\b|http", text) or not text.endswith((".", '"')):
            continue
        if sum(c.isalpha() for c in text) < 0.75 * len(text):
            continue
        out.append(text)
    return out


def main() -> None:
    """Write the two files and print their sizes."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-kb", type=int, default=4000, help="total size cap")
    parser.add_argument("--heldout-passages", type=int, default=157, help="held-out size cap")
    args = parser.parse_args()
    source = Path(gensim.__file__).parent / SOURCE
    files = {"train": [], "heldout": []}
    size, article = 0, 0
    with bz2.open(source) as fh:
        for _title, text, _pid in extract_pages(fh):
            paras = paragraphs(text)
            if not paras:
                continue
            split = "heldout" if article % 5 == 4 else "train"
            article += 1
            for p in paras:
                if split == "heldout" and len(files[split]) >= args.heldout_passages:
                    break
                if size + len(p) + 1 > args.max_kb * 1024:
                    break
                files[split].append(p)
                size += len(p.encode()) + 1
    for split, lines in files.items():
        path = OUT / f"wikipedia_{split}.txt"
        path.write_text("\n".join(lines) + "\n")
        print(f"{path}: {len(lines)} passages, {path.stat().st_size / 1024:.0f} KB")


if __name__ == "__main__":
    main()
