"""Tests of editing.settings (the library's one reader of the environment) and of the public,
lazily imported surface of ``editing``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from editing import settings


def _python(code: str, env: dict[str, str]) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def _env_without_hub_settings() -> dict[str, str]:
    unset = {*settings.HUB_DEFAULTS, "HF_HUB_DISABLE_PROGRESS_BARS", "TRANSFORMERS_OFFLINE"}
    return {k: v for k, v in os.environ.items() if k not in unset}


def test_import_editing_is_torch_free_and_leaves_the_environment_alone() -> None:
    code = (
        "import os, sys, editing, editing.settings\n"
        "heavy = [m for m in ('torch', 'transformers', 'huggingface_hub') if m in sys.modules]\n"
        "hub = [k for k in editing.settings.HUB_DEFAULTS if k in os.environ]\n"
        "print(heavy, hub)"
    )
    assert _python(code, _env_without_hub_settings()) == "[] []"


def test_public_names_resolve_lazily() -> None:
    import editing

    for name in editing.__all__:
        assert getattr(editing, name).__name__ == name
        assert name in dir(editing)
    with pytest.raises(AttributeError, match="has no attribute 'erase_everything'"):
        editing.erase_everything  # noqa: B018


def test_loading_a_model_makes_the_hub_offline_before_importing_it(tmp_path: Path) -> None:
    code = (
        "import editing\n"
        "try:\n"
        "    editing.load_model('no-such-model')\n"
        "except editing.EditingError:\n"
        "    pass\n"
        "import huggingface_hub.constants as c, os\n"
        "print(c.HF_HUB_OFFLINE, os.environ['WANDB_MODE'])"
    )
    env = {**_env_without_hub_settings(), "FEATUREEDIT_HOME": str(tmp_path)}
    assert _python(code, env) == "True disabled"
    # the caller's choice wins
    assert _python(code, {**env, "HF_HUB_OFFLINE": "0"}) == "False disabled"


def test_hub_defaults_keep_what_the_caller_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.delenv("HF_HUB_DISABLE_PROGRESS_BARS", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    settings.hub_defaults()
    assert os.environ["HF_HUB_OFFLINE"] == "0"
    assert os.environ["WANDB_MODE"] == "disabled"
    assert "HF_HUB_DISABLE_PROGRESS_BARS" not in os.environ
    settings.hub_defaults(quiet=True)
    assert os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1"


def test_exported_sets_and_restores(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FEATUREEDIT_DEVICE", "cuda:1")
    monkeypatch.delenv("FEATUREEDIT_DTYPE", raising=False)
    values = {"FEATUREEDIT_HOME": str(tmp_path), "FEATUREEDIT_DEVICE": None}
    with settings.exported({**values, "FEATUREEDIT_DTYPE": "bfloat16"}):
        assert settings.home() == tmp_path
        assert "FEATUREEDIT_DEVICE" not in os.environ  # None unsets
        assert os.environ["FEATUREEDIT_DTYPE"] == "bfloat16"
    assert "FEATUREEDIT_DTYPE" not in os.environ
    assert os.environ["FEATUREEDIT_DEVICE"] == "cuda:1"
    assert os.environ["FEATUREEDIT_HOME"] != str(tmp_path)


def test_child_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEATUREEDIT_REDIS_URL", "redis://elsewhere:6379/0")
    env = settings.child_environment({"FEATUREEDIT_REDIS_URL": None, "REDIS_URL": "redis://x/1"})
    assert "FEATUREEDIT_REDIS_URL" not in env and env["REDIS_URL"] == "redis://x/1"
    assert env["PATH"] == os.environ["PATH"]
    assert os.environ["FEATUREEDIT_REDIS_URL"] == "redis://elsewhere:6379/0"  # a copy


def test_home_without_create(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FEATUREEDIT_HOME", str(tmp_path / "new"))
    assert settings.home(create=False) == tmp_path / "new"
    assert not (tmp_path / "new").exists()
    assert settings.home(tmp_path / "arg") == tmp_path / "arg" and (tmp_path / "arg").is_dir()


def test_registry_and_fingerprint_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEATUREEDIT_REGISTRY", "")
    monkeypatch.setenv("FEATUREEDIT_FINGERPRINT_KEY", "")
    assert settings.registry_path() is None
    assert settings.fingerprint_key_text() == ""  # set but empty: fingerprint_key rejects it
    monkeypatch.setenv("FEATUREEDIT_REGISTRY", "/etc/models.toml")
    assert settings.registry_path() == "/etc/models.toml"
