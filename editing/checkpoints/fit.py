"""Whether an edit fits a weight: structure checks and the before-write check of every layer."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from editing.edits import Edit, LayerDelta, region, tensor_sha256
from editing.errors import ConfigError

AXES = ("rows", "cols", "dense")


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.float32`` -> ``"float32"``."""
    return str(dtype).removeprefix("torch.")


def structure_problem(
    axis: str,
    indices: torch.Tensor,
    values: torch.Tensor,
    weight_shape: tuple[int, ...] | None = None,
) -> str | None:
    """What is inconsistent in a delta's indices and values (or with a canonical weight)."""
    if axis not in AXES:
        return f"axis is {axis!r}; expected one of {', '.join(AXES)}"
    if indices.dtype != torch.long or indices.dim() != 1:
        return f"indices must be a 1-D int64 tensor; found {indices.dtype} {list(indices.shape)}"
    if values.dim() != 2:
        return f"values must be 2-D; found shape {list(values.shape)}"
    n = len(indices)
    if axis == "dense" and n:
        return f"a dense delta has no indices; found {n}"
    if axis != "dense" and len(torch.unique(indices)) != n:
        return "indices contain duplicates"
    if axis == "dense":
        if weight_shape is not None and tuple(values.shape) != weight_shape:
            return f"dense values of shape {list(values.shape)}; the weight is {list(weight_shape)}"
        return None
    dim = 0 if axis == "rows" else 1
    if values.shape[dim] != n:
        return f"{n} {axis} indices but values of shape {list(values.shape)}"
    if weight_shape is None:
        return None
    other = 1 - dim
    if values.shape[other] != weight_shape[other]:
        return (
            f"values of shape {list(values.shape)} do not fit a canonical weight of shape "
            f"{list(weight_shape)}"
        )
    if n and (int(indices.min()) < 0 or int(indices.max()) >= weight_shape[dim]):
        return (
            f"{axis} indices must lie in 0..{weight_shape[dim] - 1}; found "
            f"{int(indices.min())}..{int(indices.max())}"
        )
    return None


def delta_problem(d: LayerDelta, weight_shape: tuple[int, ...] | None = None) -> str | None:
    """What is inconsistent in a full delta (old and new values), if anything."""
    if d.old.shape != d.new.shape or d.old.dtype != d.new.dtype:
        return (
            f"old and new values differ in shape or dtype: {dtype_name(d.old.dtype)} "
            f"{list(d.old.shape)} vs {dtype_name(d.new.dtype)} {list(d.new.shape)}"
        )
    return structure_problem(d.axis, d.indices, d.old, weight_shape)


def check_unique_layers(layers: list[int]) -> None:
    """ConfigError if a layer appears twice (deltas of one layer must be combined)."""
    if len(set(layers)) != len(layers):
        raise ConfigError(
            f"The edit has several deltas for one layer (layers {layers}); combine them."
        )


def check_fits(edit: Edit, canonical: Mapping[int, torch.Tensor], revert: bool, where: str) -> None:
    """Raise ConfigError unless every delta fits and finds the values it expects (old, or new if
    ``revert``). Checks all layers before anything is written, so a misfit changes nothing."""
    check_unique_layers([d.layer for d in edit.deltas])
    for d in edit.deltas:
        weight = canonical[d.layer]
        label = f"{where}: layer {d.layer} ({d.param})"
        problem = delta_problem(d, tuple(weight.shape))
        if problem:
            raise ConfigError(f"Edit does not fit {label}: {problem}.")
        expected, other = (d.new, d.old) if revert else (d.old, d.new)
        if weight.dtype != expected.dtype:
            raise ConfigError(
                f"Edit does not fit {label}: the edit holds {dtype_name(expected.dtype)} values "
                f"but the weight is {dtype_name(weight.dtype)}. Load the model in the dtype the "
                "edit was made in."
            )
        found = tensor_sha256(region(weight, d.axis, d.indices))
        if found == tensor_sha256(expected):
            continue
        if found == tensor_sha256(other):
            state = "already reverted" if revert else "already applied"
            raise ConfigError(f"Edit does not fit {label}: the edit is {state} there.")
        if revert:
            want, fix = "edited values", "Revert it on the model it was applied to"
        else:
            want, fix = "values the edit was made from", "Apply it to its base model"
        raise ConfigError(f"Edit does not fit {label}: the weight does not hold the {want}. {fix}.")


class CanonicalWeights:
    """Duck-typed stand-in for ModelAdapter over loaded state-dict tensors (canonical views)."""

    def __init__(self, canonical: Mapping[int, torch.Tensor]) -> None:
        self._canonical = canonical

    def down_proj_weight(self, layer: int) -> torch.Tensor:
        """The canonical ``[d_model, d_mlp]`` view of ``layer``'s down-projection."""
        return self._canonical[layer]
