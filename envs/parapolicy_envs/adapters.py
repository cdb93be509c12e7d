"""Observation adapters: an env's observations -> the keys and layout a checkpoint declares.

A checkpoint names its inputs (DP: ``obs`` or ``shape_meta`` keys such as ``image``;
LeRobot: ``observation.state``, ``observation.image``, ``observation.environment_state``).
``adapt_observations`` picks, for each declared input, where this env provides it, and
wraps the env so every observation already has the checkpoint's keys, shapes and scale
(LeRobot's ``preprocess_observation``: images CHW float32 in [0, 1], vectors float32):

* ``observation.state`` <- ``agent_pos`` (gym-pusht dicts, ``parapolicy/PushT-image-v0``),
  or the last two values of ``parapolicy/PushT-keypoints-v0`` (the agent position);
* ``observation.image*`` <- ``pixels`` (HWC uint8) or ``image`` (already CHW in [0, 1]);
* ``observation.environment_state`` <- gym-pusht's ``environment_state`` (the 8 T corners),
  or the same 16 values computed from the gym-pusht simulation inside ``parapolicy/PushT-*``.

An env that already yields exactly the declared keys is returned unchanged; a key the env
names itself passes through. A checkpoint input no source provides, or a shape that differs,
is one ``ObservationError`` listing both sides (an ``EnvPairingError`` when the checkpoint
takes images and the env has none, or the reverse).
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from parapolicy.errors import EnvPairingError, ObservationError

STATE, ENV = "observation.state", "observation.environment_state"


def make_adapted_env(env_id: str, kwargs: dict, obs_shapes: dict, obs_key: str = "obs",
                     checkpoint: str = "checkpoint") -> gym.Env:
    """``gym.make(env_id, **kwargs)`` with its observations adapted to ``obs_shapes``."""
    if env_id.startswith("gym_pusht/"):
        import gym_pusht  # noqa: F401 - registers gym_pusht/PushT-v0

    return adapt_observations(gym.make(env_id, **kwargs), obs_shapes, obs_key, checkpoint)


def adapt_observations(env: gym.Env, obs_shapes: dict, obs_key: str = "obs", checkpoint: str = "checkpoint") -> gym.Env:
    """``env`` wrapped so its observations carry exactly the checkpoint's ``obs_shapes`` keys
    (``checkpoint`` names it in errors)."""
    space = env.observation_space
    provided = _provided(space, obs_key)
    if provided == {k: tuple(s) for k, s in obs_shapes.items()}:
        return env
    getters, problems = {}, []
    for key, shape in obs_shapes.items():
        source = _source(env, space, key)
        if source is None:
            problems.append(f"{key!r} has no source")
            continue
        getter, found = source
        if tuple(found) != tuple(shape):
            problems.append(f"{key!r} needs shape {tuple(shape)}, the env gives {tuple(found)}")
            continue
        getters[key] = getter
    if problems:
        env_id = env.spec.id if env.spec is not None else type(env.unwrapped).__name__
        message = (f"{checkpoint} inputs {_describe(obs_shapes)} cannot be built from env {env_id!r} observations "
                   f"{_describe(provided)}: ")
        wants, has = (any(len(s) == 3 for s in shapes.values()) for shapes in (obs_shapes, provided))
        if wants != has:  # image inputs from an env without images, or the reverse
            kind, article = {True: "image", False: "low-dim"}, {True: "an", False: "a"}
            raise EnvPairingError(
                f"{message}{article[wants]} {kind[wants]} checkpoint cannot run in {article[has]} {kind[has]} env "
                f"(use the env's {kind[wants]} variant, or leave env= out to take it from the checkpoint); "
                f"{'; '.join(problems)}")
        raise ObservationError(message + "; ".join(problems))
    return ObservationAdapter(env, getters, obs_shapes)


class ObservationAdapter(gym.ObservationWrapper):
    """Builds each declared input from the wrapped env's observation (see module docstring)."""

    def __init__(self, env: gym.Env, getters: dict, obs_shapes: dict):
        super().__init__(env)
        self.getters = getters
        self.observation_space = gym.spaces.Dict({
            k: gym.spaces.Box(0.0, 1.0, tuple(s), np.float32) if len(s) == 3
            else gym.spaces.Box(-np.inf, np.inf, tuple(s), np.float32)
            for k, s in obs_shapes.items()
        })

    def observation(self, observation):
        return {k: np.asarray(get(observation), dtype=np.float32) for k, get in self.getters.items()}


def _provided(space: gym.Space, obs_key: str) -> dict:
    if isinstance(space, gym.spaces.Dict):
        return {k: tuple(s.shape) for k, s in space.spaces.items()}
    return {obs_key: tuple(space.shape)}


def _describe(shapes: dict) -> str:
    return "{" + ", ".join(f"{k}: {tuple(s)}" for k, s in shapes.items()) + "}"


def _source(env: gym.Env, space: gym.Space, key: str):
    """``(getter(obs) -> array, shape)`` for checkpoint input ``key``, or None."""
    spaces = space.spaces if isinstance(space, gym.spaces.Dict) else {}
    if key in spaces:  # the env names it already (robomimic image envs: camera and arm keys)
        return (lambda o: o[key]), spaces[key].shape
    sim = _pusht_sim(env)
    if key == STATE:
        if "agent_pos" in spaces:
            return (lambda o: o["agent_pos"]), spaces["agent_pos"].shape
        if sim is not None and getattr(env.unwrapped, "obs_type", None) == "keypoints":
            return (lambda o: np.asarray(o)[-2:]), (2,)  # DP's keypoint obs ends with the agent position
    elif key == ENV:
        if "environment_state" in spaces:
            return (lambda o: o["environment_state"]), spaces["environment_state"].shape
        if sim is not None:
            return (lambda _o: sim.get_keypoints(sim._block_shapes).reshape(-1)), (16,)
    elif key.startswith("observation.image"):
        if "pixels" in spaces or _is_pixels(space):
            pixels = spaces.get("pixels", space)
            h, w, c = pixels.shape
            return (lambda o: _chw(o["pixels"] if isinstance(o, dict) else o)), (c, h, w)
        if "image" in spaces:
            return (lambda o: o["image"]), spaces["image"].shape
    return None


def _is_pixels(space: gym.Space) -> bool:
    return isinstance(space, gym.spaces.Box) and len(space.shape) == 3 and space.dtype == np.uint8


def _chw(pixels) -> np.ndarray:
    """HWC uint8 -> CHW float32 in [0, 1], as LeRobot's ``preprocess_observation``."""
    return np.ascontiguousarray(np.asarray(pixels).transpose(2, 0, 1), dtype=np.float32) / 255.0


def _pusht_sim(env: gym.Env):
    """The gym-pusht simulation inside a ``parapolicy/PushT-*`` env (None for other envs)."""
    sim = getattr(env.unwrapped, "sim", None)
    return sim if sim is not None and hasattr(sim, "get_keypoints") else None  # _block_shapes: set by reset
