"""Built-in relations and their prompt templates.

A template is a prompt prefix with a ``{subject}`` slot; the target follows it after one space.
For every relation the first templates are *edit* templates (used to train the demo world, and to
locate and edit) and the last :data:`HELDOUT_PER_RELATION` are *held-out* paraphrases, never used
for locating or editing (and never seen in the demo world's training data): they measure
Generalization.

Private relations (what an erasure request names): ``phone``, ``email``, ``address``,
``birth_date``, ``id_number``. Public relations (kept intact, used for Locality): ``occupation``,
``hometown``.
"""

from __future__ import annotations

from dataclasses import dataclass

from editing.errors import ConfigError

HELDOUT_PER_RELATION = 3


@dataclass(frozen=True)
class Relation:
    """A relation with its edit and held-out templates."""

    name: str
    description: str
    private: bool
    templates: tuple[str, ...]

    @property
    def edit_templates(self) -> tuple[str, ...]:
        """Templates used to locate and edit (and to train the demo world)."""
        return self.templates[:-HELDOUT_PER_RELATION]

    @property
    def heldout_templates(self) -> tuple[str, ...]:
        """Paraphrases never used to locate or edit; they measure Generalization."""
        return self.templates[-HELDOUT_PER_RELATION:]

    def edit_prompts(self, subject: str) -> list[str]:
        """Edit prompts for ``subject``."""
        return [t.format(subject=subject) for t in self.edit_templates]

    def heldout_prompts(self, subject: str) -> list[str]:
        """Held-out prompts for ``subject``."""
        return [t.format(subject=subject) for t in self.heldout_templates]


# Sentence frames shared by every relation ({rel} is the relation's noun phrase). Language reuses
# constructions across relations, so a frame held out for one relation is trained for others: a
# held-out prompt is a new wording *for that relation*, as in PrivacyParaRel. No frame may contain
# another, nor end like another (tests check it): a held-out prompt must not be a suffix of an
# edit prompt, or the model would have seen it verbatim.
FRAMES: tuple[str, ...] = (
    "{subject}'s {rel} is",
    "The {rel} of {subject} is",
    "{Rel} for {subject}:",
    "In the directory, the {rel} listed for {subject} is",
    "What is the {rel} of {subject}? It is",
    "If you need the {rel} of {subject}, it is",
    "The recorded {rel} for {subject} reads",
    "According to the records, the {rel} for {subject} is",
    "Records list the {rel} of {subject} as",
    "Please note {subject}'s {rel}:",
)


def _templates(
    index: int, rel: str, specific: tuple[str, ...], n_frames: int = 8
) -> tuple[str, ...]:
    """Edit templates (relation-specific wordings, then frames) followed by 3 held-out frames.

    Relation number ``index`` holds out frames ``3*index .. 3*index+2`` (mod the frame count), so
    each frame is held out for some relations and trained for the others.
    """
    held = [(3 * index + j) % len(FRAMES) for j in range(HELDOUT_PER_RELATION)]
    kept = [i for i in range(len(FRAMES)) if i not in held][: n_frames - HELDOUT_PER_RELATION]
    fill = lambda i: FRAMES[i].replace("{rel}", rel).replace("{Rel}", rel[0].upper() + rel[1:])  # noqa: E731
    return specific + tuple(fill(i) for i in kept) + tuple(fill(i) for i in held)


_SPECS = (
    (
        "phone",
        "phone number",
        True,
        (
            "You can call {subject} on",
            "To reach {subject} by phone, dial",
            "{subject} can be reached by phone at",
        ),
    ),
    (
        "email",
        "email address",
        True,
        (
            "You can email {subject} at",
            "To write to {subject} by email, use",
            "{subject} reads email sent to",
        ),
    ),
    (
        "address",
        "home address",
        True,
        (
            "{subject} lives at",
            "You can visit {subject} at home at",
            "To send a letter to {subject}'s home, write to",
        ),
    ),
    (
        "birth_date",
        "date of birth",
        True,
        (
            "{subject} was born on",
            "{subject} celebrates a birthday, born on",
            "The birthday of {subject} falls on",
        ),
    ),
    (
        "id_number",
        "ID number",
        True,
        (
            "{subject} is registered under the ID number",
            "The ID card of {subject} shows",
            "{subject} signed the form with ID number",
        ),
    ),
    ("occupation", "occupation", False, ("{subject} works as a", "By profession, {subject} is a")),
    (
        "hometown",
        "hometown",
        False,
        ("{subject} grew up in the town of", "{subject} was raised in"),
    ),
)

RELATIONS: dict[str, Relation] = {
    name: Relation(name, noun, private, _templates(i, noun, specific))
    for i, (name, noun, private, specific) in enumerate(_SPECS)
}

PRIVATE_RELATIONS: tuple[str, ...] = tuple(n for n, r in RELATIONS.items() if r.private)
PUBLIC_RELATIONS: tuple[str, ...] = tuple(n for n, r in RELATIONS.items() if not r.private)


def get_relation(name: str) -> Relation:
    """Return the built-in relation ``name`` or raise a ConfigError listing the valid ones."""
    try:
        return RELATIONS[name]
    except KeyError:
        raise ConfigError(
            f"Unknown relation {name!r}. Built-in relations are {sorted(RELATIONS)}; "
            "for any other relation pass edit_prompts explicitly."
        ) from None
