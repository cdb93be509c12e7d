"""Property: every public constructor given a value of the wrong type raises a ParapolicyError.

Settings arrive from configs, command lines and other programs; a wrong type must be one
clear error from parapolicy, never a raw TypeError/AttributeError from deep inside.
"""

import dataclasses

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import parapolicy
from parapolicy.errors import ParapolicyError
from parapolicy.eval.realtime import RealtimeSettings
from parapolicy.samplers import SAMPLERS, make_sampler
from parapolicy.samplers.prefix import ActionPrefix

WRONG = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**40), 2**40), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8), st.binary(max_size=4), st.lists(st.integers(-3, 3), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2), st.complex_numbers(allow_nan=True),
    st.sampled_from([object(), np.zeros(3), np.float64("nan"), torch.zeros(2), torch.zeros(1, 2, 2), "abc", ()]),
)


@pytest.fixture(scope="module")
def policy(toy_ckpt):
    return parapolicy.load_policy(toy_ckpt)


def _constructors(policy):
    """name -> (build(**one_setting), the settings it takes)."""
    out = {f"sampler {name}": (cls, [f.name for f in dataclasses.fields(cls)]) for name, cls in SAMPLERS.items()
           if dataclasses.fields(cls)}
    out["make_sampler"] = (lambda **kw: make_sampler(*kw.values()), ["name"])
    out["ActionPrefix"] = (lambda **kw: ActionPrefix(**{"actions": torch.zeros(1, 4, 2), "frozen": 1, **kw}),
                           ["actions", "frozen", "guidance", "max_guidance_weight"])
    controller_args = ["policy", "control_hz", "n_action_steps", "mode", "latency_budget_ms", "generator",
                       "warm_start", "obs_key", "delay_ticks", "guidance", "max_guidance_weight"]
    out["Controller"] = (lambda **kw: parapolicy.Controller(**{"policy": policy, **kw}), controller_args)
    out["RealtimeSettings"] = (RealtimeSettings, [f.name for f in dataclasses.fields(RealtimeSettings)])
    out["load_policy"] = (lambda **kw: parapolicy.load_policy(**{"path": "no/such.ckpt", **kw}),
                          ["path", "device", "use_ema", "trust_checkpoint"])
    return out


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_a_wrong_type_for_any_setting_is_a_parapolicy_error(policy, data):
    constructors = _constructors(policy)
    name = data.draw(st.sampled_from(sorted(constructors)))
    build, params = constructors[name]
    param, value = data.draw(st.sampled_from(params)), data.draw(WRONG)
    try:
        built = build(**{param: value})
    except ParapolicyError as exc:
        assert "\n" not in str(exc)
    else:  # accepted: a value of a usable type after all (e.g. an int where a float is expected)
        if isinstance(built, parapolicy.Controller):
            built.close()


class _Stub:
    """Stands in for a policy: the Controller reads only its spec before any act()."""

    def __init__(self):
        from types import SimpleNamespace

        self.spec = SimpleNamespace(n_action_steps=8, horizon=16, action_start=1, pred_action_steps_only=False,
                                    n_obs_steps=2)

    def predict_action(self, *args, **kwargs):
        raise AssertionError("not called")


@pytest.mark.parametrize("build", [
    lambda: ActionPrefix("abc", 1),
    lambda: ActionPrefix(torch.zeros(1, 4, 2), 1, guidance=np.zeros(3)),
    lambda: parapolicy.Controller("not a policy"),
    lambda: parapolicy.Controller(_Stub(), guidance=np.zeros(3)),
    lambda: parapolicy.load_policy(None),
    lambda: parapolicy.load_policy("x.ckpt", trust_checkpoint=np.zeros(2)),
    lambda: RealtimeSettings(mode=["rtc"]),
    lambda: SAMPLERS["piadm"](mode=np.zeros(3)),
    lambda: SAMPLERS["jacobian_newton"](jacobian=np.zeros(3)),
    lambda: parapolicy.load_policy("x.ckpt", device=b"\x80"),
])
def test_examples_that_raised_raw_errors(build):
    with pytest.raises(ParapolicyError):
        build()
