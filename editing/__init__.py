"""featureedit: erase private facts from causal language models by editing SAE-located weights.

featureedit never downloads: models and SAEs load from local paths or an already-filled Hugging
Face cache (``HF_HUB_OFFLINE=1`` is set unless the caller set it).
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
