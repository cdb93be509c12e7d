"""Gymnasium environments, observation adapters and scripted experts for parapolicy.

Importing this package registers the environments under the ``parapolicy/`` namespace.
"""

import gymnasium as gym

from parapolicy_envs.multistep import MultiStepWrapper

_ENVS = {
    "parapolicy/ToyReach-v0": ("parapolicy_envs.toy:ToyReachEnv", {}, 60),
    "parapolicy/PushT-keypoints-v0": ("parapolicy_envs.pusht:PushTDPEnv", {"obs_type": "keypoints"}, 300),
    "parapolicy/PushT-image-v0": ("parapolicy_envs.pusht:PushTDPEnv", {"obs_type": "image"}, 300),
    "parapolicy/Lift-lowdim-v0": ("parapolicy_envs.robomimic_env:RobomimicLowdimEnv", {"task": "Lift"}, 400),
    "parapolicy/Can-lowdim-v0": ("parapolicy_envs.robomimic_env:RobomimicLowdimEnv", {"task": "PickPlaceCan"}, 400),
    "parapolicy/Square-lowdim-v0": ("parapolicy_envs.robomimic_env:RobomimicLowdimEnv", {"task": "NutAssemblySquare"},
                                    400),
}


def register_envs() -> None:
    for env_id, (entry, kwargs, steps) in _ENVS.items():
        if env_id not in gym.registry:
            gym.register(env_id, entry_point=entry, kwargs=kwargs, max_episode_steps=steps,
                         disable_env_checker=True)


register_envs()

__all__ = ["MultiStepWrapper", "register_envs"]
