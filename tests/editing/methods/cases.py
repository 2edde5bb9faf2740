"""The shared table of method cases: every registered method has at least one row.

``METHOD_CASES`` parametrizes the engine's promises (``test_methods.py``) and the params checks
(``test_method_registry.py``). Adding a method = one row here (the registry test fails until
then).
"""

from __future__ import annotations

import pytest

METHOD_CASES = [
    pytest.param("featureedit", {}, id="featureedit-default"),
    pytest.param(
        "featureedit",
        {"selector": "activation", "variant": "rows", "gamma": 0.3},
        id="featureedit-paper-rows",
    ),
    pytest.param("featureedit", {"variant": "project"}, id="featureedit-project"),
    pytest.param("featureedit", {"site": "mlp_out"}, id="featureedit-mlp-out"),
    pytest.param("featureedit", {"positions": "subject"}, id="featureedit-subject"),
    pytest.param("neurons", {"ig_steps": 8}, id="neurons"),
    pytest.param("neuronlens", {"ig_steps": 8}, id="neuronlens"),
]

# A parameter each method does not take (another method's), and the error must name its fields.
FOREIGN_PARAM = {"featureedit": "ig_steps", "neurons": "tau1", "neuronlens": "site"}
