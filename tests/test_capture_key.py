"""Captured kernels are keyed by the step rule's content, not by the rule object's id.

An id is reused once its object is freed (a kernel built for one rule replayed for
another) and differs between equal rules built twice (a kernel built again). The key is
checked on the CPU; ``RunWithoutCapture`` counts the builds a GPU would capture.
"""

import torch
from diffusers import DDIMScheduler

from parapolicy.acceleration import GraphExecutor
from parapolicy.samplers import DenoisingProblem, Picard, draw_noises, make_step_rule
from parapolicy.samplers.continuous_time import grid_rule
from parapolicy.samplers.fingerprint import problem_key, rule_key
from tests.support.capture import RunWithoutCapture
from tests.support.helpers import DP_SCHEDULE, make_scheduler


def _rule(kind="ddpm", steps=20, **kwargs):
    return make_step_rule(make_scheduler(kind, steps=steps), **kwargs)


def _ddim(eta):
    sched = DDIMScheduler(**DP_SCHEDULE, set_alpha_to_one=True, steps_offset=0)
    sched.set_timesteps(8)
    return make_step_rule(sched, eta=eta)


def test_equal_rules_built_separately_share_one_key():
    first, second = _rule(), _rule()
    assert first is not second and rule_key(first) == rule_key(second)
    assert hash(rule_key(first)) == hash(rule_key(second))
    assert rule_key(grid_rule(first, 6, sde=True)) == rule_key(grid_rule(second, 6, sde=True))
    x_T = torch.zeros(3, 16, 2)
    assert problem_key(DenoisingProblem(None, _ddim(0.0), x_T)) == problem_key(DenoisingProblem(None, _ddim(0.0), x_T))


def test_different_rules_and_shapes_get_different_keys():
    keys = {rule_key(rule) for rule in (_rule(steps=20), _rule(steps=30), _rule("ddim", steps=16), _ddim(0.0),
                                        _ddim(0.5), grid_rule(_rule(), 6, sde=True), grid_rule(_rule(), 6, sde=False))}
    assert len(keys) == 7
    rule = _ddim(0.0)
    assert problem_key(DenoisingProblem(None, rule, torch.zeros(3, 16, 2))) != problem_key(
        DenoisingProblem(None, rule, torch.zeros(2, 16, 2)))


def test_a_coefficient_changed_in_one_place_changes_the_key():
    rule, other = _rule(), _rule()
    other.coefficients.noise_std[3] += 1e-6
    assert rule_key(rule) != rule_key(other)


def test_a_capturing_executor_builds_once_for_equal_rules_and_again_for_a_different_one():
    model = lambda x, t, global_cond: x * 0.5 + global_cond.mean() * 0  # noqa: E731
    cond = torch.zeros(3, 8)
    executor = GraphExecutor(RunWithoutCapture(), model, {"global_cond": cond}, "cpu")
    answers = []
    for rule in (_rule(), _rule(), _rule(steps=30)):
        draws = draw_noises(rule, (3, 16, 2), torch.Generator().manual_seed(0))
        problem = DenoisingProblem(None, rule, draws.x_T, draws.noises, executor=executor)
        with torch.no_grad():
            answers.append(Picard(window=8, tolerance=1e-3).sample(problem).sample)
        del rule, draws, problem
    assert len(executor.graphs.built) == 2
    assert torch.equal(answers[0], answers[1])
