"""Failure drills on a private stack: ``featureedit drill`` (see docs/drills.md).

Importing this package registers the drills; :data:`ORDER` is the order they run in (the process
drills publish the checkpoints the later ones reuse).
"""

from ops.drills import hostile, hostile_limits, openapi, process_faults, storage_faults
from ops.drills.base import DRILLS, DrillContext, DrillResult, run_drills

ORDER = (
    "worker-kill",
    "redis-restart",
    "disk-full",
    "corrupt-checkpoint",
    "hostile-requests",
    "hostile-limits",
    "schemathesis",
)
# Names ``--only`` also takes, each standing for a group of drills.
GROUPS = {"hostile": ("hostile-requests", "hostile-limits", "schemathesis")}
for _name in ORDER:  # re-insert in run order (run_drills follows DRILLS' order)
    DRILLS[_name] = DRILLS.pop(_name)

__all__ = ["DRILLS", "GROUPS", "ORDER", "DrillContext", "DrillResult", "run_drills"]
_MODULES = (hostile, hostile_limits, openapi, process_faults, storage_faults)
