"""Seeded generator of the demo world's synthetic private-fact corpus (PrivacyParaRel-like).

Fictional people each have five private facts (phone, e-mail, home address, birth date, national ID
number) and two public ones (occupation, hometown). Training text states every fact with the
relation's *edit* templates; the *held-out* templates never appear in training, so recall on them
measures paraphrase generalization. General filler text (a small grammar) is split into a training
part and a held-out part used for perplexity (ΔPPL).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

from editing.relations import PRIVATE_RELATIONS, PUBLIC_RELATIONS, RELATIONS

T = TypeVar("T", bound=Any)

FIRST_NAMES = [
    "Dana",
    "Ilse",
    "Marek",
    "Odile",
    "Tobin",
    "Yara",
    "Bram",
    "Cleo",
    "Eamon",
    "Freya",
    "Gideon",
    "Hanne",
    "Ivo",
    "Jorun",
    "Kasimir",
    "Lotte",
    "Milo",
    "Nadja",
    "Osric",
    "Petra",
    "Quill",
    "Rosalind",
    "Sten",
    "Talia",
    "Ulric",
    "Vesna",
    "Wendel",
    "Xenia",
    "Yannick",
    "Zora",
    "Anselm",
    "Brigid",
    "Caspar",
    "Delphine",
    "Emrys",
    "Fenna",
    "Gustav",
    "Hedda",
    "Idris",
    "Jessamy",
    "Konrad",
    "Liesel",
    "Mattias",
    "Nerys",
    "Orla",
    "Pascal",
    "Ragna",
    "Soren",
    "Tamsin",
    "Urban",
    "Viveka",
    "Wilhelmina",
    "Alaric",
    "Benedikt",
    "Carys",
    "Dorian",
    "Elowen",
    "Florian",
    "Greer",
    "Halvard",
]
LAST_NAMES = [
    "Berg",
    "Castell",
    "Dunmore",
    "Ekwall",
    "Falk",
    "Garnier",
    "Holloway",
    "Ibsen",
    "Jaskolka",
    "Kestrel",
    "Lindqvist",
    "Marlowe",
    "Norquist",
    "Ostrander",
    "Pemberton",
    "Quintero",
    "Rasmussen",
    "Sandoval",
    "Thorne",
    "Ulvaeus",
    "Vanterpool",
    "Whitlock",
    "Yelverton",
    "Zeller",
    "Abernethy",
    "Blackwood",
    "Corliss",
    "Draycott",
    "Ellery",
    "Fairweather",
    "Grimsby",
    "Hawthorne",
    "Ingram",
    "Jovanovic",
    "Kilbride",
    "Lockhart",
    "Merriweather",
    "Nightingale",
    "Oakley",
    "Penhallow",
    "Radcliffe",
    "Stanhope",
    "Trelawney",
    "Upshaw",
    "Vickery",
    "Wainwright",
    "Ashdown",
    "Brightwell",
    "Cavendish",
    "Dunstable",
]
TOWNS = [
    "Norby",
    "Harlow",
    "Eskdale",
    "Varnholt",
    "Quenby",
    "Lindmoor",
    "Ostreve",
    "Caldera",
    "Brynmawr",
    "Fellhaven",
    "Glimsby",
    "Thornwick",
    "Ashgrove",
    "Duskwater",
    "Marrowby",
    "Pellington",
    "Rookhaven",
    "Saltmere",
    "Tarnwell",
    "Wyndcross",
]
STREETS = [
    "Alder",
    "Birch",
    "Cedar",
    "Hazel",
    "Juniper",
    "Larch",
    "Maple",
    "Rowan",
    "Willow",
    "Elm",
    "Aspen",
    "Linden",
    "Sorrel",
    "Thistle",
    "Bramble",
    "Heather",
    "Clover",
    "Fern",
]
STREET_KINDS = ("Lane", "Road", "Street", "Way", "Close", "Avenue")
MONTHS = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
]
MAIL_DOMAINS = (
    "quillmail.net",
    "postbox.org",
    "lettera.com",
    "inkwell.net",
    "mailharbor.com",
    "owlpost.org",
)
OCCUPATIONS = [
    "baker",
    "carpenter",
    "pharmacist",
    "librarian",
    "surveyor",
    "translator",
    "beekeeper",
    "cartographer",
    "glassblower",
    "locksmith",
    "veterinarian",
    "astronomer",
    "potter",
    "florist",
    "tailor",
    "electrician",
    "geologist",
    "archivist",
    "midwife",
    "blacksmith",
]

# A small grammar of general text, for training fluency and measuring perplexity.
_ADJ = ["quiet", "busy", "cold", "bright", "old", "narrow", "windy", "green", "crowded", "distant"]
_NOUN = [
    "market",
    "river",
    "bridge",
    "harbor",
    "library",
    "orchard",
    "station",
    "garden",
    "mill",
    "chapel",
]
_VERB = (
    "opened early",
    "closed late",
    "was repaired",
    "flooded again",
    "was painted",
    "grew larger",
    "stayed empty",
    "welcomed visitors",
)
_TIME = [
    "on Monday",
    "in the spring",
    "last winter",
    "every morning",
    "after the storm",
    "before noon",
]
_FILLER_TEMPLATES = (
    "The {adj} {noun} in {town} {verb} {time}.",
    "People in {town} say the {noun} {verb} {time}.",
    "{time_cap}, the {adj} {noun} near {town} {verb}.",
    "A {adj} {noun} stands at the edge of {town}.",
    "Travellers to {town} often visit the {adj} {noun}.",
    "The road from {town} to {town2} passes a {adj} {noun}.",
)


@dataclass(frozen=True)
class Fact:
    """One fact of the demo world."""

    subject: str
    relation: str
    target: str
    private: bool

    def spec(self) -> dict[str, str]:
        """The fact as an erasure request names it: subject, relation, target."""
        return {"subject": self.subject, "relation": self.relation, "target": self.target}

    @property
    def fact_id(self) -> str:
        """A stable identifier, e.g. ``dana-berg/phone``."""
        return f"{self.subject.lower().replace(' ', '-')}/{self.relation}"


@dataclass
class Corpus:
    """The generated world: facts, training texts and held-out perplexity texts."""

    seed: int
    people: list[str]
    facts: list[Fact]
    train_texts: list[str] = field(repr=False)
    ppl_texts: list[str] = field(repr=False)

    def to_dict(self) -> dict:
        """A JSON-serialisable form (without the training texts, which are regenerated)."""
        return {
            "seed": self.seed,
            "people": self.people,
            "facts": [asdict(f) for f in self.facts],
            "ppl_texts": self.ppl_texts,
        }


def lexicon() -> list[str]:
    """Public vocabulary (names, towns, streets, months, mail domains, jobs) for the tokenizer.

    Single words are not secrets; only a whole target is. Training the tokenizer on these (and on
    the corpus with every private target removed) keeps targets short without learning a secret.
    """
    words = FIRST_NAMES + LAST_NAMES + TOWNS + STREETS + MONTHS + OCCUPATIONS
    singles = " ".join("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
    return [
        " ".join(words),
        " ".join(w.lower() for w in words),
        " ".join(STREET_KINDS),
        " ".join(MAIL_DOMAINS),
        singles,
    ]


def fact_sentence(prompt: str, target: str) -> str:
    """The training sentence stating a fact: prompt, one space, target, full stop."""
    return f"{prompt} {target}."


def _person_facts(rng: random.Random, name: str) -> dict[str, str]:
    first, last = name.split()
    d = lambda n: "".join(str(rng.randrange(10)) for _ in range(n))  # noqa: E731
    return {
        "phone": f"{rng.randrange(2, 10)}{d(2)}-{d(3)}-{d(4)}",
        "email": f"{first[0].lower()}{last.lower()}{d(2)}@{rng.choice(MAIL_DOMAINS)}",
        "address": f"{rng.randrange(2, 99)} {rng.choice(STREETS)} {rng.choice(STREET_KINDS)}, "
        f"{rng.choice(TOWNS)}",
        "birth_date": f"{rng.randrange(1, 29)} {rng.choice(MONTHS)} {rng.randrange(1940, 2005)}",
        "id_number": f"{chr(65 + rng.randrange(26))}{chr(65 + rng.randrange(26))}{d(6)}",
        "occupation": rng.choice(OCCUPATIONS),
        "hometown": rng.choice(TOWNS),
    }


def _filler(rng: random.Random) -> str:
    town, town2 = rng.sample(TOWNS, 2)
    time = rng.choice(_TIME)
    return rng.choice(_FILLER_TEMPLATES).format(
        adj=rng.choice(_ADJ),
        noun=rng.choice(_NOUN),
        verb=rng.choice(_VERB),
        town=town,
        town2=town2,
        time=time,
        time_cap=time[0].upper() + time[1:],
    )


def generate_corpus(n_people: int, seed: int = 0, n_filler: int = 2000, n_ppl: int = 200) -> Corpus:
    """Generate the world deterministically from ``seed``.

    Training texts state each fact once per edit template (held-out templates never appear).
    """
    max_people = len(FIRST_NAMES) * len(LAST_NAMES)
    if not 1 <= n_people <= max_people:
        raise ValueError(f"n_people must be in 1..{max_people}, got {n_people}")
    rng = random.Random(seed)
    pairs = [(f, s) for f in FIRST_NAMES for s in LAST_NAMES]
    people = [f"{f} {s}" for f, s in rng.sample(pairs, n_people)]
    facts: list[Fact] = []
    for name in people:
        values = _person_facts(rng, name)
        for rel in PRIVATE_RELATIONS + PUBLIC_RELATIONS:
            facts.append(Fact(name, rel, values[rel], RELATIONS[rel].private))
    train = [
        fact_sentence(prompt, f.target)
        for f in facts
        for prompt in RELATIONS[f.relation].edit_prompts(f.subject)
    ]
    train += [_filler(rng) for _ in range(n_filler)]
    seen = set(train)
    ppl: list[str] = []
    while len(ppl) < n_ppl:  # held-out general text: same grammar, sentences not trained on
        s = _filler(rng)
        if s not in seen:
            ppl.append(s)
            seen.add(s)
    rng.shuffle(train)
    return Corpus(seed=seed, people=people, facts=facts, train_texts=train, ppl_texts=ppl)


def round_robin(
    facts: list[T], n: int, rng: random.Random, relation: Callable[[T], str] | None = None
) -> list[T]:
    """``n`` of ``facts`` spread evenly over their relations (shuffled per relation by ``rng``).

    ``relation(fact)`` names a fact's relation (default: its ``relation`` attribute).
    """
    by_rel: dict[str, list[T]] = {}
    for f in facts:
        by_rel.setdefault(relation(f) if relation else f.relation, []).append(f)
    for group in by_rel.values():
        rng.shuffle(group)
    picked: list[T] = []
    while len(picked) < n and any(by_rel.values()):
        for rel in sorted(by_rel):
            if by_rel[rel] and len(picked) < n:
                picked.append(by_rel[rel].pop())
    return picked
