"""Paired sampler runs: Ctrl-C in the first pass skips the others and says so."""

from omegaconf import OmegaConf

import parapolicy
from parapolicy.eval.build import make_env_factory
from parapolicy.eval.compare import run_paired
from parapolicy.eval.report import flat_metrics, summary_table

TOY = OmegaConf.create({"id": "parapolicy/ToyReach-v0", "kwargs": {}, "max_episode_steps": 60, "obs_key": "obs"})


def test_ctrl_c_in_a_paired_run_skips_the_remaining_passes(toy_ckpt):
    policy = parapolicy.load_policy(toy_ckpt)
    calls = []

    class Interrupted:
        spec = policy.spec

        def set_sampler(self, name, **settings):
            calls.append(name)

        def predict_action(self, obs, generator=None):
            raise KeyboardInterrupt

    a, paired = run_paired(Interrupted(), make_env_factory(TOY, policy.spec), [1, 2], ("picard", {"window": 4}),
                           ("sequential", {}))
    assert calls == ["picard", "picard"]  # pass a, then the first sampler restored: b never ran
    assert a.interrupted and paired["interrupted"] and paired["max_action_deviation"] is None
    assert (paired["n_completed_b"], paired["mean_score_a"], paired["mean_score_b"]) == (0, None, None)
    results = dict(a.to_json(), env=TOY.id, sampler=paired["sampler_a"], paired=paired)
    assert "rollout/latency_at_equal_score_ms" not in flat_metrics(results)
    assert "0 of 2 episodes completed, 0 failed, 2 not finished (interrupted)" in summary_table(results)
    assert "max action deviation -" in summary_table(results)
