"""Request thresholds the tests share.

``ACCEPT_ALL`` accepts whatever the erasure measures — every greedy criterion and the worker's
default attack limits (``editing.acceptance.DEFAULT_ATTACK_LIMITS``), which a request's own limits
override — for tests of the queue, chunking and publishing mechanics, not of an erasure's strength.
The attacks still run and are reported.
"""

from __future__ import annotations

from typing import Any

ACCEPT_ALL: dict[str, Any] = {
    "min_reliability": 0.0,
    "min_generalization": 0.0,
    "min_locality": 0.0,
    "max_delta_ppl": 1e9,
    "max_sampled_leak": 1.0,
    "max_logit_lens_success_at_1": 1.0,
}
