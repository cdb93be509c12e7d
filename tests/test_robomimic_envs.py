"""robomimic envs as upstream's runners build them: observations, control modes, episode lengths.

These create robosuite envs (seconds each): the default run keeps three, the rest are slow.
"""

import gymnasium as gym
import numpy as np
import pytest

import parapolicy_envs  # noqa: F401  (registers the envs)
from parapolicy_envs.actions import adapt_actions
from parapolicy_envs.rotations import axis_angle_to_matrix, axis_angle_to_rotation_6d, matrix_to_axis_angle

pytest.importorskip("robosuite")
pytest.importorskip("robomimic")

# upstream's config/task/<task>_lowdim.yaml obs_dim, <task>_image.yaml shape_meta, env_runner.max_steps (ph)
LOWDIM = {"Lift": 19, "Can": 23, "Square": 23, "ToolHang": 53, "Transport": 59}
MAX_STEPS = {"Lift": 400, "Can": 400, "Square": 400, "ToolHang": 700, "Transport": 700}
ARM = {"eef_pos": (3,), "eef_quat": (4,), "gripper_qpos": (2,)}
IMAGES = {
    "Lift": {"agentview_image": 84, "robot0_eye_in_hand_image": 84},
    "ToolHang": {"sideview_image": 240, "robot0_eye_in_hand_image": 240},
    "Transport": {"shouldercamera0_image": 84, "robot0_eye_in_hand_image": 84, "shouldercamera1_image": 84,
                  "robot1_eye_in_hand_image": 84},
}
IMAGES["Can"] = IMAGES["Square"] = IMAGES["Lift"]


def test_lift_expert_lifts_the_cube():
    from parapolicy_envs.lift_expert import LiftExpert

    env = gym.make("parapolicy/Lift-lowdim-v0").unwrapped
    obs, _ = env.reset(seed=100000)
    assert obs.shape == (19,)
    expert = LiftExpert(np.random.default_rng(0))
    for _ in range(150):
        obs, reward, _, _, info = env.step(expert.act(env))
        if info["is_success"]:
            break
    assert info["is_success"] and reward == 1.0


def test_absolute_actions_with_6d_rotations_reach_the_commanded_pose():
    """A policy's [pos, rot6d, gripper] goes through the runner's conversion to robosuite's
    absolute OSC_POSE; the end effector settles at that position and orientation."""
    env = gym.make("parapolicy/Lift-lowdim-v0", abs_action=True)
    env.reset(seed=100000)
    start = env.unwrapped.eef_pose()
    goal_pos = start[:3] + np.array([0.05, -0.04, 0.06])
    turn = np.array([0.0, 0.0, 0.3])  # a 0.3 rad turn about the world z axis
    goal_rot = axis_angle_to_matrix(turn) @ axis_angle_to_matrix(start[3:])
    action = np.concatenate([goal_pos, axis_angle_to_rotation_6d(matrix_to_axis_angle(goal_rot)), [-1.0]])
    policy_env = adapt_actions(env, 10, abs_action=True)
    for _ in range(60):
        policy_env.step(action)
    pose = env.unwrapped.eef_pose()
    assert np.linalg.norm(pose[:3] - goal_pos) < 0.01
    angle_left = np.linalg.norm(matrix_to_axis_angle(axis_angle_to_matrix(pose[3:]).T @ goal_rot))
    assert angle_left < 0.05
    assert np.linalg.norm(pose[:3] - start[:3]) > 0.08  # it moved there


def test_lift_image_observations_are_upstreams_cameras_chw_in_0_1():
    env = gym.make("parapolicy/Lift-image-v0")
    obs, _ = env.reset(seed=100000)
    assert set(obs) == {*IMAGES["Lift"], *(f"robot0_{k}" for k in ARM)}
    for key, side in IMAGES["Lift"].items():
        image = obs[key]
        assert image.shape == (3, side, side) and image.dtype == np.float32
        assert 0.0 <= image.min() and image.max() <= 1.0 and image.std() > 0.05
    assert not np.allclose(obs["agentview_image"], obs["robot0_eye_in_hand_image"])
    # upright, as robomimic flips robosuite's frames: the agentview's top rows are the far wall,
    # darker than the table in its bottom rows
    agentview = obs["agentview_image"].mean(0)
    assert agentview[:10].mean() < agentview[-10:].mean()
    obs2, *_ = env.step(np.zeros(7))
    assert obs2["robot0_eef_pos"].shape == (3,)


@pytest.mark.slow
@pytest.mark.parametrize("task", list(LOWDIM))
def test_every_task_has_upstreams_lowdim_and_image_observations_and_lengths(task):
    lowdim = gym.make(f"parapolicy/{task}-lowdim-v0")
    arms = 2 if task == "Transport" else 1
    obs, _ = lowdim.reset(seed=100000)
    assert obs.shape == (LOWDIM[task],) and lowdim.action_space.shape == (7 * arms,)
    assert lowdim.spec.max_episode_steps == MAX_STEPS[task]
    obs2, reward, *_ = lowdim.step(np.zeros(7 * arms))
    assert obs2.shape == (LOWDIM[task],) and reward == 0.0
    again, _ = lowdim.reset(seed=100000)
    np.testing.assert_allclose(again, obs)  # upstream's seeding: np.random.seed(seed), then reset
    image = gym.make(f"parapolicy/{task}-image-v0", abs_action=True)
    obs, _ = image.reset(seed=100000)
    want = {k: (3, s, s) for k, s in IMAGES[task].items()}
    want.update({f"robot{i}_{k}": shape for i in range(arms) for k, shape in ARM.items()})
    assert {k: v.shape for k, v in obs.items()} == want
    assert image.spec.max_episode_steps == MAX_STEPS[task] and image.unwrapped.abs_action


@pytest.mark.slow  # spawns a Python process
def test_diffusers_imports_after_an_image_env_has_rendered():
    """Mesa's GL (OSMesa / llvmpipe EGL) and triton both load an LLVM: triton imported after a
    Mesa context used to segfault the process; the env now loads triton first (own process here,
    as the import order of the test session is not this test's to choose)."""
    import os
    import subprocess
    import sys

    code = ("import gymnasium as gym, parapolicy_envs\n"
            "env = gym.make('parapolicy/Lift-image-v0'); env.reset(seed=0)\n"
            "import diffusers\n"
            "print('imported')\n")
    envs_dir = os.path.dirname(os.path.dirname(parapolicy_envs.__file__))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join([envs_dir, os.environ.get("PYTHONPATH", "")])})
    assert proc.returncode == 0 and proc.stdout.strip().endswith("imported"), proc.stderr[-2000:]
