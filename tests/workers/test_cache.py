"""ModelCache: load once, LRU eviction, pristine-weights check."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from workers.cache import ModelCache

MODEL = "demo-small"


@pytest.fixture
def counting_loader() -> tuple[list[str], Any]:
    """A loader that really loads (the small demo model) and records what it loaded."""
    from editing.models import load_model

    calls: list[str] = []

    def load(model_id: str, device: str, dtype: str, home: Path | None) -> Any:
        calls.append(f"{model_id}/{device}/{dtype}")
        return load_model(model_id, device=device, dtype=dtype, home=home)

    return calls, load


def test_loads_once_and_keys_by_device_and_dtype(
    small_world: Any, fe_home: Path, counting_loader: tuple[list[str], Any]
) -> None:
    calls, loader = counting_loader
    cache = ModelCache(1, home=fe_home, loader=loader)
    assert cache.key_for(MODEL) == (MODEL, "cpu", "float32")
    first, seconds, cached = cache.get(MODEL)
    assert not cached and seconds > 0
    again, seconds, cached = cache.get(MODEL)
    assert again is first and cached and seconds == 0.0
    assert calls == [f"{MODEL}/cpu/float32"] and cache.loads == 1
    assert MODEL in cache and len(cache) == 1
    assert cache.entry(MODEL).jobs == 2


def test_lru_eviction(
    small_world: Any, fe_home: Path, counting_loader: tuple[list[str], Any]
) -> None:
    _, loader = counting_loader
    cache = ModelCache(1, home=fe_home, loader=loader, dtype="float32")
    cache.get(MODEL)
    other = ModelCache(1, home=fe_home, loader=loader, dtype="bfloat16")
    assert other.key_for(MODEL) == (MODEL, "cpu", "bfloat16")
    cache.dtype = "bfloat16"  # same cache, another key: the first entry is evicted
    cache.get(MODEL)
    assert cache.keys() == [(MODEL, "cpu", "bfloat16")] and cache.loads == 2
    two = ModelCache(2, home=fe_home, loader=loader)
    two.get(MODEL)
    two.dtype = "bfloat16"
    two.get(MODEL)
    assert len(two) == 2
    with pytest.raises(ValueError, match="at least 1"):
        ModelCache(0)


def test_verify_drops_a_model_whose_weights_changed(small_world: Any, fe_home: Path) -> None:
    cache = ModelCache(1, home=fe_home)
    loaded, _, _ = cache.get(MODEL)
    assert cache.verify(loaded) is True
    loaded.adapter.down_proj_weight(1).data[0, 0] += 0.5
    assert cache.verify(loaded) is False
    assert MODEL not in cache
    assert cache.verify(loaded) is True  # not cached any more: nothing to check
    fresh, _, cached = cache.get(MODEL)
    assert fresh is not loaded and not cached and cache.loads == 2


def test_unknown_model_error_propagates(fe_home: Path) -> None:
    from editing.errors import UnknownModelError

    with pytest.raises(UnknownModelError, match="Registered models"):
        ModelCache(1, home=fe_home).get("no-such-model")
