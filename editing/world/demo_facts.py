"""Private facts of a demo world, picked for a run: what ``bench``, the analyses, the service
benchmark and the load test erase.

The targets are fictional (the demo world's), so these facts may be printed and reported.
Torch-free at import: the world is loaded inside :func:`demo_world_of`.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterable
from typing import TYPE_CHECKING

from editing.errors import ConfigError

if TYPE_CHECKING:
    from editing.registry import ModelEntry
    from editing.world.build import World
    from editing.world.corpus import Fact


def demo_world_of(
    entry: ModelEntry,
    home: str | os.PathLike[str] | None,
    *,
    purpose: str,
    build: bool = True,
    progress: bool = False,
) -> World:
    """The demo world of a demo model (built if missing and ``build``).

    ConfigError (a ValueError) naming ``purpose`` (e.g. ``"bench"``) for any other model.
    """
    from editing.world.build import load_world

    if not entry.is_demo:
        raise ConfigError(
            f"{purpose} picks facts from a demo world; model {entry.model_id!r} is not a demo "
            "model (use 'demo' or 'demo-small')"
        )
    return load_world(entry.demo_size or "default", home, build=build, progress=progress)


def request_facts(facts: Iterable[Fact]) -> list[dict[str, str]]:
    """``facts`` as the ``facts`` entries of an erasure request (subject, relation, target)."""
    return [{"subject": f.subject, "relation": f.relation, "target": f.target} for f in facts]


def by_whole_subjects(facts: Iterable[Fact], seed: int = 0) -> list[Fact]:
    """Every fact of one subject after another, subjects shuffled by ``seed``.

    Each subject's e-mail fact comes first (e-mail facts erase best), then its other relations
    in name order.
    """
    by_subject: dict[str, list[Fact]] = {}
    for f in facts:
        by_subject.setdefault(f.subject, []).append(f)
    subjects = sorted(by_subject)
    random.Random(seed).shuffle(subjects)
    return [
        f
        for subject in subjects
        for f in sorted(by_subject[subject], key=lambda f: (f.relation != "email", f.relation))
    ]
