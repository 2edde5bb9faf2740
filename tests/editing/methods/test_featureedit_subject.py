"""FeatureEdit's ``positions="subject"`` (issue #14): features read at the last token of the
subject's occurrence in each prompt (ROME's subject position), controls at their own subject's.
Behaviour, not benchmark figures (docs/benchmarks.md, SmolLM2 section)."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from editing.erase import run_erasure
from editing.locate import _subject_columns, feature_evidence, subject_positions
from editing.methods.params import FeatureEditParams
from editing.relations import get_relation
from editing.request import ErasureRequest
from editing.scoring import encode_texts

SUBJECT = "Alex Morgan"
PROMPTS = [
    f"{SUBJECT}'s phone number is",  # the subject at the start
    f"The phone number of {SUBJECT} is",  # in the middle
    f"Records list the phone number of {SUBJECT}",  # at the very end
]


class _Wrapped:
    """The demo tokenizer behind a changed call (subclasses say how)."""

    is_fast = True

    def __init__(self, fast: Any) -> None:
        self._fast = fast
        self.all_special_ids = fast.all_special_ids


class _NoBos(_Wrapped):
    """The demo tokenizer without its BOS (as SmolLM2's): a prompt's first token is its sink."""

    def __call__(self, texts: Any, **kw: Any) -> Any:
        return self._fast(texts, **{**kw, "add_special_tokens": False})


class _SlowTokenizer(_Wrapped):
    """The demo tokenizer seen as a slow one: no offsets, so the prefix count is used."""

    is_fast = False

    def __call__(self, texts: Any, **kw: Any) -> Any:
        kw.pop("return_offsets_mapping", None)
        return self._fast(texts, **kw)


def _decoded_up_to(tok: Any, prompt: str, index: int) -> tuple[str, str]:
    """The prompt's tokens decoded up to and including ``index``, and up to it excluded."""
    ids = encode_texts(tok, [prompt])[0]
    return (
        tok.decode(ids[: index + 1], skip_special_tokens=True),
        tok.decode(ids[:index], skip_special_tokens=True),
    )


def test_positions_subject_is_a_parameter() -> None:
    assert FeatureEditParams(positions="subject").positions == "subject"
    with pytest.raises(ValueError):
        FeatureEditParams(positions="object")


def test_subject_position_is_the_subjects_last_token(small_model) -> None:
    """The token at the index completes the (multi-token) subject; the one before does not,
    wherever the subject stands; BOS (if the tokenizer adds one) is counted; the slow path
    (prefix count) agrees with the offsets."""
    tok = small_model.tokenizer
    assert len(tok(SUBJECT, add_special_tokens=False)["input_ids"]) > 1  # multi-token subject
    found = subject_positions(tok, PROMPTS, [[SUBJECT]] * len(PROMPTS))
    for prompt, index in zip(PROMPTS, found):
        assert index is not None
        upto, before = _decoded_up_to(tok, prompt, index)
        assert upto.rstrip().endswith(SUBJECT) or upto.rstrip().endswith(SUBJECT + "'s")
        assert SUBJECT not in before
    last = len(encode_texts(tok, [PROMPTS[2]])[0]) - 1
    assert found[2] == last  # a subject at the end is the last prompt token
    assert subject_positions(_SlowTokenizer(tok), PROMPTS, [[SUBJECT]] * 3) == found


def test_longest_candidate_wins_and_absent_subject_is_none(small_model) -> None:
    tok = small_model.tokenizer
    prompt = "The phone number of Alex Morgan is"
    (with_short,) = subject_positions(tok, [prompt], [["Alex", "Alex Morgan"]])
    (alone,) = subject_positions(tok, [prompt], [["Alex Morgan"]])
    assert with_short == alone
    assert subject_positions(tok, ["The phone number is"], [[SUBJECT]]) == [None]


def test_a_first_token_subject_without_bos_falls_back(small_model) -> None:
    """Without BOS a one-token subject opening the prompt is the attention sink (column 0):
    read at the last prompt token instead; a later one-token subject is read where it is."""
    tok = _NoBos(small_model.tokenizer)
    prompts = ["The phone number is", "Call The phone number"]
    assert len(tok(["The"])["input_ids"][0]) == 1
    later = len(tok(["Call The"])["input_ids"][0]) - 1
    assert subject_positions(tok, prompts, [["The"]] * 2) == [0, later]
    last = torch.tensor([len(ids) - 1 for ids in tok(prompts)["input_ids"]])
    assert _subject_columns(tok, prompts, [["The"]] * 2, last).tolist() == [int(last[0]), later]


def _evidence(small_model, prompts, **kw):
    layers = small_model.sae_layers("resid_post")
    return layers, feature_evidence(
        small_model, prompts, "555 0101", "resid_post", layers, objective="target", **kw
    )


def test_evidence_is_read_at_the_subject(small_model) -> None:
    """Activations at the subject's token depend only on the text up to it (causal model): two
    prompts sharing that prefix have the same ones, whatever follows; read at the last token
    they differ. A prompt without the subject is read at its last token."""
    prompts = [f"{SUBJECT}'s phone number is", f"{SUBJECT}'s home address reads"]
    layers, at_subject = _evidence(small_model, prompts, subject=SUBJECT)
    _, at_last = _evidence(small_model, prompts)
    for layer in layers:
        torch.testing.assert_close(at_subject.acts[layer][0], at_subject.acts[layer][1])
        assert not torch.equal(at_last.acts[layer][0], at_last.acts[layer][1])
    no_subject = ["The phone number is"]
    _, fallback = _evidence(small_model, no_subject, subject=SUBJECT)
    _, last = _evidence(small_model, no_subject)
    for layer in layers:
        torch.testing.assert_close(fallback.acts[layer], last.acts[layer])
        torch.testing.assert_close(fallback.attrib[layer], last.attrib[layer])


def test_controls_are_read_at_their_own_subject(small_model) -> None:
    """A control prompt is read at the last token of the control subject it names: its mean
    equals the evidence of that prompt read with that subject as its own."""
    controls = ["Bob Example's phone number is", "The phone number of Alice Example is"]
    names = ["Alice Example", "Bob Example"]
    layers, ev = _evidence(
        small_model, PROMPTS[:1], subject=SUBJECT, control_prompts=controls, control_subjects=names
    )
    own = [_evidence(small_model, [q], subject=s)[1] for q, s in zip(controls, names[::-1])]
    for layer in layers:
        expected = torch.stack([o.acts[layer][0] for o in own]).mean(0)
        torch.testing.assert_close(ev.control_mean[layer], expected)
    with pytest.raises(ValueError):
        _evidence(small_model, PROMPTS[:1], subject=SUBJECT, every_token=True)


@pytest.mark.parametrize(("refine", "drop"), [("none", 0.0), ("flatten", 0.5)])
def test_erasure_at_the_subject_lowers_the_target(
    small_model, erasable_fact, refine: str, drop: float
) -> None:
    """End to end: located at the subject's token, features are edited and P(target) goes
    down. On demo-small the projection alone lowers it only a little (by 7 % on the fixture's
    fact when this was written: the two-layer model recalls at the last token); with the
    default refinement by more than half."""
    fact = erasable_fact
    assert any(fact.subject in p for p in get_relation(fact.relation).edit_prompts(fact.subject))
    request = ErasureRequest(
        model="demo-small",
        method="featureedit",
        facts=[{"subject": fact.subject, "relation": fact.relation, "target": fact.target}],
        params={"positions": "subject", "refine": refine},
    )
    result = run_erasure(request, small_model, leak_samples=1)
    assert result.facts[0].units, "no feature located at the subject"
    assert result.metrics.delta_prob > drop
    assert result.params["positions"] == "subject"
