"""Fuzzed observation dicts: every input either gives finite actions or one ParapolicyError."""

import os

import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import parapolicy
from parapolicy.errors import ParapolicyError
from parapolicy.eval.build import ASSETS_DIR

POLICY = parapolicy.load_policy(os.path.join(ASSETS_DIR, "toy_reach_unet.ckpt"))
POLICY.scheduler.set_timesteps(4)
POLICY.rule = parapolicy.samplers.make_step_rule(POLICY.scheduler)  # 4 steps: fast examples

FLOATS = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=32), st.floats(-3, 3, width=32))
VALUES = st.one_of(
    st.none(),
    st.text(max_size=5),
    st.integers(-5, 5),
    st.lists(FLOATS, max_size=6),
    st.tuples(st.integers(0, 3), st.integers(0, 4), st.integers(0, 6)).flatmap(
        lambda shape: st.sampled_from(["float32", "float64", "int64", "bool", "object", "str"]).map(
            lambda dtype: _array(shape, dtype))),
)


def _array(shape, dtype):
    if dtype == "object":
        return np.empty(shape, dtype=object)
    if dtype == "str":
        return np.full(shape, "x")
    return np.linspace(-2, 2, int(np.prod(shape))).reshape(shape).astype(dtype)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(["obs", "image", "agent_pos", "", "obs "]), VALUES, max_size=3),
       st.one_of(st.none(), st.integers(), st.text(max_size=3)))
def test_any_observation_dict_gives_actions_or_one_parapolicy_error(obs, generator):
    gen = torch.Generator().manual_seed(0) if generator is None else generator
    try:
        out = POLICY.predict_action(obs, generator=gen)
    except ParapolicyError as exc:
        assert "\n" not in str(exc).strip(), str(exc)  # one line
        return
    assert torch.isfinite(out["action"]).all()
