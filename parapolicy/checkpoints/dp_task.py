"""How upstream evaluates a checkpoint, read from its stored ``cfg.task``.

Upstream's workspaces save the task config (``config/task/*.yaml``) inside the checkpoint;
its ``env_runner`` section names the runner class and the settings the policy was scored
with: ``abs_action`` (robomimic: absolute pose actions with 6-d rotations), ``max_steps``,
``test_start_seed``. Only those facts are read, each typed and bounded; an absent one is
None (the rollout's env config decides), a malformed one is a ``CheckpointError``.
"""

from __future__ import annotations

from parapolicy.checkpoints.dp_cfg import resolve_section
from parapolicy.checkpoints.fields import check_bool, check_int
from parapolicy.checkpoints.limits import MAX_EPISODE_STEPS
from parapolicy.checkpoints.messages import describe
from parapolicy.errors import CheckpointError
_ABSENT = object()


def read_task(cfg, trust_checkpoint: bool = False) -> dict:
    """``{runner, task_name, dataset_type, abs_action, max_steps, test_start_seed}`` (None where absent).

    ``runner`` is the runner's class name (e.g. ``RobomimicImageRunner``); ``task_name`` is
    upstream's task folder name (``lift``, ``tool_hang``, ...), from ``task.task_name`` or
    else from the runner's ``dataset_path`` (``.../datasets/<task>/<type>/<file>.hdf5``).
    """

    def get(dotted):
        return resolve_section(cfg, dotted, trust_checkpoint, _ABSENT)

    target = _string("cfg.task.env_runner._target_", get("task.env_runner._target_"))
    task_name = _string("cfg.task.task_name", get("task.task_name"))
    dataset_path = _string("cfg.task.env_runner.dataset_path", get("task.env_runner.dataset_path"))
    if task_name is None and dataset_path is not None:
        parts = dataset_path.replace("\\", "/").split("/")
        task_name = parts[-3] if len(parts) >= 3 else None
    abs_action = get("task.env_runner.abs_action")
    if abs_action is _ABSENT:
        abs_action = get("task.abs_action")
    task = {
        "runner": target.rsplit(".", 1)[-1] if target else None,
        "task_name": task_name,
        "dataset_type": _string("cfg.task.dataset_type", get("task.dataset_type")),
        "abs_action": None if abs_action is _ABSENT else check_bool("cfg.task.env_runner.abs_action", abs_action),
        "max_steps": _int("cfg.task.env_runner.max_steps", get("task.env_runner.max_steps"), 1, MAX_EPISODE_STEPS),
        "test_start_seed": _int("cfg.task.env_runner.test_start_seed", get("task.env_runner.test_start_seed"), 0,
                                2**32 - 1),
    }
    return task if any(v is not None for v in task.values()) else {}


def _string(name: str, value):
    if value is _ABSENT or value is None:
        return None
    if not isinstance(value, str) or len(value) > 1000:
        raise CheckpointError(f"{name} must be a string, found {describe(value)}")
    return value


def _int(name: str, value, lo: int, hi: int):
    return None if value is _ABSENT or value is None else check_int(name, value, lo, hi)
