"""The unedited model's evaluation, computed once and kept (issue #16).

Every erasure on a model scores the same model, before its edit, on a Locality set and on the
perplexity passages: whether greedy decoding answers each Locality prompt and with what
log-probability, and each passage's negative log-likelihood. :func:`baseline_scores` computes
those in padded batches (:mod:`editing.scoring`) and, with a :class:`BaselineCache`, keeps them
under ``$FEATUREEDIT_HOME/baselines/`` so that the next erasure reuses them.

The cache is content-addressed twice:

- its directory is named by the **model key** (:func:`model_key`): the sha256 of the weights
  files (cached per file state, :func:`editing.evaldata.model_weights_sha256`), of the
  down-projections in memory (so a sequential erasure's parent edit, applied before the
  baseline, gives another key), of the tokenizer files, of the model's configuration as loaded
  (e.g. a changed ``rope_theta`` or norm epsilon in ``config.json`` with the same weights), of
  the parameters' dtype and of the device type, and :data:`BASELINE_VERSION`. A changed base
  checkpoint, configuration, dtype or device class is another directory: never a reuse;
- each entry is keyed by an HMAC of its evaluation row (Locality prompt and answer) or passage
  text, with the home's fingerprint key (:func:`editing.fingerprint.fingerprint_key`; the files
  name no prompt, answer or passage). A changed evaluation set misses on every changed row and
  those rows are scored again; the rest is reused. Each file holds the rows one erasure had to
  compute, is named by the hash of that evaluation set's keys and written atomically
  (:func:`editing.checkpoints.manifest.write_text_atomic`), so concurrent workers on one home
  never write the same file differently; a file that does not parse or names another model key
  is ignored (and its rows recomputed).

The attack suite's scores of the unedited model (its *before* side, the attacks' own control,
:func:`attack_before_cache`) are kept the same way: a score is a function of the model, the
attack, its budget (seeds included) and the fact (subject, relation, secret, prompts; sampling
draws one stream per prompt and sample, :mod:`editing.sampling`), so it is computed once per
(model key, attack, budget, fact) and reused by every later request on that model (a retried,
resubmitted or chunked request; a benchmark's methods). Its entry is keyed by the HMAC of all
of those and holds numbers and success flags only (:class:`editing.attacks.base.Score`): no
secret, subject, prompt or answer is on disk, only keyed digests as in a checkpoint's manifest.
Deleting a request's private record (``featureedit private delete``) leaves these numbers
(docs/security.md, "What stays after `private delete`"): ``FEATUREEDIT_BASELINE_CACHE=0`` keeps
nothing. Workers share the cache through their home
directory (``$FEATUREEDIT_HOME``), not through the store.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from editing import settings
from editing.checkpoints.manifest import write_text_atomic
from editing.evaldata import EvalData
from editing.models import LoadedModel
from editing.scoring import TargetScore

if TYPE_CHECKING:
    from editing.attacks.base import Score

log = logging.getLogger(__name__)

BASELINE_VERSION = 2  # bump when what is scored or how changes: old entries are never read
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
# configuration keys that name where or with what a model was loaded, not what it computes
CONFIG_VOLATILE = ("_name_or_path", "transformers_version", "torch_dtype", "dtype")


@dataclass
class Baseline:
    """The unedited model's Locality scores (one per row of the evaluation data) and passages'
    ``(nll, tokens)``, with how many of them came from the cache."""

    locality: list[TargetScore]
    passages: list[tuple[float, int]]
    cached: int = 0  # rows and passages read from the cache
    computed: int = 0  # rows and passages scored now

    @property
    def perplexity(self) -> float | None:
        """Token-level perplexity over the passages (None without passages)."""
        from editing.evaluate import pooled_perplexity

        return pooled_perplexity(self.passages) if self.passages else None


def _tokenizer_sha256(loaded: LoadedModel) -> str:
    """sha256 of the tokenizer's files in the model directory, else of its vocabulary."""
    digest = hashlib.sha256()
    files = [loaded.source_dir / n for n in TOKENIZER_FILES] if loaded.source_dir else []
    files = [f for f in files if f.is_file()]
    if files:
        for f in files:
            digest.update(f.name.encode() + b"\0" + f.read_bytes())
    else:
        digest.update(json.dumps(loaded.tokenizer.get_vocab(), sort_keys=True).encode())
    return digest.hexdigest()


def _config_sha256(loaded: LoadedModel) -> str:
    """sha256 of the model's configuration as loaded (what it computes, not where it came
    from: :data:`CONFIG_VOLATILE` keys left out)."""
    config = loaded.model.config.to_dict()
    for key in CONFIG_VOLATILE:
        config.pop(key, None)
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()


def model_key(loaded: LoadedModel, down_proj_sha256: str) -> str:
    """The cache key of ``loaded`` as it is now: weights files, ``down_proj_sha256`` (of the
    down-projections in memory, :func:`editing.checkpoints.publish.down_proj_sha256`),
    tokenizer, configuration, dtype, device type and :data:`BASELINE_VERSION`."""
    from editing.evaldata import model_weights_sha256

    param = next(loaded.model.parameters())
    doc = {
        "version": BASELINE_VERSION,
        "weights": model_weights_sha256(loaded),
        "down_proj": down_proj_sha256,
        "tokenizer": _tokenizer_sha256(loaded),
        "config": _config_sha256(loaded),
        "dtype": str(param.dtype),
        "device": param.device.type,
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


class BaselineCache:
    """Baseline scores under ``root`` (``<home>/baselines``), per model key (see the module)."""

    def __init__(self, root: str | Path, key: bytes) -> None:
        self.root = Path(root)
        self._key = key
        self._index: dict[str, dict[str, list[Any]]] = {}  # model key -> entry key -> value
        self._read: dict[str, set[str]] = {}  # model key -> file names already indexed

    @classmethod
    def for_home(cls, home: str | Path | None = None) -> BaselineCache:
        """The cache of ``home`` (default ``$FEATUREEDIT_HOME``), keyed with its fingerprint key."""
        from editing.fingerprint import fingerprint_key

        root = settings.home(home)
        return cls(root / "baselines", fingerprint_key(root))

    def entry_key(self, kind: str, *texts: str) -> str:
        """HMAC of an evaluation row (``kind`` ``locality``: prompt, answer) or a passage
        (``ppl``)."""
        msg = "\0".join((kind, *texts)).encode()
        return hmac.new(self._key, msg, hashlib.sha256).hexdigest()[:32]

    def model_dir(self, model: str) -> Path:
        """The directory of ``model``'s entries."""
        return self.root / model[:32]

    def lookup(self, model: str) -> dict[str, list[Any]]:
        """Every entry kept for ``model`` (files written since the last call are read too)."""
        index = self._index.setdefault(model, {})
        seen = self._read.setdefault(model, set())
        folder = self.model_dir(model)
        for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
            if path.name in seen:
                continue
            seen.add(path.name)
            try:
                doc = json.loads(path.read_text())
                if doc.get("version") != BASELINE_VERSION or doc.get("model_key") != model:
                    raise ValueError("another model key or version")
                index.update(doc["entries"])
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
                log.warning("baseline cache file %s ignored (%s)", path, type(exc).__name__)
        return index

    def store(self, model: str, entries: dict[str, list[Any]]) -> Path | None:
        """Keep ``entries`` for ``model`` in a new file named by their keys' hash (atomic)."""
        if not entries:
            return None
        name = hashlib.sha256("\n".join(sorted(entries)).encode()).hexdigest()[:32]
        folder = self.model_dir(model)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{name}.json"
        doc = {"version": BASELINE_VERSION, "model_key": model, "entries": entries}
        write_text_atomic(path, json.dumps(doc, sort_keys=True))
        self._index.setdefault(model, {}).update(entries)
        self._read.setdefault(model, set()).add(path.name)
        return path


def baseline_scores(
    loaded: LoadedModel,
    data: EvalData,
    down_proj_sha256: str,
    cache: BaselineCache | None = None,
    batch_size: int | None = None,
) -> Baseline:
    """The unedited model's scores on ``data`` (Locality rows, perplexity passages): from
    ``cache`` where it holds them for this model (:func:`model_key`), the rest scored now in
    padded batches and added to it."""
    from editing.evaluate import passage_nll
    from editing.scoring import score_targets

    rows = [(p, t) for p, t, _ in data.locality]
    texts = list(data.ppl_texts)
    if cache is None:
        return Baseline(
            score_targets(loaded.model, loaded.tokenizer, *_columns(rows), batch_size),
            passage_nll(loaded.model, loaded.tokenizer, texts, batch_size) if texts else [],
            computed=len(rows) + len(texts),
        )
    model = model_key(loaded, down_proj_sha256)
    kept = cache.lookup(model)
    row_keys = [cache.entry_key("locality", p, t) for p, t in rows]
    text_keys = [cache.entry_key("ppl", t) for t in texts]
    new: dict[str, list[Any]] = {}
    todo = [i for i, k in enumerate(row_keys) if k not in kept]
    if todo:
        scores = score_targets(
            loaded.model, loaded.tokenizer, *_columns([rows[i] for i in todo]), batch_size
        )
        for i, s in zip(todo, scores):
            new[row_keys[i]] = [s.reproduced, s.logprob, s.first_token_logprob]
    todo_texts = [i for i, k in enumerate(text_keys) if k not in kept]
    if todo_texts:
        parts = passage_nll(
            loaded.model, loaded.tokenizer, [texts[i] for i in todo_texts], batch_size
        )
        for i, (nll, n) in zip(todo_texts, parts):
            new[text_keys[i]] = [nll, n]
    cache.store(model, new)
    have = {**kept, **new}
    return Baseline(
        [TargetScore(bool(v[0]), float(v[1]), float(v[2])) for v in (have[k] for k in row_keys)],
        [(float(have[k][0]), int(have[k][1])) for k in text_keys],
        cached=len(rows) + len(texts) - len(new),
        computed=len(new),
    )


def _columns(rows: Sequence[tuple[str, str]]) -> tuple[list[str], list[str]]:
    """Prompts and targets of ``rows``."""
    return [p for p, _ in rows], [t for _, t in rows]


def default_baseline_cache(loaded: LoadedModel) -> BaselineCache | None:
    """The cache of ``loaded``'s home, or None when ``FEATUREEDIT_BASELINE_CACHE=0``."""
    return BaselineCache.for_home(loaded.home) if settings.baseline_cache_enabled() else None


class KeptRows:
    """Values (lists of numbers and flags) kept per key tuple for one model key in a
    :class:`BaselineCache`, under ``kind``; the keys are stored as their HMAC."""

    def __init__(self, cache: BaselineCache, model: str, kind: str) -> None:
        self.cache = cache
        self.model = model
        self.kind = kind

    def _entry(self, key: tuple[str, ...]) -> str:
        return self.cache.entry_key(self.kind, *key)

    def value(self, key: tuple[str, ...]) -> list[Any] | None:
        """The value kept for ``key``, or None."""
        found = self.cache.lookup(self.model).get(self._entry(key))
        return found if isinstance(found, list) else None

    def keep(self, values: Mapping[tuple[str, ...], list[Any]]) -> None:
        """Keep every value of ``values`` (one new cache file)."""
        self.cache.store(self.model, {self._entry(k): v for k, v in values.items()})


class AttackBefore(KeptRows):
    """The attack suite's scores of one model (:func:`attack_before_cache`), as
    :data:`editing.attacks.suite.BeforeCache`: keys are
    :func:`editing.attacks.suite.before_key` tuples."""

    def __init__(self, cache: BaselineCache, model: str) -> None:
        super().__init__(cache, model, "attack_before")

    def get(self, key: tuple[str, ...]) -> Score | None:
        """The score kept for ``key``, or None (also for an entry that does not parse)."""
        from editing.attacks.base import Score

        value = self.value(key)
        if value is None or len(value) != 2:
            return None
        try:
            return Score(values=value[0], success=value[1])
        except (ValueError, TypeError):  # corrupt: measured again
            return None

    def update(self, scores: Mapping[tuple[str, ...], Score]) -> None:
        """Keep every score of ``scores`` (one new cache file)."""
        self.keep({k: [dict(v.values), dict(v.success)] for k, v in scores.items()})


def attack_before_cache(loaded: LoadedModel, cache: BaselineCache | None) -> AttackBefore | None:
    """The attack scores of ``loaded`` as it is now (its :func:`model_key`) in ``cache``, or None
    without a cache."""
    if cache is None:
        return None
    from editing.checkpoints.publish import down_proj_sha256

    return AttackBefore(cache, model_key(loaded, down_proj_sha256(loaded.adapter)))
