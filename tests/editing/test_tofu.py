"""The TOFU-style privacy scenario (editing.world.tofu_data, editing.world.tofu) on tiny inputs.

The fine-tune itself runs on the small demo world's 2-layer model registered as a plain model
(seconds); the SmolLM2 build is the slow test tests/e2e/test_tofu_e2e.py.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from editing.errors import ConfigError
from editing.evaldata import eval_data_for
from editing.registry import EvalSize, ModelEntry, load_registry, register_model
from editing.relations import PRIVATE_RELATIONS, RELATIONS
from editing.world.tofu_data import (
    TofuRecipe,
    batch_plan,
    control_people,
    fact_examples,
    locality_rows,
    registered_facts,
    tofu_facts,
)

TINY = TofuRecipe(n_people=2, steps=6, batch_size=4, knowledge_per_relation=1, from_layer=1)


def test_facts_are_the_first_people_private_relations() -> None:
    facts = tofu_facts(TofuRecipe(n_people=3))
    assert len({f.subject for f in facts}) == 3
    assert Counter(f.relation for f in facts) == dict.fromkeys(PRIVATE_RELATIONS, 3)
    assert tofu_facts(TofuRecipe(n_people=3)) == facts  # deterministic
    more = tofu_facts(TofuRecipe(n_people=4))
    assert facts == more[: len(facts)]  # a larger build adds people, keeps the first ones


def test_examples_use_edit_templates_only() -> None:
    facts = tofu_facts(TofuRecipe(n_people=2, relations=("phone", "email")))
    examples = fact_examples(facts)
    heldout = {p for f in facts for p in RELATIONS[f.relation].heldout_prompts(f.subject)}
    edit = {p for f in facts for p in RELATIONS[f.relation].edit_prompts(f.subject)}
    assert {p for p, _ in examples} == edit
    assert not heldout & {p for p, _ in examples}
    assert all(c.startswith(" ") and c.endswith(".") for _, c in examples)


def test_batch_plan_mixes_general_text_and_covers_every_fact_each_epoch() -> None:
    recipe = TofuRecipe(steps=10, batch_size=8, general_fraction=0.25)
    plan = batch_plan(recipe, n_facts=12, n_general=100)
    assert len(plan) == 10
    assert all(Counter(kind for kind, _ in b) == {"fact": 6, "general": 2} for b in plan)
    facts = [i for b in plan for kind, i in b if kind == "fact"]
    assert sorted(facts[:12]) == list(range(12))  # the first epoch sees every example once
    assert sorted(facts[12:24]) == list(range(12))
    only_facts = batch_plan(recipe, n_facts=12, n_general=0)
    assert all(len(b) == 8 and {k for k, _ in b} == {"fact"} for b in only_facts)
    with pytest.raises(ConfigError):
        batch_plan(recipe, 0, 0)


def test_cache_key_follows_base_weights_and_recipe() -> None:
    key = TofuRecipe().key("aa")
    assert key == TofuRecipe().key("aa")
    assert key != TofuRecipe().key("bb")
    assert key != TofuRecipe(steps=151).key("aa")
    assert key != TofuRecipe(n_people=9).key("aa")


@pytest.mark.parametrize(
    "bad",
    [
        {"n_people": 0},
        {"n_people": 161},
        {"relations": ("nope",)},
        {"relations": ()},
        {"trainable": "attention"},
        {"general_fraction": 1.0},
        {"steps": 0},
        {"from_layer": -1},
    ],
)
def test_bad_recipes_are_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        TofuRecipe(**bad)


def test_locality_rows_and_facts_file(tmp_path: Path) -> None:
    facts = tofu_facts(TofuRecipe(n_people=2))
    rows = locality_rows(facts, [("The capital of France is", "Paris")], prompts_per_fact=2)
    assert Counter(r["kind"] for r in rows) == {"private": 2 * len(facts), "public": 1}
    file = tmp_path / "facts.json"
    file.write_text(json.dumps([f.spec() for f in facts]))
    assert registered_facts(str(file)) == facts
    secret = "zq-777-0413"
    file.write_text(json.dumps([{"subject": "x", "relation": "nope", "target": secret}]))
    with pytest.raises(ConfigError) as err:
        registered_facts(str(file))
    assert secret not in str(err.value)  # the target is never echoed


def test_register_writes_facts_locality_controls_and_size(tmp_path: Path) -> None:
    extra = {"facts_file": "/f.json", "locality_file": "/l.jsonl", "control_subjects": ["A B"]}
    register_model(
        "m-tofu",
        tmp_path,
        "float32",
        tmp_path,
        extra=extra,
        evaluation={"locality_public_facts": 3},
    )
    entry = load_registry(tmp_path)["m-tofu"]
    assert (entry.facts_file, entry.locality_file) == ("/f.json", "/l.jsonl")
    assert entry.control_subjects == ("A B",)
    assert entry.evaluation == EvalSize(public_facts=3)


def test_locality_file_rows_about_the_request_subject_are_left_out(tmp_path: Path) -> None:
    facts = tofu_facts(TofuRecipe(n_people=3))
    path = tmp_path / "locality.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in locality_rows(facts, [])))
    entry = ModelEntry(model_id="m", path=str(tmp_path), locality_file=str(path))
    loaded: Any = SimpleNamespace(entry=entry, home=tmp_path)
    subject = facts[0].subject
    prompts = [p for p, _, _ in eval_data_for(loaded, {subject}).locality]
    assert len(prompts) == 2 * 2 * len(PRIVATE_RELATIONS)  # the other two people, 2 prompts
    assert not any(subject in p for p in prompts)


@pytest.fixture(scope="module")
def tofu_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A home of its own (the session's registry stays as other tests expect it)."""
    return tmp_path_factory.mktemp("tofu-home")


@pytest.fixture(scope="module")
def tiny_tofu(small_world: Any, tofu_home: Path) -> Any:
    """The small world's model registered as ``tiny-base`` and fine-tuned by :data:`TINY`."""
    from editing.world.tofu import build_tofu

    register_model("tiny-base", small_world.model_dir, "float32", tofu_home)
    return build_tofu("tiny-base", TINY, model_id="tiny-tofu", home=tofu_home)


def test_build_writes_registers_and_is_cached(tiny_tofu: Any, tofu_home: Path) -> None:
    from editing.world.tofu import build_tofu

    assert not tiny_tofu.cached
    assert (tiny_tofu.model_dir / "model.safetensors").is_file()
    entry = load_registry(tofu_home)["tiny-tofu"]
    assert Path(str(entry.path)) == tiny_tofu.model_dir
    assert registered_facts(str(entry.facts_file)) == tofu_facts(TINY)
    quality = tiny_tofu.doc["quality"]
    assert 0 <= quality["recall_edit"] <= 1 and 0 <= quality["recall_heldout"] <= 1
    before, after = quality["knowledge_before"], quality["knowledge_after"]
    assert before["probed_facts"] == after["probed_facts"] > 0
    assert before["perplexity_heldout_wikipedia"] != after["perplexity_heldout_wikipedia"]
    again = build_tofu("tiny-base", TINY, model_id="tiny-tofu", home=tofu_home)
    assert again.cached and again.root == tiny_tofu.root


def test_only_the_chosen_layers_mlps_change(tiny_tofu: Any, small_world: Any) -> None:
    from safetensors.torch import load_file

    base = load_file(str(small_world.model_dir / "model.safetensors"))
    tuned = load_file(str(tiny_tofu.model_dir / "model.safetensors"))
    changed = {k for k in base if not base[k].equal(tuned[k])}
    assert changed and all(k.startswith("model.layers.1.mlp.") for k in changed)


def test_bench_erases_the_fine_tuned_facts(tiny_tofu: Any, tofu_home: Path) -> None:
    from editing.bench import bench_facts
    from editing.models import load_model

    loaded = load_model("tiny-tofu", home=tofu_home)
    picked = bench_facts(loaded, 3)
    specs = [f.spec() for f in tofu_facts(TINY)]
    assert len(picked) == 3 and all(p in specs for p in picked)
    assert len({p["relation"] for p in picked}) == 3  # spread over the relations
    data = eval_data_for(loaded, {picked[0]["subject"]})
    assert {k for _, _, k in data.locality} <= {"private", "public"}
    assert not any(picked[0]["subject"] in p for p, _, _ in data.locality)


def test_a_demo_base_is_refused(fe_home: Path) -> None:
    from editing.world.tofu import build_tofu

    with pytest.raises(ConfigError, match="demo world"):
        build_tofu("demo-small", replace(TINY), home=fe_home)


def test_world_build_base_reuses_the_cached_build(
    tiny_tofu: Any, tofu_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from editing.cli import main

    recipe = ["--people", "2", "--steps", "6", "--batch-size", "4", "--knowledge-facts", "1"]
    build = ["world", "build", "--base", "tiny-base", "--model-id", "tiny-tofu"]
    recipe += ["--from-layer", "1"]
    code = main(["--home", str(tofu_home), "-q", *build, *recipe, "--json"])
    assert code == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["cached"] and doc["root"] == str(tiny_tofu.root)
    assert doc["quality"] == tiny_tofu.doc["quality"]


def test_controls_are_people_the_fine_tune_never_saw() -> None:
    """Controls are kept by the edit; the fine-tuned people are the Locality set's private rows."""
    recipe = TofuRecipe(n_people=3)
    tuned = {f.subject for f in tofu_facts(recipe)}
    controls = control_people(recipe, 4)
    assert len(set(controls)) == 4 and not tuned & set(controls)
    assert control_people(recipe, 4) == controls  # deterministic for the recipe


def test_cache_key_follows_the_training_dtype() -> None:
    assert TofuRecipe().key("aa", "float32") == TofuRecipe().key("aa")  # float32 keys unchanged
    assert TofuRecipe().key("aa", "bfloat16") != TofuRecipe().key("aa")


def test_float16_is_refused_before_loading(tiny_tofu: Any, tofu_home: Path) -> None:
    from editing.world.tofu import build_tofu

    with pytest.raises(ConfigError, match="float32 or bfloat16"):
        build_tofu("tiny-base", TINY, model_id="tiny-tofu-f16", home=tofu_home, dtype="float16")
    assert "tiny-tofu-f16" not in load_registry(tofu_home)


def test_dtype_is_trained_saved_and_registered(tiny_tofu: Any, tofu_home: Path) -> None:
    from safetensors.torch import load_file

    from editing.world.tofu import build_tofu

    bf16 = build_tofu(
        "tiny-base", TINY, model_id="tiny-tofu-bf16", home=tofu_home, dtype="bfloat16"
    )
    assert bf16.root != tiny_tofu.root and bf16.doc["dtype"] == "bfloat16"
    tensors = load_file(str(bf16.model_dir / "model.safetensors"))
    assert {str(t.dtype) for t in tensors.values()} == {"torch.bfloat16"}
    assert load_registry(tofu_home)["tiny-tofu-bf16"].dtype == "bfloat16"


def test_a_rebuilt_recipe_takes_over_its_id(
    tiny_tofu: Any, tofu_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Another recipe of the same base re-registers the id (SAE tables of the old weights go);
    the first build then takes it back the same way."""
    from editing.cli import main
    from editing.registry import register_saes

    register_saes("tiny-tofu", "resid_post", "/old/{layer}", [1], tofu_home)
    recipe = ["--people", "2", "--steps", "3", "--batch-size", "4", "--knowledge-facts", "1"]
    build = ["world", "build", "--base", "tiny-base", "--model-id", "tiny-tofu"]
    code = main(["--home", str(tofu_home), "-q", *build, *recipe, "--from-layer", "1", "--json"])
    assert code == 0
    captured = capsys.readouterr()
    doc = json.loads(captured.out)
    assert doc["replaced"] == str(tiny_tofu.model_dir) and doc["root"] != str(tiny_tofu.root)
    assert "earlier fine-tune of tiny-base" in captured.err
    entry = load_registry(tofu_home)["tiny-tofu"]
    assert entry.path == doc["model_dir"] and not entry.saes
    assert registered_facts(str(entry.facts_file)) == tofu_facts(TINY)
    from editing.world.tofu import build_tofu

    back = build_tofu("tiny-base", TINY, model_id="tiny-tofu", home=tofu_home)
    assert back.cached and back.replaced == doc["model_dir"]
    assert load_registry(tofu_home)["tiny-tofu"].path == str(tiny_tofu.model_dir)


def test_an_id_of_another_kind_of_model_is_refused(
    tiny_tofu: Any, small_world: Any, tofu_home: Path
) -> None:
    from editing.world.tofu import build_tofu

    register_model("tiny-other", small_world.model_dir, "float32", tofu_home)
    with pytest.raises(ConfigError, match="not a fine-tune of 'tiny-base'") as err:
        build_tofu("tiny-base", TINY, model_id="tiny-other", home=tofu_home)
    assert "--model-id" in str(err.value)
    assert load_registry(tofu_home)["tiny-other"].path == str(small_world.model_dir)
    register_model("tiny-base2", small_world.model_dir, "float32", tofu_home)
    with pytest.raises(ConfigError, match="not a fine-tune"):  # a fine-tune of another base
        build_tofu("tiny-base2", TINY, model_id="tiny-tofu", home=tofu_home)
    assert not list((tofu_home / "tofu").glob("tiny-base2-*"))  # refused before training
