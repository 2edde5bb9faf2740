"""Chunked erasures: locate + edit a slice of a request's facts, then merge the slices' edits.

A large request is split into chunks of consecutive facts (:func:`chunk_ranges`). Each chunk is
located and edited on its own, on the base model (plus the parent checkpoint's edit, for a
sequential erasure), by :func:`edit_chunk`: the result, a :class:`ChunkEdit`, is the chunk's
*patch* (indices and new values of the down-projection entries it changed, relative to the
weights it started from, with the sha256 of those) and, per fact, what the method located. It is
never published: the service keeps it sealed in the erasure's private record until the merge.

:class:`MergedChunks` is the merge: the method :func:`editing.erase.run_erasure` uses instead of
the request's one (``editor=``). Its first call adds every chunk's change (new − old) to the
weights — an entry only one chunk changed gets that chunk's new value bit for bit; an entry
several chunks changed gets the sum of their changes or their agreeing mean, by the rule the
method's params name (:func:`merge_patches`) — and every call returns the
fact's outcome as its chunk found it. ``run_erasure`` then evaluates the merged edit as a whole
(baseline, Reliability, Generalization, Locality, ΔPPL on every fact of the request) and decides
acceptance exactly as for an unchunked request, so the published checkpoint is one edit.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from editing.checkpoints.patch import Patch
from editing.edits import Edit, LayerDelta, WeightSession, bit_patterns, region
from editing.errors import CancelledError, ConfigError, CorruptCacheError
from editing.methods import FactCase, FactOutcome, finish_request, get_method, method_spec

if TYPE_CHECKING:
    from editing.models import LoadedModel
    from editing.registry import EvalSize
    from editing.request import ErasureRequest

CHUNK_FORMAT = "featureedit-chunk"
CHUNK_FORMAT_VERSION = 1
MERGED = -1  # the index of the merged edit of every chunk (:func:`merge_chunk_edits`)


def chunk_ranges(n_facts: int, chunk_facts: int) -> list[tuple[int, int]]:
    """``[start, stop)`` of each chunk of ``n_facts`` facts, at most ``chunk_facts`` each.

    One range (the whole request) when ``chunk_facts`` is 0 (chunking off) or not below
    ``n_facts``; otherwise ``ceil(n_facts / chunk_facts)`` ranges of near-equal size.
    """
    if n_facts < 1:
        raise ValueError("a request has at least one fact")
    if chunk_facts <= 0 or n_facts <= chunk_facts:
        return [(0, n_facts)]
    count = -(-n_facts // chunk_facts)
    bounds = [round(i * n_facts / count) for i in range(count + 1)]
    return list(itertools.pairwise(bounds))


def chunkable(request: ErasureRequest) -> bool:
    """Whether ``request``'s method edits weights (an inference-time method cannot be merged)."""
    return method_spec(request.method).produces_checkpoint


MergeRule = Literal["sum", "agreeing_mean"]
MERGE_RULES: tuple[MergeRule, ...] = ("sum", "agreeing_mean")


@dataclass
class ChunkEdit:
    """One chunk's edit (a patch on the weights it started from) and its facts' outcomes."""

    index: int
    start: int
    stop: int
    patch: Patch
    outcomes: dict[int, dict[str, Any]]  # request fact index -> units, timings, evidence
    timings: dict[str, float] = field(default_factory=dict)
    # the merged edit (index MERGED): the chunks' lineage, the attack plan, overlapping entries
    extra: dict[str, Any] = field(default_factory=dict)
    # how an entry several chunks change is merged (the method's params say; merge_patches);
    # None for a chunk stored before chunks recorded it (the merge then takes the request's)
    merge: MergeRule | None = None

    def to_bytes(self) -> bytes:
        """The chunk as one safetensors blob (tensors, and the rest as JSON metadata)."""
        tensors: dict[str, torch.Tensor] = {}
        layers = []
        for p in self.patch.layers:
            tensors[f"layers.{p.layer}.indices"] = p.indices.contiguous()
            tensors[f"layers.{p.layer}.new"] = p.new.contiguous()
            layers.append(
                {
                    "layer": p.layer,
                    "param": p.param,
                    "axis": p.axis,
                    "base_sha256": p.base_sha256,
                    "entries_changed": p.entries_changed,
                }
            )
        doc = {
            "format": CHUNK_FORMAT,
            "version": CHUNK_FORMAT_VERSION,
            "index": self.index,
            "start": self.start,
            "stop": self.stop,
            "layers": layers,
            "metadata": self.patch.metadata,
            "outcomes": {str(k): v for k, v in self.outcomes.items()},
            "timings": self.timings,
            "extra": self.extra,
            "merge": self.merge,
        }
        return save_tensors(tensors, metadata={"chunk": json.dumps(doc)})

    @classmethod
    def from_bytes(cls, data: bytes) -> ChunkEdit:
        """Read :meth:`to_bytes`'s blob (CorruptCacheError if it is not one)."""
        from editing.checkpoints.patch import LayerPatch, Patch

        try:
            tensors = load_tensors(data)
            # the safetensors header: 8 bytes little-endian length, then JSON with __metadata__
            header = json.loads(data[8 : 8 + int.from_bytes(data[:8], "little")])
            doc = json.loads(header["__metadata__"]["chunk"])
            if doc.get("format") != CHUNK_FORMAT or doc.get("version") != CHUNK_FORMAT_VERSION:
                raise ValueError(f"format {doc.get('format')!r} version {doc.get('version')!r}")
            layers = [
                LayerPatch(
                    layer=int(entry["layer"]),
                    param=entry["param"],
                    axis=entry["axis"],
                    indices=tensors[f"layers.{entry['layer']}.indices"],
                    new=tensors[f"layers.{entry['layer']}.new"],
                    base_sha256=entry["base_sha256"],
                    entries_changed=int(entry["entries_changed"]),
                )
                for entry in doc["layers"]
            ]
            return cls(
                index=int(doc["index"]),
                start=int(doc["start"]),
                stop=int(doc["stop"]),
                patch=Patch(layers, dict(doc.get("metadata") or {})),
                outcomes={int(k): v for k, v in doc["outcomes"].items()},
                timings=dict(doc.get("timings") or {}),
                extra=dict(doc.get("extra") or {}),
                merge=_stored_rule(doc.get("merge")),
            )
        except (KeyError, TypeError, ValueError, json.JSONDecodeError) as exc:
            raise CorruptCacheError(f"a chunk's stored edit is unreadable: {exc}") from None

    def lineage(self) -> dict[str, Any]:
        """What a checkpoint's manifest records of this chunk (no secret, no subject)."""
        return {
            "index": self.index,
            "facts": [self.start, self.stop],
            "layers": self.patch.layer_ids,
            "entries_changed": sum(p.entries_changed for p in self.patch.layers),
            "seconds": round(self.timings.get("total", 0.0), 4),
        }


def edit_chunk(
    request: ErasureRequest,
    loaded: LoadedModel,
    index: int,
    start: int,
    stop: int,
    *,
    base_edit: Edit | None = None,
    eval_size: EvalSize | None = None,
    should_cancel: Callable[[], bool] | None = None,
    progress: Callable[[float], None] | None = None,
) -> ChunkEdit:
    """Locate and edit facts ``[start, stop)`` of ``request`` on ``loaded`` (restored after).

    The edit starts from the base model with ``base_edit`` applied; the returned patch is
    relative to those weights. As in :func:`editing.erase.run_erasure`, which prompts of a fact
    the model answers is decided before any fact is edited. Facts the model does not produce are
    skipped (the merge's evaluation reports them as nothing to erase). CancelledError when
    ``should_cancel`` says so.
    """
    from editing.erase import fact_cases
    from editing.evaldata import eval_data_for
    from editing.request import with_model_params

    if not chunkable(request):
        raise ConfigError(f"method {request.method!r} does not edit weights; it cannot be chunked")
    if not 0 <= start < stop <= len(request.facts):
        raise ConfigError(f"chunk {index}: facts [{start}, {stop}) are not in the request")
    t0 = time.perf_counter()
    request = with_model_params(request, loaded.entry.method_defaults(request.method))
    method = get_method(request.method, request.params)
    controls = eval_data_for(loaded, {f.subject for f in request.facts}, eval_size)
    erased: dict[int, FactOutcome] = {}
    with WeightSession(loaded.adapter):
        if base_edit is not None:
            base_edit.apply(loaded.adapter)
        # every fact's prompts as the unedited model answers them, as run_erasure takes them
        cases = fact_cases(loaded, request.facts[start:stop], controls, start)
        with WeightSession(loaded.adapter) as session:  # the chunk's change, on top of the parent
            for n, case in enumerate(cases):
                if should_cancel is not None and should_cancel():
                    raise CancelledError("Erasure cancelled; the model was restored.")
                if progress is not None:
                    progress(n / len(cases))
                if not case.edit_prompts:
                    continue
                erased[case.index] = method.erase_fact(loaded, case)
            joint = finish_request(method, loaded, erased)  # e.g. the chunk's joint refinement
            edit = session.edit({"method": request.method, "chunk": index})
    outcomes = {
        i: {
            "units": [u.to_dict() for u in out.units],
            "timings": {k: round(v, 4) for k, v in out.timings.items()},
            "evidence": out.evidence,
        }
        for i, out in erased.items()
    }
    seconds = time.perf_counter() - t0
    timings = {
        "locate": sum(o["timings"].get("locate", 0.0) for o in outcomes.values()),
        "edit": sum(o["timings"].get("edit", 0.0) for o in outcomes.values()) + joint,
        "total": seconds,
    }
    return ChunkEdit(
        index,
        start,
        stop,
        Patch.from_edit(edit),
        outcomes,
        timings,
        merge=request.params.chunk_merge(),
    )


def merge_patches(loaded: LoadedModel, patches: Sequence[Patch], rule: MergeRule = "sum") -> int:
    """Add every patch's change to ``loaded``'s weights (which all patches were made from).

    Every patch is bound to the current weights before any is written (ConfigError if one was
    made from other weights); an entry one patch changes gets its new value exactly. An entry
    several change gets, by ``rule`` (the method's :meth:`~editing.methods.params.MethodParams.
    chunk_merge`; computed in float32, stored in the weight's dtype, on the weight's device):

    - ``"sum"``: the sum of their changes (right for edits that add independent parts, e.g.
      projections of different feature directions);
    - ``"agreeing_mean"``: the mean of the changes whose sign has the larger total magnitude
      (the sign election and disjoint mean of TIES-merging, Yadav et al., NeurIPS 2023): right
      for edits that set an entry to a value (two chunks zeroing one neuron zero it once, where
      a sum would flip it) or that were each optimised from the same weights (the refinement of
      ``refine="flatten"``, whose shared part a sum counts once per chunk).

    Returns the number of entries more than one patch changed.
    """
    if rule not in MERGE_RULES:
        raise ConfigError(f"unknown chunk merge rule {rule!r}; known: {list(MERGE_RULES)}")
    adapter = loaded.adapter
    layers = sorted({layer for p in patches for layer in p.layer_ids})
    canonical = {layer: adapter.down_proj_weight(layer).detach() for layer in layers}
    edits = [p.bind(canonical, f"chunk {n}") for n, p in enumerate(patches)]
    if rule == "agreeing_mean":
        return _merge_agreeing_mean(loaded, canonical, edits)
    overlaps = 0
    for edit in edits:
        for d in edit.deltas:
            weight = adapter.down_proj_weight(d.layer)
            current = region(weight, d.axis, d.indices).detach()
            old = d.old.to(current.device)
            new = d.new.to(current.device)
            untouched = current == old
            summed = (current.float() + (new.float() - old.float())).to(current.dtype)
            merged = torch.where(untouched, new, summed)
            overlaps += int((~untouched & (old != new)).sum())
            Edit([LayerDelta(d.layer, d.param, d.axis, d.indices, current.cpu(), merged)]).apply(
                adapter, check=False
            )
    return overlaps


def _merge_agreeing_mean(
    loaded: LoadedModel, canonical: dict[int, torch.Tensor], edits: Sequence[Edit]
) -> int:
    """:func:`merge_patches` by ``"agreeing_mean"``, one layer at a time, on the union of the
    columns (or rows) the patches changed; returns the entries more than one patch changed."""
    overlaps = 0
    for layer, weight in canonical.items():
        deltas = [d for e in edits for d in e.deltas if d.layer == layer]
        axis, where = _union_region(deltas)
        block = region(weight, axis, where).detach()
        sides = [_Side(block), _Side(block)]  # changes up, changes down
        for d in deltas:
            new = _placed(d, axis, where, block)
            change = new.float() - block.float()
            changed = bit_patterns(new) != bit_patterns(block)  # as diff_weights compares
            down = changed & (change < 0)
            sides[0].add(changed & ~down, change, new)
            sides[1].add(down, change, new)
        up, down_side = sides
        overlaps += int((up.count + down_side.count > 1).sum())
        elected_up = up.total >= -down_side.total  # the sign with the larger total magnitude
        merged = torch.where(elected_up, up.value(block), down_side.value(block))
        merged = torch.where((up.count + down_side.count) > 0, merged, block)
        Edit([LayerDelta(layer, deltas[0].param, axis, where.cpu(), block.cpu(), merged)]).apply(
            loaded.adapter, check=False
        )
    return overlaps


def _union_region(deltas: Sequence[LayerDelta]) -> tuple[str, torch.Tensor]:
    """The smallest region every delta lies in: the union of their columns (all along columns),
    of their rows (all along rows), or the whole matrix (``"dense"``, no indices)."""
    axes = {d.axis for d in deltas}
    if len(axes) == 1 and axes <= {"rows", "cols"}:
        return axes.pop(), torch.unique(torch.cat([d.indices.cpu() for d in deltas]))
    return "dense", torch.empty(0, dtype=torch.long)


def _placed(d: LayerDelta, axis: str, where: torch.Tensor, block: torch.Tensor) -> torch.Tensor:
    """``block`` (the region of :func:`_union_region`) with delta ``d``'s new values written."""
    new = d.new.to(device=block.device, dtype=block.dtype)
    if d.axis == "dense":
        return new.reshape(block.shape)
    indices = d.indices.to(block.device)
    if axis != "dense":  # positions of d's indices among the region's
        indices = torch.searchsorted(where.to(block.device), indices)
    out = block.clone()
    if d.axis == "cols":
        out[:, indices] = new
    else:
        out[indices] = new
    return out


class _Side:
    """The changes of one sign at every entry of a region: their sum, their count, and whether
    they all wrote the same value (then that value is kept bit for bit, not a float mean)."""

    def __init__(self, block: torch.Tensor) -> None:
        self.total = torch.zeros(block.shape, dtype=torch.float32, device=block.device)
        self.count = torch.zeros(block.shape, dtype=torch.int32, device=block.device)
        self.first = block.clone()
        self.same = torch.ones(block.shape, dtype=torch.bool, device=block.device)

    def add(self, mask: torch.Tensor, change: torch.Tensor, new: torch.Tensor) -> None:
        """Count the changes at ``mask`` (``change`` = new − old in float32, ``new`` the values)."""
        fresh = mask & (self.count == 0)
        later = mask & ~fresh
        self.same &= ~later | (bit_patterns(new) == bit_patterns(self.first))
        self.first = torch.where(fresh, new, self.first)
        self.total += torch.where(mask, change, torch.zeros_like(change))
        self.count += mask.int()

    def value(self, block: torch.Tensor) -> torch.Tensor:
        """Per entry: the one value every change wrote, or ``block`` + their mean change."""
        mean = (block.float() + self.total / self.count.clamp(min=1)).to(block.dtype)
        return torch.where(self.same, self.first, mean)


def merge_rule(chunks: Sequence[ChunkEdit], default: MergeRule | None = None) -> MergeRule:
    """The merge rule the chunks were made for; ``default`` (the request's, from its method's
    params) for chunks that recorded none. ConfigError if they differ, or if none is known."""
    rules = {c.merge for c in chunks if c.merge is not None}
    if not rules and default is not None:
        rules = {default}
    if len(rules) != 1:
        raise ConfigError(f"the chunks' merge rule is not one rule: {sorted(rules)}")
    return rules.pop()


def _stored_rule(value: Any) -> MergeRule | None:
    """A stored chunk's merge rule, None if it has none (ValueError, read as a corrupt chunk,
    if unknown)."""
    if value is not None and value not in MERGE_RULES:
        raise ValueError(f"unknown merge rule {value!r}")
    return value  # type: ignore[no-any-return]


def merge_chunk_edits(
    loaded: LoadedModel,
    chunks: Sequence[ChunkEdit],
    *,
    method: str,
    rule: MergeRule | None = None,
    base_edit: Edit | None = None,
    extra: dict[str, Any] | None = None,
) -> ChunkEdit:
    """The chunks' patches merged (:func:`merge_patches`) into one edit of the whole request,
    relative to the pristine base model (the parent's ``base_edit`` included, as
    :func:`editing.erase.run_erasure`'s edit is), with every chunk's outcomes; ``extra`` holds
    the chunks' lineage and what the caller adds. ``rule``: the request's merge rule, for
    chunks stored before they recorded theirs (:func:`merge_rule`). ``loaded`` is restored
    after."""
    ordered = sorted(chunks, key=lambda c: c.index)
    t0 = time.perf_counter()
    with WeightSession(loaded.adapter) as session:
        if base_edit is not None:
            base_edit.apply(loaded.adapter)
        rule = merge_rule(ordered, rule)
        overlaps = merge_patches(loaded, [c.patch for c in ordered], rule)
        edit = session.edit({"method": method})
    lineage = {"count": len(ordered), "merge": rule, "chunks": [c.lineage() for c in ordered]}
    return ChunkEdit(
        index=MERGED,
        start=min(c.start for c in ordered),
        stop=max(c.stop for c in ordered),
        patch=Patch.from_edit(edit),
        outcomes={i: _measured_on(c, o) for c in ordered for i, o in c.outcomes.items()},
        timings={"merge": round(time.perf_counter() - t0, 4)},
        extra={**(extra or {}), "lineage": lineage, "overlapping_entries": overlaps},
        merge=rule,
    )


def _measured_on(chunk: ChunkEdit, outcome: dict[str, Any]) -> dict[str, Any]:
    """``outcome`` with its evidence marked as measured on ``chunk``'s own edit."""
    evidence = {**outcome["evidence"], "measured_on": f"chunk {chunk.index + 1}"}
    return {**outcome, "evidence": evidence}


def bound_edit(loaded: LoadedModel, chunk: ChunkEdit) -> Edit:
    """``chunk``'s patch as an edit of ``loaded``'s weights as they are (hash-checked)."""
    canonical = {
        layer: loaded.adapter.down_proj_weight(layer).detach() for layer in chunk.patch.layer_ids
    }
    where = "the merged edit" if chunk.index == MERGED else f"chunk {chunk.index + 1}"
    return chunk.patch.bind(canonical, where)


def chunk_outcome(chunk: ChunkEdit | None, index: int) -> FactOutcome:
    """Fact ``index``'s outcome as its chunk recorded it, its evidence marked as measured on
    that chunk's edit; an empty outcome if its chunk found nothing to erase (the merged edit
    may still erase it)."""
    from editing.locate import Unit

    found = None if chunk is None else chunk.outcomes.get(index)
    if chunk is None or found is None:
        return FactOutcome(units=[], timings={"locate": 0.0, "edit": 0.0}, evidence={})
    # the method's evidence was measured on its chunk's edit, not on the merged one (whose
    # Reliability, Generalization and attacks are measured again): say so
    if chunk.index != MERGED:  # the merged edit's outcomes say it already
        found = _measured_on(chunk, found)
    return FactOutcome(
        units=[Unit(**u) for u in found["units"]],
        timings=dict(found["timings"]),
        evidence=dict(found["evidence"]),
    )


class MergedChunks:
    """The merge step as a method for :func:`editing.erase.run_erasure` (``editor=``).

    The first :meth:`erase_fact` call merges every chunk's patch into the weights
    (:func:`merge_patches`); each call returns the fact's outcome as its chunk recorded it.
    """

    def __init__(self, chunks: Sequence[ChunkEdit]) -> None:
        self.chunks = sorted(chunks, key=lambda c: c.index)
        self.chunk_of = {i: c for c in self.chunks for i in c.outcomes}
        self.merged = False
        self.overlapping_entries = 0
        self.seconds = 0.0

    def erase_fact(self, loaded: LoadedModel, case: FactCase) -> FactOutcome:
        """Merge on the first call; the fact's outcome from its chunk."""
        if not self.merged:
            t0 = time.perf_counter()
            self.overlapping_entries = merge_patches(
                loaded, [c.patch for c in self.chunks], merge_rule(self.chunks)
            )
            self.merged = True
            self.seconds = time.perf_counter() - t0
        return chunk_outcome(self.chunk_of.get(case.index), case.index)

    def lineage(self) -> dict[str, Any]:
        """The manifest's ``chunks`` entry: every chunk's facts, layers and size."""
        return {
            "count": len(self.chunks),
            "merge": merge_rule(self.chunks),
            "chunks": [c.lineage() for c in self.chunks],
        }
