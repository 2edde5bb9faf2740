"""The method registry: torch-free, one registration per name, params validated per method.

The toy method (``toy_method.py``: a params class and an implementation) shows that adding a
method is one module and one :func:`register_method` call: it runs through ``run_erasure``.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from pydantic import ValidationError

from editing.checkpoints import down_proj_sha256
from editing.errors import ConfigError
from editing.methods import (
    FeatureEditParams,
    MethodParams,
    NeuronParams,
    get_method,
    method_names,
    method_spec,
    register_method,
    registry,
)
from editing.request import STRICT, ErasureRequest, validation_summary
from tests.editing.methods.cases import FOREIGN_PARAM, METHOD_CASES
from tests.editing.methods.toy_method import ToyMethod, ToyParams

FACT = {"subject": "Dana Berg", "relation": "phone", "target": "415-555-0199"}


@pytest.fixture
def scratch_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Registrations made in the test are dropped afterwards."""
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))


def test_registry_imports_without_torch() -> None:
    code = (
        "import sys, editing.methods, editing.methods.registry, editing.request\n"
        "assert 'torch' not in sys.modules, 'the method registry imported torch'\n"
        "print(editing.methods.method_names())"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["['featureedit',", "'neurons',", "'neuronlens']"]


def test_every_method_has_a_row_in_the_shared_table() -> None:
    assert {case.values[0] for case in METHOD_CASES} == set(method_names())
    assert set(FOREIGN_PARAM) == set(method_names())


def test_builtin_specs() -> None:
    assert [
        (n, method_spec(n).needs_sae, method_spec(n).produces_checkpoint) for n in method_names()
    ] == [
        ("featureedit", True, True),
        ("neurons", False, True),
        ("neuronlens", False, False),
    ]
    assert all(method_spec(n).description for n in method_names())


def test_registering_a_name_twice_fails(scratch_registry: None) -> None:
    fe = method_spec("featureedit")
    with pytest.raises(ConfigError, match="'featureedit' is already registered"):
        register_method(
            fe.name,
            fe.params_cls,
            needs_sae=fe.needs_sae,
            produces_checkpoint=fe.produces_checkpoint,
            impl=fe.impl,
        )
    register_method("toy", ToyParams, needs_sae=False, produces_checkpoint=True, impl="m:C")
    with pytest.raises(ConfigError, match="already registered"):
        register_method("toy", ToyParams, needs_sae=False, produces_checkpoint=True, impl="m:C")


@pytest.mark.parametrize(
    ("name", "params_cls", "needs_sae", "impl", "expected"),
    [
        ("Toy Method", ToyParams, False, "m:C", "name 'Toy Method' is invalid"),
        ("toy", dict, False, "m:C", "must subclass MethodParams"),
        ("toy", ToyParams, True, "m:C", "must subclass SaeParams"),
        ("toy", ToyParams, False, "m.C", "impl must look like"),
    ],
)
def test_invalid_registrations_are_explained(
    scratch_registry: None, name, params_cls, needs_sae: bool, impl: str, expected: str
) -> None:
    with pytest.raises(ConfigError, match=expected):
        register_method(name, params_cls, needs_sae=needs_sae, produces_checkpoint=True, impl=impl)
    assert name not in method_names()


def test_unknown_method_and_wrong_params_class() -> None:
    with pytest.raises(ConfigError, match="available methods are"):
        get_method("rome", MethodParams())
    with pytest.raises(ConfigError, match="takes NeuronParams, got FeatureEditParams"):
        get_method("neurons", FeatureEditParams())
    with pytest.raises(ValidationError) as info:
        ErasureRequest(method="rome", facts=[FACT], params={"tau1": 0.3})
    assert validation_summary(info.value) == (
        "method: unknown method; available methods are featureedit, neurons, neuronlens"
    )


def test_an_unimportable_impl_is_explained(scratch_registry: None) -> None:
    register_method(
        "ghost", ToyParams, needs_sae=False, produces_checkpoint=True, impl="nowhere.at_all:Ghost"
    )
    with pytest.raises(ConfigError, match=r"'nowhere\.at_all:Ghost', which cannot be imported"):
        get_method("ghost", ToyParams())


@pytest.mark.parametrize(("method", "params"), METHOD_CASES)
def test_params_are_the_methods_class(method: str, params: dict) -> None:
    request = ErasureRequest(method=method, facts=[FACT], params=params)
    assert type(request.params) is method_spec(method).params_cls
    dumped = request.model_dump()["params"]
    assert dumped == {**method_spec(method).params_cls().model_dump(), **params}
    assert ErasureRequest.model_validate(request.model_dump()).params == request.params


@pytest.mark.parametrize("method", list(FOREIGN_PARAM))
def test_a_foreign_param_names_the_methods_fields(method: str) -> None:
    foreign = FOREIGN_PARAM[method]
    with pytest.raises(ValidationError) as info:
        ErasureRequest(method=method, facts=[FACT], params={foreign: 1})
    fields = ", ".join(method_spec(method).params_cls.model_fields)
    assert validation_summary(info.value) == (
        f"params.{foreign}: not a parameter of the chosen method, whose parameters are: {fields}"
    )


def test_params_keep_their_own_validation_and_defaults() -> None:
    with pytest.raises(ValidationError) as info:
        ErasureRequest(method="neurons", facts=[FACT], params={"ig_steps": 1})
    assert (
        validation_summary(info.value)
        == "params.ig_steps: Input should be greater than or equal to 2"
    )
    assert ErasureRequest(facts=[FACT]).params == FeatureEditParams()
    assert ErasureRequest(method="neurons", facts=[FACT]).params == NeuronParams()
    # a params object of another method is re-validated as this method's (and refused)
    with pytest.raises(ValidationError, match="parameters are: layers, ig_steps"):
        ErasureRequest(method="neurons", facts=[FACT], params=FeatureEditParams(tau1=0.3))


def test_strict_context_reaches_the_params() -> None:
    body = {"facts": [FACT], "params": {"tau1": "0.3"}}
    assert ErasureRequest.model_validate(body).params.tau1 == 0.3
    with pytest.raises(ValidationError, match="tau1"):
        ErasureRequest.model_validate(body, strict=True, context=STRICT)


def test_json_schema_lists_methods_and_their_params() -> None:
    schema = ErasureRequest.model_json_schema()
    assert schema["properties"]["method"]["enum"] == method_names()
    options = schema["properties"]["params"]["anyOf"]
    assert [o["title"] for o in options] == [f"{n} params" for n in method_names()]
    assert "tau1" in options[0]["properties"] and "ig_steps" in options[1]["properties"]


def test_adding_a_method_is_one_module_and_one_registration(
    scratch_registry: None, small_model, erasable_fact
) -> None:
    from editing.erase import run_erasure

    register_method(
        "toy",
        ToyParams,
        needs_sae=False,
        produces_checkpoint=True,
        impl="tests.editing.methods.toy_method:ToyMethod",
        description="Zero one down-projection column.",
    )
    assert method_names()[-1] == "toy"
    with pytest.raises(ValidationError) as info:
        ErasureRequest(model="demo-small", method="toy", facts=[FACT], params={"tau1": 0.2})
    assert validation_summary(info.value).endswith("whose parameters are: layers, neuron")
    layer = small_model.adapter.n_layers - 1
    request = ErasureRequest(
        model="demo-small",
        method="toy",
        facts=[
            {
                "subject": erasable_fact.subject,
                "relation": erasable_fact.relation,
                "target": erasable_fact.target,
            }
        ],
        params={"neuron": 3, "layers": [layer]},
    )
    assert isinstance(get_method("toy", request.params), ToyMethod)
    before = down_proj_sha256(small_model.adapter)
    result = run_erasure(request, small_model)
    assert down_proj_sha256(small_model.adapter) == before
    assert result.method == "toy" and result.params == {"layers": [layer], "neuron": 3}
    assert result.status in {"succeeded", "rejected"}
    assert (result.facts[0].units[0].layer, result.facts[0].units[0].index) == (layer, 3)
    d_model = small_model.adapter.down_proj_weight(layer).shape[0]
    assert result.edit is not None and result.edit.entries_changed == d_model
    assert [(f["layer"], f["indices"]) for f in result.edit.footprint()] == [(layer, [3])]
