"""A per-process cache of loaded models, so a worker loads each model once and keeps it warm.

The cache is an explicit object (the worker creates one and hands it to the jobs); nothing here is
a module global. Entries are keyed by ``(model_id, device, dtype)`` and evicted least recently used
beyond ``capacity``. When an entry is loaded, the sha256 of its down-projection weights (the only
weights an erasure changes) is recorded; :meth:`ModelCache.verify` compares it after every job and
drops a model whose weights differ, so the next job reloads it. The engine already restores the
weights (``editing.erase.run_erasure`` edits inside a ``WeightSession``): this is the belt to its
braces.
"""

from __future__ import annotations

import gc
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

CacheKey = tuple[str, str, str]  # (model_id, device, dtype)


@dataclass
class CachedModel:
    """One loaded model and what the cache knows about it."""

    key: CacheKey
    loaded: Any  # editing.models.LoadedModel
    pristine_sha256: str
    load_seconds: float
    jobs: int = 0


def _default_loader(
    model_id: str, device: str, dtype: str, home: Path | None
) -> Any:  # pragma: no cover - thin wrapper
    from editing.models import load_model

    return load_model(model_id, device=device, dtype=dtype, home=home)


def _weights_sha256(loaded: Any) -> str:
    from editing.checkpoints import down_proj_sha256

    return down_proj_sha256(loaded.adapter)


class ModelCache:
    """Loaded models by ``(model_id, device, dtype)``, at most ``capacity`` of them (LRU).

    ``device`` and ``dtype`` given here apply to every model (a worker started with
    ``--device cuda:1`` uses that device whatever the registry says); when None, each model's
    registry entry decides, then ``FEATUREEDIT_DEVICE`` / ``FEATUREEDIT_DTYPE``, then cpu/float32.
    Thread-safe; loading happens under the lock (a worker runs one job at a time anyway).
    """

    def __init__(
        self,
        capacity: int = 1,
        *,
        device: str | None = None,
        dtype: str | None = None,
        home: str | os.PathLike[str] | None = None,
        loader: Callable[[str, str, str, Path | None], Any] | None = None,
    ) -> None:
        if capacity < 1:
            raise ValueError(f"ModelCache capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self.device = device
        self.dtype = dtype
        self.home = Path(home) if home is not None else None
        self._loader = loader or _default_loader
        self._entries: OrderedDict[CacheKey, CachedModel] = OrderedDict()
        self._lock = threading.RLock()
        self.loads = 0  # models loaded over the cache's life (for tests and logs)

    # ------------------------------------------------------------------ keys
    def key_for(self, model_id: str) -> CacheKey:
        """The cache key ``model_id`` resolves to (device and dtype as strings)."""
        from editing import settings
        from editing.registry import get_entry

        entry = get_entry(model_id, self.home)
        device = settings.device(self.device or entry.device)
        dtype = settings.dtype(self.dtype or entry.dtype)
        return (model_id, str(device), str(dtype).removeprefix("torch."))

    # ------------------------------------------------------------------ access
    def get(self, model_id: str) -> tuple[Any, float, bool]:
        """``(loaded, load_seconds, was_cached)`` for ``model_id``, loading it if needed.

        ``load_seconds`` is the time spent loading now (0.0 when the model was cached).
        Errors of ``editing.models.load_model`` (UnknownModelError, NotFoundError...) propagate.
        """
        key = self.key_for(model_id)
        with self._lock:
            hit = self._entries.get(key)
            if hit is not None:
                self._entries.move_to_end(key)
                hit.jobs += 1
                return hit.loaded, 0.0, True
            while len(self._entries) >= self.capacity:
                old_key, _ = self._entries.popitem(last=False)
                log.info("model cache: evicting %s", "/".join(old_key))
                self._release()
            t0 = time.perf_counter()
            loaded = self._loader(key[0], key[1], key[2], self.home)
            pristine = _weights_sha256(loaded)
            seconds = time.perf_counter() - t0
            self.loads += 1
            self._entries[key] = CachedModel(key, loaded, pristine, seconds, jobs=1)
            log.info("model cache: loaded %s in %.1f s", "/".join(key), seconds)
            return loaded, seconds, False

    def verify(self, loaded: Any) -> bool:
        """Whether ``loaded`` still has the weights it was loaded with; if not, drop it.

        Call after every job that used ``loaded``. A model not in the cache (already dropped or
        evicted) counts as verified. Returns False when the model was dropped.
        """
        with self._lock:
            entry = next((e for e in self._entries.values() if e.loaded is loaded), None)
            if entry is None:
                return True
            try:
                current = _weights_sha256(loaded)
            except Exception:  # cannot even hash it: do not trust it
                log.exception("model cache: hashing %s failed; dropping it", "/".join(entry.key))
                current = None
            if current == entry.pristine_sha256:
                return True
            log.error(
                "model cache: %s weights differ from when it was loaded; dropping it (the next "
                "job reloads it)",
                "/".join(entry.key),
            )
            del self._entries[entry.key]
            self._release()
            return False

    def drop(self, model_id: str) -> bool:
        """Forget every entry of ``model_id``; whether there was one."""
        with self._lock:
            keys = [k for k in self._entries if k[0] == model_id]
            for k in keys:
                del self._entries[k]
            if keys:
                self._release()
            return bool(keys)

    def clear(self) -> None:
        """Forget every model."""
        with self._lock:
            self._entries.clear()
            self._release()

    def keys(self) -> list[CacheKey]:
        """Cached keys, least recently used first."""
        with self._lock:
            return list(self._entries)

    def entry(self, model_id: str) -> CachedModel | None:
        """The most recently used entry of ``model_id``, if cached."""
        with self._lock:
            for k in reversed(self._entries):
                if k[0] == model_id:
                    return self._entries[k]
            return None

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, model_id: object) -> bool:
        return any(k[0] == model_id for k in self.keys())

    @staticmethod
    def _release() -> None:
        """Give memory of dropped models back (and the CUDA cache, if CUDA was used)."""
        gc.collect()
        import sys

        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.empty_cache()
