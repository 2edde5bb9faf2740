"""Model registry: model id -> weights, dtype, device, SAEs per site and layer, evaluation data.

Built-in entries: ``demo`` (the default demo world) and ``demo-small`` (the test world). More
entries come from a TOML file named by ``FEATUREEDIT_REGISTRY`` or at
``$FEATUREEDIT_HOME/models.toml``::

    [models.gemma-2-2b]
    hub_id = "google/gemma-2-2b"        # resolved from the local Hugging Face cache (offline)
    # path = "/models/gemma-2-2b"       # or a local directory
    dtype = "bfloat16"
    device = "cuda:0"
    locality_file = "/data/gemma-locality.jsonl"   # {"prompt": ..., "target": ...} per line
    ppl_file = "/data/wikitext-sample.txt"         # general text, one passage per line
    control_subjects = ["Alice Example", "Bob Example"]  # for the specificity filter

    [models.gemma-2-2b.saes.resid_post]
    release = "gemma-scope-2b-pt-res-canonical"    # sae-lens release, from the local HF cache
    sae_id = "layer_{layer}/width_16k/canonical"
    layers = [6, 12, 18]
    # path = "/saes/gemma/res/layer_{layer}"       # or local sae-lens directories

    [models.gemma-2-2b.saes.mlp_out]
    release = "gemma-scope-2b-pt-mlp-canonical"
    sae_id = "layer_{layer}/width_16k/canonical"
    layers = [6, 12, 18]

    [models.gemma-2-2b.evaluation]                 # the Locality set's size (operator-only)
    locality_private_facts = 60
    locality_public_facts = 40
    locality_prompts_per_fact = 2

    [models.gemma-2-2b.params.featureedit]         # this model's method defaults
    refine = "flatten"
    max_features = 8

The ``evaluation`` table sizes the Locality set that decides acceptance (see :class:`EvalSize`).
It is an operator setting, never a request field; workers may override it service-wide with
``FEATUREEDIT_WORKER_LOCALITY_*`` (:class:`workers.config.WorkerSettings`).

A ``params.<method>`` table holds the model's own defaults for that method's parameters
(validated by the method's params class when the file is read): a request's explicit ``params``
win over them, and they win over the params class's defaults (the values tuned on the demo
world). :func:`editing.request.with_model_params` applies them; ``featureedit models add
--package`` writes the defaults measured for a known package
(:data:`editing.model_packages.PACKAGE_PARAMS`). ``evaluation`` and ``params`` are the tables a
built-in demo id (``demo``, ``demo-small``) may take too.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from editing import settings
from editing.errors import ConfigError, NotFoundError, UnknownModelError

DEMO_MODELS = {"demo": "default", "demo-small": "small"}
MODEL_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")  # a bare TOML key: no quoting needed
TABLE_HEADER_RE = re.compile(r"^\s*\[\[?\s*([^\]\s]+)\s*\]")  # a TOML table header line, its name
# Per demo world size: number of decoder layers and the sites with SAEs (one per layer). Mirrors
# editing.world.build.RECIPES without importing it (it imports torch), so processes that never
# load a model (the HTTP API) list the demo entries torch-free; tests/service checks they agree.
DEMO_WORLD_SAES: dict[str, tuple[int, tuple[str, ...]]] = {
    "small": (2, ("resid_post", "mlp_out")),
    "default": (4, ("resid_post", "mlp_out")),
}


BUILTIN_TABLES = {"evaluation", "params"}  # what a built-in demo id may set in the file
EVAL_SIZE_KEYS = ("locality_private_facts", "locality_public_facts", "locality_prompts_per_fact")


def check_eval_count(key: str, value: Any) -> int:
    """``value`` if it is a positive integer (not a bool); ConfigError naming ``key`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{key} must be a positive integer, got {value!r}.")
    return value


@dataclass(frozen=True)
class EvalSize:
    """Size of a model's Locality set: facts of other subjects (private, public) × prompts each.

    On a demo world the set is drawn (seeded) from the world's facts about subjects the request
    does not name: up to ``private_facts`` private and ``public_facts`` public facts, up to
    ``prompts_per_fact`` edit prompts of each (the defaults: 60 + 40 facts × 2 = 200 prompts).
    From a registry ``locality_file`` (rows are prompts, not facts) it keeps a seeded sample of at
    most ``private_facts × prompts_per_fact`` private and ``public_facts × prompts_per_fact``
    public rows; without an explicit size the file is used whole.
    """

    private_facts: int = 60
    public_facts: int = 40
    prompts_per_fact: int = 2

    def __post_init__(self) -> None:
        for key, value in zip(EVAL_SIZE_KEYS, self.astuple()):
            check_eval_count(key, value)

    def astuple(self) -> tuple[int, int, int]:
        """``(private_facts, public_facts, prompts_per_fact)``."""
        return (self.private_facts, self.public_facts, self.prompts_per_fact)

    @property
    def max_prompts(self) -> int:
        """Prompts of the set if the world (or file) has enough facts (rows) of each kind."""
        return (self.private_facts + self.public_facts) * self.prompts_per_fact

    def to_dict(self) -> dict[str, int]:
        """The registry keys and their values (``locality_private_facts``, ...)."""
        return dict(zip(EVAL_SIZE_KEYS, self.astuple()))

    def with_overrides(self, overrides: dict[str, int | None], origin: str) -> EvalSize:
        """This size with the registry keys in ``overrides`` that are not None changed."""
        values = self.to_dict() | {k: v for k, v in overrides.items() if v is not None}
        return EvalSize.from_mapping(values, origin)

    @classmethod
    def from_mapping(cls, raw: Any, origin: str) -> EvalSize:
        """An EvalSize from a mapping of registry keys (missing keys keep their defaults).

        ConfigError naming ``origin`` for unknown keys or values that are not positive integers.
        """
        if not isinstance(raw, dict):
            raise ConfigError(f"{origin}: expected a table with keys {list(EVAL_SIZE_KEYS)}.")
        unknown = set(raw) - set(EVAL_SIZE_KEYS)
        if unknown:
            raise ConfigError(
                f"{origin}: unknown keys {sorted(unknown)}; valid keys are {list(EVAL_SIZE_KEYS)}."
            )
        values = cls().to_dict() | raw
        try:
            return cls(*(values[k] for k in EVAL_SIZE_KEYS))  # __post_init__ checks the values
        except ConfigError as exc:
            raise ConfigError(f"{origin}: {exc}") from None


DEFAULT_EVAL_SIZE = EvalSize()


@dataclass(frozen=True)
class SAESource:
    """Where the SAEs of one site come from: local directories or an sae-lens release."""

    site: str
    layers: tuple[int, ...]
    path: str | None = None  # directory pattern with ``{layer}``
    release: str | None = None
    sae_id: str | None = None  # sae-lens id pattern with ``{layer}``

    def describe(self, layer: int) -> str:
        """Human-readable location of the SAE at ``layer`` (for error messages)."""
        if self.path:
            return self.path.format(layer=layer)
        return f"sae-lens release {self.release!r} id {str(self.sae_id).format(layer=layer)!r}"


@dataclass(frozen=True)
class ModelEntry:
    """One registered model."""

    model_id: str
    path: str | None = None
    hub_id: str | None = None
    dtype: str = "float32"
    device: str | None = None
    saes: dict[str, SAESource] = field(default_factory=dict)
    locality_file: str | None = None
    ppl_file: str | None = None
    control_subjects: tuple[str, ...] = ()
    # JSON list of {"subject", "relation", "target"}: the facts bench erases on this model (a
    # TOFU-style fine-tune's fictional people, editing.world.tofu); None: genuine known facts.
    facts_file: str | None = None
    demo_size: str | None = None  # set for the built-in demo worlds
    # The Locality set's size ([models.<id>.evaluation]); None: the defaults (demo worlds) or
    # the whole locality_file.
    evaluation: EvalSize | None = None
    # Per method name, this model's parameter defaults ([models.<id>.params.<method>]).
    method_params: dict[str, dict[str, Any]] = field(default_factory=dict)

    def method_defaults(self, method: str) -> dict[str, Any]:
        """This model's defaults for ``method``'s parameters (empty: the params class's)."""
        return dict(self.method_params.get(method, {}))

    @property
    def is_demo(self) -> bool:
        """Whether this entry is a built-in demo world."""
        return self.demo_size is not None

    def sae_source(self, site: str) -> SAESource:
        """The SAE source of ``site``; ConfigError listing the sites that have SAEs."""
        if site not in self.saes:
            raise ConfigError(
                f"Model {self.model_id!r} has no SAEs at site {site!r}; sites with SAEs: "
                f"{sorted(self.saes)}. Add [models.{self.model_id}.saes.{site}] to the registry."
            )
        return self.saes[site]

    def public_dict(self) -> dict[str, Any]:
        """A JSON-friendly description (for ``featureedit models`` and the API)."""
        return {
            "model_id": self.model_id,
            "source": self.path or self.hub_id or f"demo world ({self.demo_size})",
            "dtype": self.dtype,
            "device": self.device,
            "saes": {s: {"layers": list(src.layers)} for s, src in self.saes.items()},
        }


def _demo_entry(model_id: str, size: str) -> ModelEntry:
    n_layers, sites = DEMO_WORLD_SAES[size]
    layers = tuple(range(n_layers))
    return ModelEntry(
        model_id=model_id,
        demo_size=size,
        saes={s: SAESource(site=s, layers=layers) for s in sites},
    )


def _parse_evaluation(model_id: str, raw: dict[str, Any], origin: str) -> EvalSize | None:
    if "evaluation" not in raw:
        return None
    return EvalSize.from_mapping(raw["evaluation"], f"{origin}: [models.{model_id}.evaluation]")


def _parse_params(model_id: str, raw: dict[str, Any], origin: str) -> dict[str, dict[str, Any]]:
    """``[models.<id>.params.<method>]`` tables, each validated by the method's params class."""
    from pydantic import ValidationError

    from editing.methods import method_spec

    tables = raw.get("params", {})
    if not isinstance(tables, dict):
        raise ConfigError(f"{origin}: [models.{model_id}.params] must be a table of methods.")
    out: dict[str, dict[str, Any]] = {}
    for method, values in tables.items():
        where = f"{origin}: [models.{model_id}.params.{method}]"
        try:
            params_cls = method_spec(method).params_cls
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        if not isinstance(values, dict):
            raise ConfigError(f"{where} must be a table of parameter values.")
        try:
            params_cls.model_validate(values)
        except ValidationError as exc:
            fields = ", ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise ConfigError(f"{where}: invalid parameters ({fields}).") from None
        out[method] = dict(values)
    return out


def _parse_entry(model_id: str, raw: dict[str, Any], origin: str) -> ModelEntry:
    known = {
        "path",
        "hub_id",
        "dtype",
        "device",
        "saes",
        "locality_file",
        "ppl_file",
        "control_subjects",
        "facts_file",
        "evaluation",
        "params",
    }
    unknown = set(raw) - known
    if unknown:
        raise ConfigError(
            f"{origin}: model {model_id!r} has unknown keys {sorted(unknown)}; "
            f"valid keys are {sorted(known)}."
        )
    if not (raw.get("path") or raw.get("hub_id")):
        raise ConfigError(f"{origin}: model {model_id!r} needs 'path' or 'hub_id'.")
    saes = {}
    for site, src in raw.get("saes", {}).items():
        if not (src.get("path") or (src.get("release") and src.get("sae_id"))):
            raise ConfigError(
                f"{origin}: SAEs of {model_id!r} at {site!r} need 'path' or 'release' and 'sae_id'."
            )
        saes[site] = SAESource(
            site=site,
            layers=tuple(src.get("layers", ())),
            path=src.get("path"),
            release=src.get("release"),
            sae_id=src.get("sae_id"),
        )
    settings.check_dtype_name(raw.get("dtype", "float32"))  # validates (torch-free)
    return ModelEntry(
        model_id=model_id,
        path=raw.get("path"),
        hub_id=raw.get("hub_id"),
        dtype=raw.get("dtype", "float32"),
        device=raw.get("device"),
        saes=saes,
        locality_file=raw.get("locality_file"),
        ppl_file=raw.get("ppl_file"),
        control_subjects=tuple(raw.get("control_subjects", ())),
        facts_file=raw.get("facts_file"),
        evaluation=_parse_evaluation(model_id, raw, origin),
        method_params=_parse_params(model_id, raw, origin),
    )


def registry_file(home: str | os.PathLike[str] | None = None) -> Path | None:
    """The registry TOML in force, if any (``FEATUREEDIT_REGISTRY``, else home/models.toml)."""
    env = settings.registry_path()
    if env:
        path = Path(env).expanduser()
        if not path.is_file():
            raise NotFoundError(f"FEATUREEDIT_REGISTRY points to {path}, which does not exist.")
        return path
    path = settings.home(home) / "models.toml"
    return path if path.is_file() else None


def load_registry(home: str | os.PathLike[str] | None = None) -> dict[str, ModelEntry]:
    """All registered models: the built-in demo worlds plus the registry file's entries."""
    entries = {mid: _demo_entry(mid, size) for mid, size in DEMO_MODELS.items()}
    path = registry_file(home)
    if path is not None:
        try:
            data = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path} is not valid TOML: {exc}") from exc
        for model_id, raw in data.get("models", {}).items():
            if model_id in DEMO_MODELS:
                if set(raw) - BUILTIN_TABLES:
                    raise ConfigError(
                        f"{path}: {model_id!r} is a built-in model id; choose another (a "
                        f"built-in model takes only [models.{model_id}.evaluation] and "
                        f"[models.{model_id}.params.<method>] tables)."
                    )
                entries[model_id] = replace(
                    entries[model_id],
                    evaluation=_parse_evaluation(model_id, raw, str(path)),
                    method_params=_parse_params(model_id, raw, str(path)),
                )
                continue
            entries[model_id] = _parse_entry(model_id, raw, str(path))
    return entries


def get_entry(model_id: str, home: str | os.PathLike[str] | None = None) -> ModelEntry:
    """The registry entry of ``model_id`` (or an ad-hoc entry for a local model directory)."""
    entries = load_registry(home)
    if model_id in entries:
        return entries[model_id]
    if Path(model_id).expanduser().is_dir():
        return ModelEntry(model_id=model_id, path=str(Path(model_id).expanduser()))
    raise UnknownModelError(
        f"Unknown model id {model_id!r}. Registered models: {sorted(entries)}. Register it in "
        f"{registry_file(home) or settings.home(home) / 'models.toml'} or pass a local directory."
    )


def check_model_id(model_id: str) -> str:
    """``model_id`` if it can name a new registry entry; ConfigError saying why not otherwise."""
    if not MODEL_ID_RE.match(model_id):
        raise ConfigError(
            f"Invalid model id {model_id!r}: use letters, digits, '-' and '_' (e.g. 'smollm2')."
        )
    if model_id in DEMO_MODELS:
        raise ConfigError(
            f"{model_id!r} is a built-in model id ({sorted(DEMO_MODELS)}); choose another."
        )
    return model_id


def params_tables(model_id: str, params: dict[str, dict[str, Any]]) -> str:
    """``[models.<model_id>.params.<method>]`` TOML tables holding ``params`` (scalars, lists)."""
    blocks = []
    for method, values in params.items():
        lines = [f"[models.{model_id}.params.{method}]"]
        lines += [f"{key} = {json.dumps(value)}" for key, value in values.items()]
        blocks.append("\n".join(lines) + "\n")
    return "\n".join(blocks)


def register_model(
    model_id: str,
    path: Path,
    dtype: str,
    home: str | os.PathLike[str] | None = None,
    params: dict[str, dict[str, Any]] | None = None,
    extra: dict[str, Any] | None = None,
    evaluation: dict[str, int] | None = None,
) -> tuple[Path, bool]:
    """Add ``[models.<model_id>]`` with ``path`` and ``dtype`` to the registry file in force,
    and ``params`` (method name -> this model's parameter defaults) as its ``params`` tables.

    A new entry also gets ``extra`` (more top-level keys, e.g. ``locality_file``; strings or
    lists of strings) and ``evaluation`` (its ``[models.<model_id>.evaluation]`` table).

    The file is ``FEATUREEDIT_REGISTRY`` or ``$FEATUREEDIT_HOME/models.toml`` (created if
    missing); the tables are appended, so comments and other entries stay as they are. Returns
    the file and whether it changed: an entry that already points to ``path`` is kept as it is,
    except that ``params`` tables it lacks are added (a method's table already there is never
    replaced); ConfigError if ``model_id`` is registered with another source (remove that table
    first).
    """
    check_model_id(model_id)
    settings.check_dtype_name(dtype)
    file = registry_file(home) or settings.home(home) / "models.toml"
    existing = load_registry(home).get(model_id)
    block = ""
    if existing is not None:
        if not (existing.path and Path(existing.path).expanduser().resolve() == path.resolve()):
            raise ConfigError(
                f"Model id {model_id!r} is already registered in {file} with source "
                f"{existing.path or existing.hub_id!r}; remove its [models.{model_id}] table or "
                "choose another id."
            )
        params = {m: v for m, v in (params or {}).items() if m not in existing.method_params}
        if not params:  # the operator's own params tables are never replaced
            return file, False
    else:
        block = (
            f"[models.{model_id}]\npath = {json.dumps(str(path))}\ndtype = {json.dumps(dtype)}\n"
        )
        block += "".join(f"{k} = {json.dumps(v)}\n" for k, v in (extra or {}).items())
        if evaluation:
            block += f"\n[models.{model_id}.evaluation]\n"
            block += "".join(f"{k} = {json.dumps(v)}\n" for k, v in evaluation.items())
        _parse_entry(model_id, tomllib.loads(block)["models"][model_id], "register_model")
    if params:
        tables = params_tables(model_id, params)
        _parse_params(model_id, tomllib.loads(tables)["models"][model_id], "register_model")
        block += ("\n" if block else "") + tables
    text = file.read_text() if file.is_file() else ""
    head = text.rstrip("\n") + "\n\n" if text.strip() else ""
    tmp = file.with_name(f".{file.name}.tmp")
    tmp.write_text(head + block)
    os.replace(tmp, file)  # atomic: readers see the old file or the new one
    return file, True


def _drop_tables(text: str, drop: Callable[[str], bool]) -> str:
    """``text`` without the TOML tables whose header name (``models.x.saes.y``) ``drop``
    accepts: each such header and its lines up to the next table header."""
    kept: list[str] = []
    skipping = False
    for line in text.splitlines():
        header = TABLE_HEADER_RE.match(line)
        if header:
            skipping = drop(header.group(1))
        if not skipping:
            kept.append(line)
    return "\n".join(kept) + ("\n" if kept else "")


def unregister_model(model_id: str, home: str | os.PathLike[str] | None = None) -> Path:
    """Remove ``[models.<model_id>]`` and every ``[models.<model_id>.*]`` table (SAEs, params,
    evaluation) from the registry file in force; the file.

    ConfigError if the model is not registered there, or if it is still there afterwards (it is
    defined in a form this function does not rewrite, e.g. a dotted key; edit the file by hand).
    """
    file = registry_file_of(model_id, home)
    prefix = f"models.{model_id}"
    text = _drop_tables(file.read_text(), lambda n: n == prefix or n.startswith(prefix + "."))
    if model_id in tomllib.loads(text).get("models", {}):
        raise ConfigError(
            f"Cannot remove model {model_id!r} from {file}: its entry is defined in a form this "
            "command does not rewrite; remove it by hand."
        )
    tmp = file.with_name(f".{file.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, file)  # atomic: readers see the old file or the new one
    return file


def registry_file_of(model_id: str, home: str | os.PathLike[str] | None = None) -> Path:
    """The registry file that defines ``model_id``; ConfigError for a demo or ad-hoc model."""
    file = registry_file(home)
    entry = load_registry(home).get(model_id)
    if entry is None or entry.is_demo or file is None:
        raise ConfigError(
            f"Model {model_id!r} is not registered in a registry file; SAEs can only be "
            "registered for a model added with `featureedit models add` (or use --no-register)."
        )
    return file


def register_saes(
    model_id: str,
    site: str,
    path_pattern: str,
    layers: list[int],
    home: str | os.PathLike[str] | None = None,
) -> Path:
    """Set ``[models.<model_id>.saes.<site>]`` to local sae-lens directories ``path_pattern``.

    ``path_pattern`` holds ``{layer}``. The model must be registered in the registry file in
    force; an existing table for the site is replaced (its lines, up to the next table), the rest
    of the file is kept as it is. Returns the file.
    """
    file = registry_file_of(model_id, home)
    header = f"[models.{model_id}.saes.{site}]"
    kept = _drop_tables(file.read_text(), lambda name: name == header[1:-1])
    block = f"{header}\npath = {json.dumps(path_pattern)}\nlayers = {json.dumps(sorted(layers))}\n"
    text = kept.rstrip("\n") + "\n\n" + block
    try:
        tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            f"Cannot register SAEs in {file}: the table {header} is defined in a form this "
            f"command does not rewrite ({exc}); edit the file by hand."
        ) from exc
    tmp = file.with_name(f".{file.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, file)
    return file
