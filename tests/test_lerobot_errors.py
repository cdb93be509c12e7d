"""Untrusted LeRobot directories: every failure is one CheckpointError naming expected vs found."""

import copy
import json
import math
import os

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.support.lerobot_eras import HUB_2024_KEYPOINTS, STATE_ONLY_0_5, V0_5, small, write_dir
from safetensors.torch import load_file, save_file

import parapolicy
from parapolicy.checkpoints.lerobot import POST_STATS, PRE_STATS
from parapolicy.errors import CheckpointError, ParapolicyError



@pytest.fixture(scope="module")
def good(tmp_path_factory):
    root = tmp_path_factory.mktemp("lerobot_bad")
    return {"hub-2024": write_dir(root / "hub", small(HUB_2024_KEYPOINTS), "buffers"),
            "0.5": write_dir(root / "v05", STATE_ONLY_0_5, "processor")}


def _variant(src, dst, config=None, files=None):
    """A copy of directory ``src`` with config.json and/or other files replaced."""
    os.makedirs(dst, exist_ok=True)
    for name in os.listdir(src):
        with open(os.path.join(src, name), "rb") as f, open(os.path.join(dst, name), "wb") as g:
            g.write(f.read())
    if config is not None:
        with open(os.path.join(dst, "config.json"), "w") as f:
            json.dump(config, f)
    for name, write in (files or {}).items():
        write(os.path.join(dst, name))
    return str(dst)


BAD_FIELDS = [
    ("horizon", "16", r"config.json horizon: expected an integer in \[1, 1024\], found '16'"),
    ("horizon", True, r"horizon: expected an integer in \[1, 1024\], found True"),
    ("horizon", -16, r"horizon: expected an integer in \[1, 1024\], found -16"),
    ("horizon", 10**12, r"horizon: expected an integer in \[1, 1024\], found 1000000000000"),
    ("horizon", 18, r"horizon=18: expected a multiple of 2\*\*len\(down_dims\) = 4"),
    ("n_obs_steps", 0, r"n_obs_steps: expected an integer in \[1, 64\], found 0"),
    ("n_action_steps", 10**6, r"n_action_steps: expected an integer in \[1, 1024\], found 1000000"),
    ("n_action_steps", 16, r"n_action_steps=16: expected at most horizon - n_obs_steps \+ 1 = 15"),
    ("down_dims", [16, "32"], r"down_dims: expected 1-6 integers in \[1, 4096\], found \[16, '32'\]"),
    ("down_dims", [2**40], r"down_dims: expected 1-6 integers in \[1, 4096\]"),
    ("down_dims", [12, 24], r"down_dims \[12, 24\]: expected channels divisible by n_groups=4 and by 8"),
    ("kernel_size", 4, r"kernel_size: expected an odd number, found 4"),
    ("num_train_timesteps", 10**9, r"num_train_timesteps: expected an integer in \[1, 10000\]"),
    ("num_inference_steps", 101, r"num_inference_steps: expected an integer in \[1, 100\], found 101"),
    ("beta_start", "x", r"beta_start: expected a number in \[0.0, 1.0\], found 'x'"),
    ("beta_end", math.inf, r"beta_end: expected a number in \[0.0, 1.0\], found inf"),
    ("noise_scheduler_type", "DPM", r"noise_scheduler_type: expected one of \['DDPM', 'DDIM'\], found 'DPM'"),
    ("clip_sample", "yes", r"clip_sample: expected true or false, found 'yes'"),
    ("input_shapes", {"observation.state": [10**9], "observation.environment_state": [16]},
     r"input_shapes\['observation.state'\]: expected 1-1 integers in \[1, 4096\], found \[1000000000\]"),
    ("input_shapes", {"observation.state": [2], "observation.image": [3, 10**6, 10**6]},
     r"input_shapes\['observation.image'\]: expected 3-3 integers in \[1, 1024\]"),
    ("input_shapes", {"observation.state": [2], "observation.environment_state": [16], "observation.velocity": [2]},
     r"LeRobot inputs \['observation.state', 'observation.environment_state', 'observation.velocity'\]: expected "
     r"'observation.state' plus optional 'observation.image\*' cameras and/or 'observation.environment_state'"),
    ("input_normalization_modes", {"observation.state": "quantiles"},
     r"input_normalization_modes\['observation.state'\]: expected 'mean_std' or 'min_max', found 'quantiles'"),
    ("output_shapes", [], r"output_shapes: expected an object, found \[\]"),
]


@pytest.mark.parametrize("field, value, message", BAD_FIELDS, ids=[f"{f}={v!r:.20}" for f, v, _ in BAD_FIELDS])
def test_bad_config_field_is_named_before_anything_is_read(good, tmp_path, monkeypatch, field, value, message):
    import parapolicy.checkpoints.lerobot.load as load

    monkeypatch.setattr(load, "safetensors_header", lambda *a: pytest.fail("model file opened"))
    config = dict(small(HUB_2024_KEYPOINTS), **{field: value})
    with pytest.raises(CheckpointError, match=message):
        parapolicy.load_policy(_variant(good["hub-2024"], tmp_path / "d", config))


def test_crop_larger_than_images_and_absurd_networks_fail_before_allocation(good, tmp_path, monkeypatch):
    import parapolicy.checkpoints.lerobot.load as load

    config = small(V0_5)
    config["crop_shape"] = [1000, 1000]
    with pytest.raises(CheckpointError, match=r"crop_shape \[1000, 1000\]: expected to fit in the images \(64, 64\)"):
        parapolicy.load_policy(_variant(good["0.5"], tmp_path / "crop", config))
    # sizes inside the limits but not those of the file: compared on the meta device, tensors never read
    monkeypatch.setattr(load, "read_safetensors", lambda *a: pytest.fail("tensors read"))
    config = dict(STATE_ONLY_0_5, down_dims=[4096, 4096, 4096, 4096, 4096, 4096], horizon=64, n_action_steps=8)
    with pytest.raises(CheckpointError, match="model.safetensors does not match config.json: missing weights"):
        parapolicy.load_policy(_variant(good["0.5"], tmp_path / "big", config))


def test_damaged_files_are_one_clear_error(good, tmp_path):
    def truncate(path):
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) // 2)

    for name, message in [("model.safetensors", r"cannot read \w+/model.safetensors: expected a safetensors file"),
                          (PRE_STATS, rf"cannot read \w+/{PRE_STATS}: expected a safetensors file"),
                          ("config.json", r"cannot read config.json: expected JSON, found JSONDecodeError")]:
        d = _variant(good["0.5"], tmp_path / name.replace(".", "_"), files={name: truncate})
        with pytest.raises(CheckpointError, match=message):
            parapolicy.load_policy(d)
    deep = "[" * 100000 + "]" * 100000
    d = _variant(good["0.5"], tmp_path / "deep", files={"config.json": lambda p: open(p, "w").write(deep)})
    with pytest.raises(CheckpointError, match="cannot read config.json: expected JSON, found RecursionError"):
        parapolicy.load_policy(d)


def _with_stats(name, stat, value):
    def write(path):
        stats = load_file(path)
        stats[f"{name}.{stat}"] = value
        save_file(stats, path)
    return write


@pytest.mark.parametrize("name, stat, value, message", [
    ("action", "max", torch.tensor([math.inf, 500.0]), r"'action.max': expected finite values, found NaN or inf"),
    ("observation.state", "min", torch.tensor([math.nan, 0.0]), r"'observation.state.min': expected finite values"),
    ("action", "max", None, r"'action' max - min: expected > 0 everywhere, found 0"),
    ("observation.state", "max", torch.tensor([-1e3, 500.0]), r"'observation.state' max - min: expected >= 0"),
    ("action", "min", torch.zeros(3), r"'action.min': expected shape \(2,\), found \(3,\)"),
    ("action", "min", torch.zeros(2, dtype=torch.int32), r"'action.min': expected floating point, found torch.int32"),
])
def test_unsafe_statistics_are_refused_at_load(good, tmp_path, name, stat, value, message):
    src = good["0.5"]
    if value is None:  # zero action range: every action would collapse onto min
        value = load_file(os.path.join(src, PRE_STATS))["action.min"]
    files = {f: _with_stats(name, stat, value) for f in (PRE_STATS, POST_STATS) if name == "action" or f == PRE_STATS}
    with pytest.raises(CheckpointError, match=message):
        parapolicy.load_policy(_variant(src, tmp_path / "d", files=files))


def test_non_float_weights_are_refused(good, tmp_path):
    def to_int(path):
        weights = load_file(path)
        key = "diffusion.unet.final_conv.1.bias"
        weights[key] = weights[key].to(torch.int8)
        save_file(weights, path)

    with pytest.raises(CheckpointError, match=r"weight 'diffusion.unet.final_conv.1.bias': expected dtype "
                                              r"F16/BF16/F32/F64, found I8"):
        parapolicy.load_policy(_variant(good["0.5"], tmp_path / "d", files={"model.safetensors": to_int}))


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=8,
)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(era=st.sampled_from(["hub-2024", "0.5"]), data=st.data())
def test_fuzzed_config_json_loads_or_raises_a_parapolicy_error(good, tmp_path_factory, era, data):
    config = copy.deepcopy(small(HUB_2024_KEYPOINTS) if era == "hub-2024" else STATE_ONLY_0_5)
    fields = data.draw(st.lists(st.sampled_from(sorted(config)), min_size=1, max_size=3, unique=True))
    for field in fields:
        if data.draw(st.booleans()):
            del config[field]
        else:
            config[field] = data.draw(JSON)
    d = _variant(good[era], tmp_path_factory.mktemp("fuzz"), config)
    try:
        policy = parapolicy.load_policy(d)
    except ParapolicyError as exc:
        assert "\n" not in str(exc)
    else:
        assert policy.spec.horizon >= 1
