"""A sampler is one class in one file: defining it is the whole registration (issue 27).

The toy below is a user's own exact sampler (the sequential chain under another name, with one
setting). Nothing else is edited: it must reach the registry, ``set_sampler``, the rollout CLI
(``sampler=toy_chain`` with its default settings), results.json and real-time chunking, which
it declares it supports.
"""

from dataclasses import dataclass

import pytest
import torch
from tests.support.cli import compose_rollout

import parapolicy
from parapolicy.errors import PrefixError
from parapolicy.eval.build import register_sampler_configs
from parapolicy.eval.run import run_rollout
from parapolicy.samplers import SAMPLERS, SamplerBase
from parapolicy.samplers.driver import solve_chain
from parapolicy.samplers.prefix import ActionPrefix
from parapolicy.samplers.registry import unregister


@pytest.fixture()
def toy_sampler():
    @dataclass(frozen=True)
    class ToyChain(SamplerBase):
        """Upstream's loop, renamed: exact, so real-time chunking may constrain it."""

        label: str = "plain"
        name = "toy_chain"
        exact = True
        supports_prefix = True

        def sample(self, problem):
            result = solve_chain(problem, self.name)
            result.stats.settings = {"label": self.label}
            return result

    yield ToyChain
    unregister("toy_chain")


def test_defining_a_sampler_registers_it_with_its_capabilities(toy_sampler):
    assert SAMPLERS["toy_chain"] is toy_sampler
    assert toy_sampler.capabilities() == {"exact": True, "accepts_initial_guess": False, "supports_prefix": True,
                                          "capturable": False}


def test_the_cli_and_results_json_know_it_with_no_config_file(toy_sampler, toy_ckpt, tmp_path):
    register_sampler_configs()  # what parapolicy-rollout does before composing
    cfg = compose_rollout([f"checkpoint={toy_ckpt}", "env=toy", "n_episodes=1", "logger=disabled",
                           "sampler=toy_chain", "sampler.label=renamed"])
    results = run_rollout(cfg, str(tmp_path))
    assert results["sampler"] == {"name": "toy_chain", "label": "renamed"}
    assert results["n_completed"] == 1


def test_real_time_chunking_accepts_it_because_it_declares_prefix_support(toy_sampler, toy_ckpt):
    policy = parapolicy.load_policy(toy_ckpt)
    obs = {"obs": torch.zeros(1, policy.spec.n_obs_steps, 4)}
    known = torch.full((1, 8, 2), 0.1)
    prefix = ActionPrefix(known, frozen=2, guidance="hard")
    ref = policy.set_sampler("sequential").predict_action(obs, generator=torch.Generator().manual_seed(0),
                                                          prefix=prefix)
    out = policy.set_sampler("toy_chain").predict_action(obs, generator=torch.Generator().manual_seed(0),
                                                         prefix=prefix)
    assert torch.equal(out["action_pred"], ref["action_pred"])
    toy_sampler.supports_prefix = False  # the capability, not the name, is what is checked
    with pytest.raises(PrefixError, match="prefix sampling needs an exact discrete-time sampler .* got 'toy_chain'"):
        policy.set_sampler("toy_chain").predict_action(obs, prefix=prefix)
