"""Tests of the model registry (editing.registry) and of loading its entries (editing.models)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from editing.errors import (
    ConfigError,
    EditingError,
    NotFoundError,
    SAEMismatchError,
    UnknownModelError,
)
from editing.models import load_model
from editing.registry import DEFAULT_EVAL_SIZE, DEMO_MODELS, EvalSize, get_entry, load_registry


def _write_registry(home: Path, text: str) -> Path:
    home.mkdir(parents=True, exist_ok=True)
    path = home / "models.toml"
    path.write_text(text)
    return path


def _random_sae_dir(directory: Path, d_in: int, d_sae: int, hook: str) -> None:
    from editing.world.sae_train import TrainedSAE, save_sae_lens

    g = torch.Generator().manual_seed(0)
    sae = TrainedSAE(
        W_enc=torch.randn(d_in, d_sae, generator=g),
        b_enc=torch.zeros(d_sae),
        W_dec=torch.randn(d_sae, d_in, generator=g),
        b_dec=torch.zeros(d_in),
        k=4,
    )
    save_sae_lens(sae, directory, hook, "test")


def test_builtin_demo_entries(tmp_path: Path) -> None:
    entries = load_registry(tmp_path)
    assert set(DEMO_MODELS) <= set(entries)
    small = entries["demo-small"]
    assert small.is_demo and small.demo_size == "small"
    assert set(small.saes) == {"resid_post", "mlp_out"}
    assert small.public_dict()["saes"]["resid_post"]["layers"] == [0, 1]


def test_unknown_model_lists_registered_ids(tmp_path: Path) -> None:
    with pytest.raises(UnknownModelError) as info:
        get_entry("no-such-model", tmp_path)
    message = str(info.value)
    assert "'no-such-model'" in message
    assert "'demo'" in message and "'demo-small'" in message
    assert "models.toml" in message  # how to fix
    assert isinstance(info.value, ConfigError | KeyError | EditingError)
    assert not message.startswith('"')  # not KeyError's quoted repr


def test_local_directory_is_an_adhoc_entry(tmp_path: Path) -> None:
    entry = get_entry(str(tmp_path), tmp_path)
    assert entry.path == str(tmp_path)
    assert not entry.is_demo


def test_toml_entry_with_local_path_and_sae_pattern(tmp_path: Path) -> None:
    _write_registry(
        tmp_path,
        """
[models.tiny]
path = "/models/tiny"
dtype = "bfloat16"
device = "cpu"
control_subjects = ["Alice Example"]

[models.tiny.saes.resid_post]
path = "/saes/tiny/res/layer_{layer}"
layers = [0, 2]

[models.hubbed]
hub_id = "org/hubbed"

[models.hubbed.saes.mlp_out]
release = "some-release"
sae_id = "layer_{layer}/width_16k"
layers = [1]
""",
    )
    entries = load_registry(tmp_path)
    tiny = entries["tiny"]
    assert tiny.path == "/models/tiny" and tiny.dtype == "bfloat16" and tiny.device == "cpu"
    assert tiny.control_subjects == ("Alice Example",)
    src = tiny.sae_source("resid_post")
    assert src.layers == (0, 2)
    assert src.describe(2) == "/saes/tiny/res/layer_2"
    assert tiny.public_dict() == {
        "model_id": "tiny",
        "source": "/models/tiny",
        "dtype": "bfloat16",
        "device": "cpu",
        "saes": {"resid_post": {"layers": [0, 2]}},
    }
    hubbed = entries["hubbed"]
    assert hubbed.hub_id == "org/hubbed" and hubbed.dtype == "float32"
    assert "layer_1/width_16k" in hubbed.sae_source("mlp_out").describe(1)
    assert set(DEMO_MODELS) <= set(entries)  # built-ins stay


def test_registry_env_var(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "elsewhere.toml"
    path.write_text('[models.viaenv]\npath = "/m"\n')
    monkeypatch.setenv("FEATUREEDIT_REGISTRY", str(path))
    assert "viaenv" in load_registry(tmp_path / "home")
    monkeypatch.setenv("FEATUREEDIT_REGISTRY", str(tmp_path / "missing.toml"))
    with pytest.raises(NotFoundError, match="FEATUREEDIT_REGISTRY"):
        load_registry(tmp_path / "home")


@pytest.mark.parametrize(
    ("toml", "match"),
    [
        ('[models.x]\npath = "/m"\nweights = "/w"\n', r"unknown keys \['weights'\].*valid keys"),
        ('[models.x]\ndtype = "float32"\n', "needs 'path' or 'hub_id'"),
        ('[models.x]\npath = "/m"\ndtype = "float8"\n', "Invalid dtype 'float8'"),
        ('[models.x]\npath = "/m"\n[models.x.saes.resid_post]\nlayers = [0]\n', "need 'path'"),
        ('[models.demo]\npath = "/m"\n', "built-in model id"),
        ("[models.x\n", "not valid TOML"),
    ],
)
def test_bad_registry_is_a_config_error(tmp_path: Path, toml: str, match: str) -> None:
    _write_registry(tmp_path, toml)
    with pytest.raises(ConfigError, match=match):
        load_registry(tmp_path)


def test_evaluation_size_defaults_to_200_prompts(tmp_path: Path) -> None:
    assert DEFAULT_EVAL_SIZE.astuple() == (60, 40, 2) and DEFAULT_EVAL_SIZE.max_prompts == 200
    entries = load_registry(tmp_path)
    assert entries["demo"].evaluation is None and entries["demo-small"].evaluation is None


def test_evaluation_table_on_a_model_and_on_a_builtin_demo_id(tmp_path: Path) -> None:
    _write_registry(
        tmp_path,
        """
[models.tiny]
path = "/models/tiny"
[models.tiny.evaluation]
locality_private_facts = 300
locality_prompts_per_fact = 4

[models.demo-small.evaluation]
locality_public_facts = 10
""",
    )
    entries = load_registry(tmp_path)
    assert entries["tiny"].evaluation == EvalSize(300, 40, 4)  # missing keys keep the defaults
    assert entries["tiny"].evaluation.to_dict() == {
        "locality_private_facts": 300,
        "locality_public_facts": 40,
        "locality_prompts_per_fact": 4,
    }
    small = entries["demo-small"]
    assert small.is_demo and small.evaluation == EvalSize(60, 10, 2)
    assert set(small.saes) == {"resid_post", "mlp_out"}  # the rest of the built-in entry stays


@pytest.mark.parametrize(
    ("table", "match"),
    [
        ("locality_private_facts = 0", r"locality_private_facts must be a positive integer, got 0"),
        ("locality_public_facts = -3", "locality_public_facts must be a positive integer"),
        ("locality_prompts_per_fact = 1.5", "must be a positive integer, got 1.5"),
        ('locality_private_facts = "60"', "must be a positive integer, got '60'"),
        ("locality_private_facts = true", "must be a positive integer, got True"),
        ("locality_facts = 60", r"unknown keys \['locality_facts'\]; valid keys"),
    ],
)
def test_bad_evaluation_table_is_a_config_error(tmp_path: Path, table: str, match: str) -> None:
    _write_registry(tmp_path, f'[models.x]\npath = "/m"\n[models.x.evaluation]\n{table}\n')
    with pytest.raises(ConfigError, match=match) as info:
        load_registry(tmp_path)
    assert "[models.x.evaluation]" in str(info.value)  # where to fix it


def test_evaluation_must_be_a_table(tmp_path: Path) -> None:
    _write_registry(tmp_path, '[models.x]\npath = "/m"\nevaluation = 200\n')
    with pytest.raises(ConfigError, match="expected a table"):
        load_registry(tmp_path)


def test_builtin_demo_id_takes_only_the_evaluation_and_params_tables(tmp_path: Path) -> None:
    _write_registry(tmp_path, '[models.demo]\ndtype = "bfloat16"\n[models.demo.evaluation]\n')
    with pytest.raises(
        ConfigError, match=r"built-in model id.*only \[models.demo.evaluation\] and"
    ):
        load_registry(tmp_path)


def test_evalsize_checks_its_values() -> None:
    with pytest.raises(ConfigError, match="locality_prompts_per_fact must be a positive integer"):
        EvalSize(60, 40, 0)
    size = EvalSize(60, 40, 2).with_overrides(
        {"locality_public_facts": 5, "locality_private_facts": None}, "env"
    )
    assert size == EvalSize(60, 5, 2)
    with pytest.raises(ConfigError, match="env: locality_public_facts"):
        DEFAULT_EVAL_SIZE.with_overrides({"locality_public_facts": 0}, "env")


def test_missing_sae_site_lists_sites(tmp_path: Path) -> None:
    entry = load_registry(tmp_path)["demo-small"]
    with pytest.raises(ConfigError, match=r"sites with SAEs: \['mlp_out', 'resid_post'\]"):
        entry.sae_source("neurons")


def test_load_model_missing_path(tmp_path: Path) -> None:
    _write_registry(tmp_path, f'[models.gone]\npath = "{tmp_path / "nowhere"}"\n')
    with pytest.raises(NotFoundError, match="does not exist"):
        load_model("gone", home=tmp_path)


def test_load_model_hub_id_not_in_local_cache(tmp_path: Path) -> None:
    _write_registry(tmp_path, '[models.remote]\nhub_id = "featureedit-test/not-a-real-model"\n')
    with pytest.raises(NotFoundError, match="not available offline"):
        load_model("remote", home=tmp_path)


@pytest.fixture
def local_entry_home(small_world, tmp_path: Path) -> Path:
    """A home whose registry points a local entry at the small world's model and SAE dirs."""
    d_model = small_world.recipe["lm"]["d_model"]
    _random_sae_dir(tmp_path / "wrong" / "layer_0", d_model + 3, 16, "blocks.0.hook_resid_post")
    _write_registry(
        tmp_path / "home",
        f"""
[models.local]
path = "{small_world.model_dir}"

[models.local.saes.resid_post]
path = "{small_world.root}/saes/resid_post/layer_{{layer}}"
layers = [0, 1]

[models.local.saes.mlp_out]
path = "{tmp_path}/wrong/layer_{{layer}}"
layers = [0, 1]
""",
    )
    return tmp_path / "home"


def test_local_entry_loads_model_and_saes(local_entry_home: Path, small_model) -> None:
    loaded = load_model("local", home=local_entry_home)
    assert loaded.source_dir == small_model.source_dir
    assert loaded.sae_layers("resid_post") == [0, 1]
    sae = loaded.sae("resid_post", 1)
    assert sae.cfg.d_in == loaded.adapter.site_dim("resid_post")
    assert loaded.sae("resid_post", 1) is sae  # cached on the loaded model


def test_sae_with_wrong_d_in(local_entry_home: Path) -> None:
    loaded = load_model("local", home=local_entry_home)
    with pytest.raises(SAEMismatchError, match=r"d_in=\d+ but 'mlp_out'"):
        loaded.sae("mlp_out", 0)


def test_sae_directory_missing(local_entry_home: Path) -> None:
    loaded = load_model("local", home=local_entry_home)
    with pytest.raises(NotFoundError, match=r"cfg\.json is missing"):
        loaded.sae("mlp_out", 1)  # layer 1 is registered but its directory does not exist


def test_sae_layer_not_registered(small_model) -> None:
    with pytest.raises(ConfigError):
        small_model.sae("resid_post", 7)  # the model has 2 layers
    with pytest.raises(ConfigError, match="sites with SAEs"):
        small_model.sae("neurons", 0)
