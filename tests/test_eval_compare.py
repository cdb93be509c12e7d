"""Paired sampler runs: Ctrl-C in the first pass skips the others and says so; every pass shows
progress; the compare side may run another inference schedule."""

from tests.support.helpers import ProgressRecorder
from omegaconf import OmegaConf

import parapolicy
from parapolicy.eval.build import make_env_factory
from parapolicy.eval.compare import compare_policy, run_paired
from parapolicy.eval.report import flat_metrics, summary_table

TOY = OmegaConf.create({"id": "parapolicy/ToyReach-v0", "kwargs": {}, "max_episode_steps": 60, "obs_key": "obs"})


class Interrupted:
    """A policy whose every call is Ctrl-C."""

    def __init__(self, policy, name, calls):
        self.spec, self.inference, self.calls = policy.spec, policy.inference, calls
        self.sampler = policy.sampler.__class__() if name == "sequential" else parapolicy.samplers.make_sampler(name)

    def predict_action(self, obs, generator=None):
        self.calls.append(self.sampler.name)
        raise KeyboardInterrupt


def test_ctrl_c_in_a_paired_run_skips_the_remaining_passes(toy_ckpt):
    policy = parapolicy.load_policy(toy_ckpt)
    calls = []
    a, b = Interrupted(policy, "picard", calls), Interrupted(policy, "sequential", calls)
    run_a, paired = run_paired(a, b, make_env_factory(TOY, policy.spec), [1, 2])
    assert calls == ["picard"]  # pass a was interrupted: b and the deviation check never ran
    assert run_a.interrupted and paired["interrupted"] and paired["max_action_deviation"] is None
    assert (paired["b"]["n_completed"], paired["b"]["mean_score"], run_a.mean_score) == (0, None, None)
    assert paired["score_difference_b_minus_a"] == {"mean": None, "ci95": None, "n": 0}  # no pairs: no number
    results = dict(run_a.to_json(), env=TOY.id, sampler=paired["sampler_a"], paired=paired)
    assert "rollout/latency_at_equal_score_ms" not in flat_metrics(results)
    assert "rollout/score_difference_b_minus_a" not in flat_metrics(results)
    table = summary_table(results)
    assert "0 of 2 episodes completed, 0 failed, 2 not finished (interrupted)" in table
    assert "max action deviation b vs a: - env action units" in table


def test_every_pass_of_a_paired_run_shows_progress_and_the_deviation_pass_counts_chunks(toy_ckpt):
    policy = parapolicy.load_policy(toy_ckpt).set_sampler("picard", window=4)
    other = compare_policy(policy, "sequential", {})
    progress = ProgressRecorder()
    run_a, paired = run_paired(policy, other, make_env_factory(TOY, policy.spec), [100000, 100001],
                               progress=progress)
    assert [p["desc"] for p in progress.passes] == ["pass 1/3 picard", "pass 2/3 sequential",
                                                    "pass 3/3 deviation check"]
    assert [p["finished"] for p in progress.passes[:2]] == [2, 2]  # both closed-loop passes saw every episode end
    check = progress.passes[2]
    assert check["total"] == check["calls"] == len(run_a.chunks) > 0  # one tick per chunk of a's run
    assert paired["b"]["n_completed"] == 2 and paired["b"]["success_rate"] is not None


def test_the_compare_side_runs_its_own_schedule_on_the_same_network(toy_ckpt):
    policy = parapolicy.load_policy(toy_ckpt).set_sampler("picard", window=4)
    other = compare_policy(policy, "sequential", {}, scheduler="ddim", num_inference_steps=4)
    assert other.model is policy.model and policy.inference == {"scheduler": "ddpm", "num_inference_steps": 10}
    assert other.inference == {"scheduler": "ddim", "num_inference_steps": 4}
    assert policy.sampler.name == "picard" and other.sampler.name == "sequential"
    _, paired = run_paired(policy, other, make_env_factory(TOY, policy.spec), [100000])
    assert (paired["inference_a"], paired["inference_b"]) == (policy.inference, other.inference)
    assert paired["sampler_a"] == policy.sampler.config() and paired["sampler_b"] == {"name": "sequential"}
    assert paired["b"]["nfe_per_chunk"] == paired["b"]["rounds_per_chunk"] == 4.0  # DDIM-4, one row per round
    assert paired["max_action_deviation"] > 0  # another schedule, another answer: measured, not assumed
