"""A model's own method defaults (registry ``[models.<id>.params.<method>]``, issue #14): parsed
and validated with the registry, written by ``register_model``, applied to a request's unset
parameters by the engine and the bench (a request's own values win), kept unset through the
service's encrypted request blob."""

from __future__ import annotations

import tomllib
from dataclasses import replace
from pathlib import Path

import pytest

from editing.errors import ConfigError
from editing.registry import load_registry, register_model
from editing.request import ErasureRequest, with_model_params

SMALL_DEFAULTS = {"featureedit": {"max_features": 1, "relocate_rounds": 0, "gamma": 0.5}}


def _registry(home: Path, text: str) -> None:
    home.mkdir(parents=True, exist_ok=True)
    (home / "models.toml").write_text(text)


def _request(params: dict) -> ErasureRequest:
    return ErasureRequest(
        model="demo-small",
        facts=[{"subject": "Dana Berg", "relation": "phone", "target": "0451 338 912"}],
        params=params,
    )


def test_params_tables_on_a_model_and_on_a_builtin_demo_id(tmp_path: Path) -> None:
    _registry(
        tmp_path,
        """
[models.tiny]
path = "/models/tiny"
[models.tiny.params.featureedit]
refine = "flatten"
layers = [4, 6]
[models.tiny.params.neurons]
neuron_cap = 5

[models.demo-small.params.featureedit]
max_features = 3
""",
    )
    entries = load_registry(tmp_path)
    assert entries["tiny"].method_defaults("featureedit") == {"refine": "flatten", "layers": [4, 6]}
    assert entries["tiny"].method_defaults("neurons") == {"neuron_cap": 5}
    assert entries["tiny"].method_defaults("neuronlens") == {}
    small = entries["demo-small"]
    assert small.is_demo and small.method_defaults("featureedit") == {"max_features": 3}
    assert entries["demo"].method_defaults("featureedit") == {}


@pytest.mark.parametrize(
    ("table", "match"),
    [
        ("[models.x.params.featureedit]\nrefine = 'sharpen'", r"params.featureedit\]: invalid"),
        ("[models.x.params.featureedit]\nmax_features = 0", "max_features"),
        ("[models.x.params.featureedit]\nno_such_knob = 1", "no_such_knob"),
        ("[models.x.params.magic]\nx = 1", r"params.magic\]: Unknown method 'magic'"),
        ("[models.x.params]\nfeatureedit = 3", "must be a table of parameter values"),
    ],
)
def test_bad_params_table_is_a_config_error(tmp_path: Path, table: str, match: str) -> None:
    _registry(tmp_path, f'[models.x]\npath = "/m"\n{table}\n')
    with pytest.raises(ConfigError, match=match):
        load_registry(tmp_path)


def test_register_model_writes_params_and_adds_only_missing_ones(tmp_path: Path) -> None:
    target = tmp_path / "models" / "m"
    file, changed = register_model("m", target, "float32", tmp_path, {"featureedit": {"rho": 0.5}})
    assert changed
    assert tomllib.loads(file.read_text())["models"]["m"]["params"] == {"featureedit": {"rho": 0.5}}
    # an operator's own table is never replaced; a method's table the entry lacks is added
    file.write_text(file.read_text().replace("rho = 0.5", "rho = 0.7"))
    again = {"featureedit": {"rho": 0.5}, "neurons": {"neuron_cap": 4}}
    assert register_model("m", target, "float32", tmp_path, again) == (file, True)
    entry = load_registry(tmp_path)["m"]
    assert entry.method_params == {"featureedit": {"rho": 0.7}, "neurons": {"neuron_cap": 4}}
    assert register_model("m", target, "float32", tmp_path, again) == (file, False)
    with pytest.raises(ConfigError, match="max_features"):
        register_model("n", target, "float32", tmp_path, {"featureedit": {"max_features": 0}})
    assert "n" not in load_registry(tmp_path)  # nothing written for a refused table


def test_request_values_win_over_model_defaults() -> None:
    defaults = {"max_features": 4, "gamma": 0.5}
    req = with_model_params(_request({"max_features": 9}), defaults)
    assert req.params.max_features == 9  # the request's own value
    assert req.params.gamma == 0.5  # the model's default
    assert req.params.rho == 0.8  # neither: the params class's default
    assert with_model_params(req, defaults).params == req.params  # idempotent
    plain = _request({})
    assert with_model_params(plain, {}) is plain


def test_encrypted_request_keeps_params_unset(tmp_path: Path, monkeypatch) -> None:
    """The worker resolves the stored request against the model's defaults: a field the client
    did not send must not come back as set to the class's default."""
    from service.security import decrypt_request, encrypt_request

    monkeypatch.delenv("FEATUREEDIT_SECRET_KEY", raising=False)
    back = decrypt_request(encrypt_request(_request({"rho": 0.6}), home=tmp_path), home=tmp_path)
    resolved = with_model_params(back, {"rho": 0.9, "max_features": 4}).params
    assert (resolved.rho, resolved.max_features) == (0.6, 4)


def test_engine_and_bench_use_the_model_defaults(small_model, erasable_fact, monkeypatch) -> None:
    """On the small world: with ``max_features = 1`` as the model's default the erasure edits at
    most one feature and reports the parameters it used; a request's own value wins."""
    from editing.bench import run_bench
    from editing.erase import run_erasure

    monkeypatch.setattr(
        small_model, "entry", replace(small_model.entry, method_params=SMALL_DEFAULTS)
    )
    spec = erasable_fact.spec()
    capped = run_erasure(
        ErasureRequest(model="demo-small", facts=[spec]), small_model, leak_samples=0
    )
    assert capped.params["max_features"] == 1 and capped.params["gamma"] == 0.5
    assert len(capped.facts[0].units) <= 1
    own = run_erasure(
        ErasureRequest(
            model="demo-small", facts=[spec], params={"max_features": 32, "refine": "none"}
        ),
        small_model,
        leak_samples=0,
    )
    assert own.params["max_features"] == 32 and own.params["gamma"] == 0.5
    assert len(own.facts[0].units) > 1  # the fact needs more than one feature at these settings
    doc = run_bench(small_model, 1, methods=("featureedit",), leak_samples=0)
    assert doc["params"]["featureedit"]["max_features"] == 1
    assert doc["summary"]["featureedit"]["units"]["mean"] <= 1


def test_api_checks_the_sae_layers_of_the_model_defaults() -> None:
    """A request that leaves ``layers`` to the model is refused at the API if the model's own
    default layers have no SAE (not later, in the worker)."""
    from editing.registry import ModelEntry, SAESource
    from service.catalog import method_problem

    entry = ModelEntry(
        model_id="demo-small",
        path="/m",
        saes={"resid_post": SAESource("resid_post", (0, 1))},
        method_params={"featureedit": {"layers": [5]}},
    )
    loc, message = method_problem(entry, _request({}))
    assert loc == ["body", "params", "layers"] and "[5]" in message
    assert method_problem(entry, _request({"layers": [1]})) is None
