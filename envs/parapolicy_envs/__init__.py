"""Gymnasium environments, observation adapters and scripted experts for parapolicy.

Importing this package registers the environments under the ``parapolicy/`` namespace.
"""

import gymnasium as gym

from parapolicy_envs.multistep import MultiStepWrapper
from parapolicy_envs.robomimic_env import OBS_TYPES, TASKS

_ENVS = {
    "parapolicy/ToyReach-v0": ("parapolicy_envs.toy:ToyReachEnv", {}, 60),
    "parapolicy/PushT-keypoints-v0": ("parapolicy_envs.pusht:PushTDPEnv", {"obs_type": "keypoints"}, 300),
    "parapolicy/PushT-image-v0": ("parapolicy_envs.pusht:PushTDPEnv", {"obs_type": "image"}, 300),
}


def robomimic_env_id(task: str, obs_type: str) -> str:
    """``parapolicy/Lift-lowdim-v0`` ... ``parapolicy/ToolHang-image-v0`` (absolute actions: ``abs_action=True``)."""
    return f"parapolicy/{task}-{obs_type}-v0"


_ENVS.update({
    robomimic_env_id(name, obs_type): ("parapolicy_envs.robomimic_env:RobomimicEnv",
                                       {"task": name, "obs_type": obs_type}, task.max_steps)
    for name, task in TASKS.items() for obs_type in OBS_TYPES
})


def register_envs() -> None:
    for env_id, (entry, kwargs, steps) in _ENVS.items():
        if env_id not in gym.registry:
            gym.register(env_id, entry_point=entry, kwargs=kwargs, max_episode_steps=steps,
                         disable_env_checker=True)


register_envs()

__all__ = ["MultiStepWrapper", "register_envs", "robomimic_env_id"]
