"""Erasure methods: one module each, one interface, one registry.

A method erases one fact at a time from a loaded model (then, optionally, finishes the request
with a step over all its facts, :func:`~editing.methods.base.finish_request`): it locates units,
then changes the down-projection weights in place (inside the caller's
:class:`editing.edits.WeightSession`, which diffs and restores them) or, for inference-time
methods, returns an intervention. A method is a params class (:mod:`editing.methods.params`),
an implementation of :class:`~editing.methods.base.Method`, and one :func:`register_method` call
(:mod:`editing.methods.registry`). Importing this package does not import torch: implementations
load when :func:`get_method` first builds them.
"""

from __future__ import annotations

from editing.methods.base import FactCase, FactOutcome, Method, RequestFinish, finish_request
from editing.methods.params import (
    FeatureEditParams,
    MethodParams,
    NeuronLensParams,
    NeuronParams,
    SaeParams,
)
from editing.methods.registry import (
    MethodSpec,
    get_method,
    method_names,
    method_spec,
    register_method,
)

__all__ = [
    "FactCase",
    "FactOutcome",
    "FeatureEditParams",
    "Method",
    "MethodParams",
    "MethodSpec",
    "NeuronLensParams",
    "NeuronParams",
    "RequestFinish",
    "SaeParams",
    "finish_request",
    "get_method",
    "method_names",
    "method_spec",
    "register_method",
]
