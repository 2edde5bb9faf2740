"""Edits as values: exactly which down-projection entries change, applied and reverted bit-exactly.

An :class:`Edit` holds, per layer, the indices of the changed rows or columns of the canonical
down-projection ``W [d_model, d_mlp]`` (or the whole matrix) with their old and new values. Applying
copies the new values in, reverting copies the old ones back: both are exact, whatever arithmetic
produced the edit. Methods produce an edit by changing weights in a :class:`WeightSession` and
taking the difference, so many facts (or sequential erasures) combine into one edit.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from editing.adapters import ModelAdapter
from editing.errors import ConfigError

Axis = Literal["rows", "cols", "dense"]


def tensor_sha256(t: torch.Tensor) -> str:
    """sha256 of a tensor's raw bytes (contiguous, on CPU)."""
    data = t.detach().contiguous().cpu()
    if data.dtype == torch.bfloat16:  # numpy has no bfloat16: hash the raw 16-bit words
        data = data.view(torch.int16)
    return hashlib.sha256(data.numpy().tobytes()).hexdigest()


def region(weight: torch.Tensor, axis: str, indices: torch.Tensor) -> torch.Tensor:
    """The entries of canonical ``weight`` that a delta along ``axis`` at ``indices`` rewrites."""
    if axis == "rows":
        return weight.index_select(0, indices.to(weight.device))
    if axis == "cols":
        return weight.index_select(1, indices.to(weight.device))
    return weight


@dataclass
class LayerDelta:
    """Changed entries of one layer's canonical down-projection."""

    layer: int
    param: str  # state-dict key of the weight (in the model's own layout)
    axis: Axis
    indices: torch.Tensor  # long; rows of W for "rows", columns for "cols", empty for "dense"
    old: torch.Tensor
    new: torch.Tensor

    @property
    def entries_changed(self) -> int:
        """Number of weight entries this delta rewrites."""
        return int((self.old != self.new).sum())

    def old_sha256(self) -> str:
        """Hash of the values this delta expects to find (checked before applying)."""
        return tensor_sha256(self.old)

    def _region(self, weight: torch.Tensor) -> torch.Tensor:
        return region(weight, self.axis, self.indices)

    def _write(self, weight: torch.Tensor, values: torch.Tensor) -> None:
        values = values.to(device=weight.device, dtype=weight.dtype)
        with torch.no_grad():
            if self.axis == "rows":
                weight.index_copy_(0, self.indices.to(weight.device), values)
            elif self.axis == "cols":
                weight.index_copy_(1, self.indices.to(weight.device), values)
            else:
                weight.copy_(values)


@dataclass
class Edit:
    """A combined weight edit over one or more layers (a value: apply and revert are explicit)."""

    deltas: list[LayerDelta]
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def entries_changed(self) -> int:
        """Total number of weight entries changed."""
        return sum(d.entries_changed for d in self.deltas)

    @property
    def layers(self) -> list[int]:
        """Layers this edit touches."""
        return [d.layer for d in self.deltas]

    @property
    def nbytes(self) -> int:
        """Size of the delta's tensors in bytes (indices, old and new values)."""
        return sum(
            t.numel() * t.element_size() for d in self.deltas for t in (d.indices, d.old, d.new)
        )

    def is_empty(self) -> bool:
        """Whether the edit changes nothing."""
        return self.entries_changed == 0

    def apply(self, adapter: ModelAdapter, check: bool = True) -> None:
        """Write the new values into the model (after checking the old ones match, if ``check``).

        All layers are checked before any is written, so a mismatch changes nothing.
        """
        if check:
            for d in self.deltas:
                weight = adapter.down_proj_weight(d.layer)
                if tensor_sha256(d._region(weight)) != d.old_sha256():
                    raise ConfigError(
                        f"Edit does not fit this model: layer {d.layer} ({d.param}) does not hold "
                        "the values the edit was made from. Apply it to its base model."
                    )
        for d in self.deltas:
            d._write(adapter.down_proj_weight(d.layer), d.new)

    def revert(self, adapter: ModelAdapter) -> None:
        """Write the old values back (bit-exact)."""
        for d in reversed(self.deltas):
            d._write(adapter.down_proj_weight(d.layer), d.old)

    @contextmanager
    def applied(self, adapter: ModelAdapter) -> Iterator[None]:
        """Context in which the edit is applied; always reverted on exit."""
        self.apply(adapter)
        try:
            yield
        finally:
            self.revert(adapter)

    def footprint(self) -> list[dict[str, Any]]:
        """Per-layer summary for reports and manifests."""
        return [
            {
                "layer": d.layer,
                "param": d.param,
                "axis": d.axis,
                "indices": d.indices.tolist(),
                "entries_changed": d.entries_changed,
                "base_sha256": d.old_sha256(),
                "new_sha256": tensor_sha256(d.new),
            }
            for d in self.deltas
        ]


def bit_patterns(t: torch.Tensor) -> torch.Tensor:
    """Integer view of a float tensor's bit patterns (exact comparison)."""
    ints = {2: torch.int16, 4: torch.int32, 8: torch.int64}
    return t.contiguous().view(ints[t.element_size()])


def diff_weights(
    adapter: ModelAdapter, original: dict[int, torch.Tensor], metadata: dict[str, Any] | None = None
) -> Edit:
    """The edit turning ``original`` (layer -> canonical W) into the model's current weights.

    Chooses, per layer, the smaller of changed rows or changed columns (or the whole matrix).
    """
    deltas: list[LayerDelta] = []
    for layer in sorted(original):
        old_w = original[layer]
        new_w = adapter.down_proj_weight(layer).detach()
        changed = bit_patterns(old_w) != bit_patterns(new_w)  # -0.0 vs 0.0 and NaNs count right
        if not changed.any():
            continue
        rows = changed.any(1).nonzero().squeeze(1)
        cols = changed.any(0).nonzero().squeeze(1)
        d_model, d_mlp = old_w.shape
        cost = {"dense": d_model * d_mlp, "rows": len(rows) * d_mlp, "cols": len(cols) * d_model}
        axis: Axis = min(cost, key=lambda k: cost[k])  # type: ignore[assignment]
        if axis == "rows":
            idx, old, new = rows, old_w[rows], new_w[rows]
        elif axis == "cols":
            idx, old, new = cols, old_w[:, cols], new_w[:, cols]
        else:
            idx, old, new = torch.empty(0, dtype=torch.long), old_w, new_w
        deltas.append(
            LayerDelta(
                layer=layer,
                param=adapter.down_proj_param_name(layer),
                axis=axis,
                indices=idx.cpu(),
                old=old.detach().cpu().clone(),
                new=new.detach().cpu().clone(),
            )
        )
    return Edit(deltas, dict(metadata or {}))


class WeightSession:
    """Snapshot down-projections, let a method change them in place, then diff and restore.

    Usage::

        with WeightSession(adapter, layers) as session:
            ...change adapter.down_proj_weight(l) in place...
            edit = session.edit()
        # weights are back to the snapshot here, whatever happened inside
    """

    def __init__(self, adapter: ModelAdapter, layers: list[int] | None = None) -> None:
        self.adapter = adapter
        layers = list(range(adapter.n_layers)) if layers is None else layers
        self.original = {
            layer: adapter.down_proj_weight(layer).detach().clone() for layer in layers
        }

    def edit(self, metadata: dict[str, Any] | None = None) -> Edit:
        """The edit made so far in this session."""
        return diff_weights(self.adapter, self.original, metadata)

    def restore(self) -> None:
        """Put every snapshotted weight back."""
        for layer, w in self.original.items():
            self.adapter.set_down_proj_weight(layer, w)

    def __enter__(self) -> WeightSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.restore()
