"""Property: any mutation of a valid checkpoint's cfg.policy loads or raises a ParapolicyError."""

import copy

import pytest
from tests.support.dp_fixtures import POLICY_CFGS, random_weights
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from parapolicy.checkpoints.dp_workspace import policy_from_payload
from parapolicy.errors import ParapolicyError
from parapolicy.policy import Policy

FAMILIES = ("unet_lowdim_global_ddpm", "transformer_lowdim")


@pytest.fixture(scope="module")
def valid():
    out = {}
    for name in FAMILIES:
        cfg = POLICY_CFGS[name]()
        out[name] = (cfg, random_weights(cfg, seed=0))
    return out


def _leaf_paths(node, prefix=()):
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _leaf_paths(value, prefix + (key,))
    yield prefix


values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 70),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.lists(st.integers(-4, 40), max_size=4),
    st.dictionaries(st.text(max_size=4), st.integers(-2, 9), max_size=2),
    st.sampled_from(["${horizon}", "${policy}", "${nope}", "???", "${oc.env:HOME}", "${eval:'2**20000'}",
                     "${eval:'${policy.horizon} // 2'}", "${.horizon}", "${eval:1/0}", "$", "${"]),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_any_cfg_mutation_loads_or_raises_a_parapolicy_error(valid, data):
    family = data.draw(st.sampled_from(FAMILIES))
    cfg, weights = valid[family]
    cfg = copy.deepcopy(cfg)
    paths = [p for p in _leaf_paths(cfg) if p]
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(paths))
        node = cfg
        for key in path[:-1]:  # an earlier mutation may have replaced a section
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node[path[-1]] = data.draw(values)
    payload = {"cfg": {"policy": cfg, "training": {"use_ema": False}, "horizon": 16}, "state_dicts": {"model": weights}}
    try:
        policy = policy_from_payload(payload, origin="fuzz")
    except ParapolicyError as exc:
        assert "\n" not in str(exc)
    else:
        assert isinstance(policy, Policy)
