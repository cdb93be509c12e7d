"""robomimic / robosuite tasks as upstream DiffusionPolicy's robomimic runners build them.

One env class for the five tasks (Lift, Can, Square, Transport, ToolHang), two observation
types and two control modes, all read from ``TASKS`` (the facts upstream's task configs and
robomimic's ``ph`` datasets fix; see docs/robomimic.md for their sources):

* ``obs_type="lowdim"``: the concatenation of ``object`` and each arm's ``eef_pos``,
  ``eef_quat``, ``gripper_qpos`` (Lift 19-d, Can/Square 23, ToolHang 53, Transport 59).
* ``obs_type="image"``: a dict of each task's camera images, CHW float32 in [0, 1] (robomimic
  flips robosuite's frames upright), plus the arms' low-dim keys, with object state off, as
  upstream's image runner. Rendered offscreen on the CPU (see ``render_backend``).
* ``abs_action=False``: OSC_POSE delta actions in [-1, 1]; ``True``: absolute OSC_POSE
  (``control_delta: false``), per arm ``[position 3, axis-angle 3, gripper 1]`` in the world
  frame. Policies that output 6-d rotations go through ``actions.adapt_actions``.

Seeding is upstream's test seeding, ``np.random.seed(seed)`` then ``reset()`` (robosuite draws
initial object poses from numpy's global RNG). The reward is the sparse task success and
episodes run to ``max_episode_steps``: upstream never ends them early.
Needs the ``robomimic`` extra (robomimic 0.3.0, robosuite 1.4.1, mujoco < 3.10).
"""

from __future__ import annotations

import ctypes.util
import importlib.util
import os
import sys
import types
from dataclasses import dataclass

import gymnasium as gym
import numpy as np

ARM_KEYS = ("eef_pos", "eef_quat", "gripper_qpos")
ARM_DIM = 7  # robosuite OSC_POSE per arm: 3 position + 3 rotation + 1 gripper


@dataclass(frozen=True)
class Task:
    """One robomimic task as upstream evaluates it (``ph`` datasets)."""

    robosuite_env: str
    robots: tuple
    cameras: tuple  # image obs cameras, in upstream's shape_meta order
    image_size: int
    max_steps: int  # upstream's env_runner.max_steps for the ph datasets (mh: 500 for Lift/Can/Square)
    env_configuration: str | None = None

    @property
    def n_arms(self) -> int:
        return len(self.robots)


TASKS = {
    "Lift": Task("Lift", ("Panda",), ("agentview", "robot0_eye_in_hand"), 84, 400),
    "Can": Task("PickPlaceCan", ("Panda",), ("agentview", "robot0_eye_in_hand"), 84, 400),
    "Square": Task("NutAssemblySquare", ("Panda",), ("agentview", "robot0_eye_in_hand"), 84, 400),
    "Transport": Task("TwoArmTransport", ("Panda", "Panda"),
                      ("shouldercamera0", "robot0_eye_in_hand", "shouldercamera1", "robot1_eye_in_hand"), 84, 700,
                      env_configuration="single-arm-opposed"),
    "ToolHang": Task("ToolHang", ("Panda",), ("sideview", "robot0_eye_in_hand"), 240, 700),
}
OBS_TYPES = ("lowdim", "image")


def render_backend() -> str:
    """The MuJoCo GL backend for offscreen rendering: ``MUJOCO_GL`` if set, else OSMesa when
    Mesa's libOSMesa is installed (Debian ``libosmesa6``; CPU rendering, no display), else EGL."""
    if not os.environ.get("MUJOCO_GL"):
        os.environ["MUJOCO_GL"] = "osmesa" if ctypes.util.find_library("OSMesa") else "egl"
    return os.environ["MUJOCO_GL"]


def _load_triton_first(backend: str) -> None:
    """Mesa's software GL (OSMesa, or EGL on llvmpipe) and triton each load their own LLVM:
    importing triton (diffusers and torch._dynamo do) after a Mesa context exists segfaults the
    process, while the other order works. So triton, when installed, is loaded before the GL."""
    if backend in ("osmesa", "egl") and "triton" not in sys.modules and importlib.util.find_spec("triton"):
        import triton  # noqa: F401


def _import_robomimic():
    _load_triton_first(render_backend())  # robosuite reads MUJOCO_GL when it is first imported
    if "mujoco_py" not in sys.modules:  # robomimic 0.3.0 imports it only for an exception type
        stub = types.ModuleType("mujoco_py")
        stub.builder = types.SimpleNamespace(MujocoException=Exception)
        sys.modules["mujoco_py"] = stub
    try:
        import robomimic.utils.env_utils as env_utils
        import robomimic.utils.obs_utils as obs_utils
        from robosuite.controllers import load_controller_config
    except ImportError as exc:
        raise ImportError(
            f"robomimic tasks need the robomimic extra: pip install 'parapolicy[robomimic]' ({exc})"
        ) from None
    return env_utils, obs_utils, load_controller_config


def _modalities() -> dict:
    """robomimic's observation modalities for every task at once: its mapping is process-global,
    so each env sets the same one and envs of different tasks can share a process."""
    arms = [f"robot{i}_{k}" for i in range(2) for k in ARM_KEYS]
    cameras = sorted({f"{c}_image" for task in TASKS.values() for c in task.cameras})
    return {"low_dim": ["object", *arms], "rgb": cameras}


def task_name(name: str) -> str:
    """The ``TASKS`` key for a task name, also accepting robosuite's and upstream's spellings
    (``PickPlaceCan``, ``tool_hang``, ``square``)."""
    folded = name.replace("_", "").lower()
    for key, task in TASKS.items():
        if folded in (key.lower(), task.robosuite_env.lower()):
            return key
    raise ValueError(f"unknown robomimic task {name!r}; choose one of {', '.join(TASKS)}")


class RobomimicEnv(gym.Env):
    metadata = {"render_modes": ["rgb_array"], "render_fps": 20}
    control_hz = 20

    def __init__(self, task: str = "Lift", obs_type: str = "lowdim", abs_action: bool = False,
                 image_size: int | None = None, render_mode=None):
        if obs_type not in OBS_TYPES:
            raise ValueError(f"obs_type must be one of {OBS_TYPES}, got {obs_type!r}")
        self.task = task_name(task)
        spec = TASKS[self.task]
        self.obs_type, self.abs_action, self.n_arms = obs_type, bool(abs_action), spec.n_arms
        self.image_size = int(image_size or spec.image_size)
        self.render_mode = render_mode
        env_utils, obs_utils, load_controller_config = _import_robomimic()
        self._set_modalities = lambda: obs_utils.initialize_obs_modality_mapping_from_dict(_modalities())
        self._set_modalities()
        image = obs_type == "image"
        controller = load_controller_config(default_controller="OSC_POSE")
        controller["control_delta"] = not self.abs_action
        env_kwargs = {
            "has_renderer": False,
            "has_offscreen_renderer": image or render_mode is not None,
            "ignore_done": True,
            "use_object_obs": not image,  # upstream's image runner turns object state off
            "use_camera_obs": image,
            "control_freq": self.control_hz,
            "controller_configs": controller,
            "robots": list(spec.robots),
            "reward_shaping": False,
        }
        if spec.env_configuration:
            env_kwargs["env_configuration"] = spec.env_configuration
        if image:
            env_kwargs.update(camera_names=list(spec.cameras), camera_heights=self.image_size,
                              camera_widths=self.image_size, camera_depths=False)
        self._env = env_utils.create_env_from_metadata(
            env_meta={"env_name": spec.robosuite_env, "type": 1, "env_kwargs": env_kwargs},
            render=False, render_offscreen=image or render_mode is not None, use_image_obs=image,
        )
        if image:
            self._env.env.hard_reset = False  # as upstream's image runner: a hard reset reloads the renderer
        arm_keys = [f"robot{i}_{k}" for i in range(self.n_arms) for k in ARM_KEYS]
        self.obs_keys = ["object", *arm_keys] if not image else [*(f"{c}_image" for c in spec.cameras), *arm_keys]
        self.raw_obs: dict = {}
        self.observation_space = self._space(self._env.reset())
        bound = np.inf if self.abs_action else 1.0
        self.action_space = gym.spaces.Box(-bound, bound, shape=(ARM_DIM * self.n_arms,), dtype=np.float64)

    def _space(self, raw) -> gym.Space:
        if self.obs_type == "lowdim":
            dim = sum(int(np.prod(raw[k].shape)) for k in self.obs_keys)
            return gym.spaces.Box(-np.inf, np.inf, shape=(dim,), dtype=np.float64)
        return gym.spaces.Dict({
            k: gym.spaces.Box(0.0, 1.0, tuple(raw[k].shape), np.float32) if k.endswith("_image")
            else gym.spaces.Box(-np.inf, np.inf, tuple(raw[k].shape), np.float64)
            for k in self.obs_keys
        })

    def _obs(self, raw):
        self.raw_obs = raw
        if self.obs_type == "lowdim":
            return np.concatenate([np.asarray(raw[k], dtype=np.float64).reshape(-1) for k in self.obs_keys])
        return {k: np.asarray(raw[k], dtype=np.float32 if k.endswith("_image") else np.float64)
                for k in self.obs_keys}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._set_modalities()
        if seed is not None:
            np.random.seed(seed)  # robosuite samples initial poses from numpy's global RNG
        return self._obs(self._env.reset()), {"is_success": False}

    def step(self, action):
        action = np.asarray(action, dtype=np.float64)
        if action.shape != self.action_space.shape:
            raise ValueError(f"{self.task} takes actions of shape {self.action_space.shape}, got {action.shape}")
        raw, reward, _done, info = self._env.step(action)
        success = bool(self._env.is_success()["task"])
        return self._obs(raw), float(reward), False, False, dict(info, is_success=success)

    def commanded_pose(self) -> np.ndarray:
        """Each arm's current controller goal as an absolute action ``[pos, axis-angle, gripper]``
        (gripper 0): what an absolute-action env would be told to reach. Recording it after each
        delta step converts delta demonstrations to absolute ones, as upstream's converter does."""
        from parapolicy_envs.rotations import matrix_to_axis_angle

        poses = []
        for robot in self._env.env.robots:
            controller = robot.controller
            poses.append(np.concatenate([controller.goal_pos, matrix_to_axis_angle(controller.goal_ori), [0.0]]))
        return np.concatenate(poses)

    def eef_pose(self) -> np.ndarray:
        """Each arm's end-effector pose in the controller's frame, ``[pos, axis-angle]`` per arm."""
        from parapolicy_envs.rotations import matrix_to_axis_angle

        poses = []
        for robot in self._env.env.robots:
            robot.controller.update(force=True)
            poses.append(np.concatenate([robot.controller.ee_pos, matrix_to_axis_angle(robot.controller.ee_ori_mat)]))
        return np.concatenate(poses)

    def render(self):
        camera = TASKS[self.task].cameras[0]
        return self._env.render(mode="rgb_array", height=128, width=128, camera_name=camera)
