"""The seam between Policy and samplers: prepare -> sampler.sample -> decode, initial guesses,
one set of stats names, and the layering of parapolicy's modules (no import cycles)."""

import ast
import dataclasses
import os
from pathlib import Path

import pytest
import torch

import parapolicy
from parapolicy.action_chunk import ActionChunk, ChunkStats
from parapolicy.errors import InputError, NonFiniteSampleError, SamplerConfigError
from parapolicy.eval.build import ASSETS_DIR
from parapolicy.samplers import SAMPLERS, Sampler

PACKAGE = Path(parapolicy.__file__).parent
OBS_STEPS = 2


@pytest.fixture(scope="module")
def toy():
    return parapolicy.load_policy(os.path.join(ASSETS_DIR, "toy_reach_unet.ckpt"))


def _obs(policy, batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {k: 0.3 * torch.randn(batch, policy.spec.n_obs_steps, *shape, generator=g)
            for k, shape in policy.spec.obs_shapes.items()}


def test_predict_action_is_prepare_then_sample_then_decode(toy):
    toy.set_sampler("picard", window=100, tolerance=0.05)
    obs = _obs(toy)
    whole = toy.predict_action(obs, generator=torch.Generator().manual_seed(4))
    problem = toy.prepare(obs, generator=torch.Generator().manual_seed(4))
    by_parts = toy.decode(toy.sampler.sample(problem))
    assert torch.equal(whole["action"], by_parts["action"])
    assert whole["stats"]["rounds"] == by_parts["stats"]["rounds"]
    toy.set_sampler("sequential")


def test_predict_action_returns_a_typed_chunk_that_reads_like_upstreams_dict(toy):
    out = toy.set_sampler("picard", window=100, tolerance=0.05).predict_action(
        _obs(toy), generator=torch.Generator().manual_seed(4))
    toy.set_sampler("sequential")
    assert isinstance(out, ActionChunk) and isinstance(out.stats, ChunkStats)
    assert list(out) == list(out.keys()) == ["action", "action_pred", "sample", "stats", "denoiser_outputs"]
    assert out["action"] is out.action and "sample" in out and "obs_pred" not in out
    assert out["stats"]["rounds"] == out.stats.sampling.rounds and out.stats.latency_ms > 0
    assert dict(out["stats"]) == out.stats.as_dict() == {**out.stats.sampling.as_dict(), "latency_ms": out.stats.latency_ms}
    assert out["stats"] == out.stats.as_dict() and out.stats.get("chosen") is None
    out["stats"] = dict(out["stats"], fallback="why")  # callers may still replace or add entries
    out["note"] = 1
    assert out["stats"]["fallback"] == "why" and list(out)[-1] == "note"


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_every_sampler_declares_the_protocol_and_reports_the_same_stats_names(toy, name):
    sampler = SAMPLERS[name]()
    assert isinstance(sampler, Sampler)
    assert sampler.config()["name"] == name
    stats = toy.set_sampler(name).predict_action(_obs(toy), generator=torch.Generator().manual_seed(0))["stats"]
    assert {"sampler", "rounds", "nfe", "rows_per_round", "max_rows_per_round", "max_error", "fallback", "latency_ms",
            "initial_guess"} <= set(stats)
    assert stats["rows_per_round"] == pytest.approx(stats["nfe"] / stats["rounds"])
    assert 1 <= stats["max_rows_per_round"] and stats["rows_per_round"] <= stats["max_rows_per_round"]
    assert not {"parallel_iters", "network_calls"} & set(stats)
    assert stats["sampler"] == name and 0 < stats["rounds"] <= stats["nfe"]
    toy.set_sampler("sequential")


GUESSING = sorted(name for name, cls in SAMPLERS.items() if cls.accepts_initial_guess)


def test_the_samplers_that_take_guesses_are_the_exact_parallel_ones():
    assert GUESSING == ["auto", "jacobian_newton", "newton_picard", "newton_prior", "picard", "quasi_newton"]


@pytest.fixture(scope="module")
def sequential_chain():
    """The sequential chain on ``_obs(seed=3)`` with generator seed 1, computed once for every sampler
    of the test below (it was the same run per sampler), on a policy of its own, so the shared ``toy``
    is left as it is."""
    policy = parapolicy.load_policy(os.path.join(ASSETS_DIR, "toy_reach_unet.ckpt")).set_sampler("sequential")
    obs = _obs(policy, seed=3)
    return obs, policy.predict_action(obs, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("name", [name for name in GUESSING if name != "auto"])  # auto: whichever it chose
def test_an_initial_guess_reaches_the_sampler_and_cuts_its_rounds(toy, sequential_chain, name):
    """Guessing the sequential chain's own outputs makes the initial trajectory the fixed point:
    one round certifies it. A sampler that ignored the guess would need its cold rounds again."""
    shared_obs, shared_exact = sequential_chain
    obs = {k: v.clone() for k, v in shared_obs.items()}  # fresh tensors per test, as when each made its own
    exact = {"action": shared_exact["action"].clone(), "denoiser_outputs": shared_exact["denoiser_outputs"].clone()}
    fields = {f.name for f in dataclasses.fields(SAMPLERS[name])}
    toy.set_sampler(name, tolerance=0.01, **({"window": 100} if "window" in fields else {}))
    cold = toy.predict_action(obs, generator=torch.Generator().manual_seed(1))
    warm = toy.predict_action(obs, generator=torch.Generator().manual_seed(1),
                              initial_guess=exact["denoiser_outputs"])
    assert not cold["stats"]["initial_guess"] and warm["stats"]["initial_guess"]
    assert cold["stats"]["rounds"] >= 3 and warm["stats"]["rounds"] == 1, (cold["stats"], warm["stats"])
    assert (warm["action"] - exact["action"]).abs().max() < 1e-5  # the same fixed point
    toy.set_sampler("sequential")


def test_samplers_without_initial_guesses_ignore_them_and_say_so(toy):
    toy.set_sampler("sequential")
    obs = _obs(toy)
    guess = toy.predict_action(obs)["denoiser_outputs"]
    out = toy.predict_action(obs, initial_guess=guess)
    assert out["stats"]["initial_guess"] is False


def test_a_badly_shaped_initial_guess_is_one_clear_error(toy):
    toy.set_sampler("picard")
    want = r"expected a sample \(2 or 1, 16, 2\) or per-step network outputs \(\d+, 2 or 1, 16, 2\)"
    with pytest.raises(InputError, match=r"initial_guess has shape \(3, 2, 16, 2\), " + want):
        toy.predict_action(_obs(toy), initial_guess=torch.zeros(3, 2, 16, 2))
    with pytest.raises(InputError, match=r"initial_guess has shape \(2, 16, 3\), " + want):
        toy.predict_action(_obs(toy), initial_guess=torch.zeros(2, 16, 3))
    with pytest.raises(InputError, match="initial_guess contains NaN or inf"):
        toy.predict_action(_obs(toy), initial_guess=torch.full((1, 16, 2), float("nan")))
    with pytest.raises(InputError, match="generator must be a torch.Generator or None, got int"):
        toy.predict_action(_obs(toy), generator=0)
    toy.set_sampler("sequential")


def test_set_sampler_takes_a_sampler_object_but_not_with_settings(toy):
    sampler = SAMPLERS["picard"](window=8)
    assert toy.set_sampler(sampler).sampler is sampler
    with pytest.raises(SamplerConfigError, match="pass settings with a sampler name"):
        toy.set_sampler(sampler, window=4)
    with pytest.raises(SamplerConfigError, match="tolerance must be a finite number > 0"):
        toy.set_sampler("picard", tolerance=1e200)
    toy.set_sampler("sequential")


def test_an_inf_normalizer_never_yields_an_inf_action():
    policy = parapolicy.load_policy(os.path.join(ASSETS_DIR, "toy_reach_unet.ckpt"))
    policy.normalizer.params_dict["action"]["scale"].data[0] = 0.0  # unnormalising divides by it
    with pytest.raises(NonFiniteSampleError, match="unnormalised actions are not finite"):
        policy.predict_action(_obs(policy))


def _imports(path: Path, module: str) -> set:
    """parapolicy modules ``path`` names in its import statements (at any depth)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            base = node.module
            if node.level:  # relative import
                base = ".".join(module.split(".")[: -node.level] + [node.module])
            names.add(base)
            names |= {f"{base}.{a.name}" for a in node.names}
    return {n for n in names if n.startswith("parapolicy")}


def _module_graph() -> dict:
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
    return {name: {m for m in _imports(path, name) if m in modules and m != name} for name, path in modules.items()}


def _arrows(graph: dict, room: str, banned: tuple, allowed: tuple = ()) -> list:
    """(module, dependency) pairs from ``room`` (a package or module) into ``banned`` rooms."""
    return [(name, dep) for name, deps in graph.items() if name == room or name.startswith(room + ".")
            for dep in deps if dep.startswith(banned) and not dep.startswith(allowed)
            and not (dep == room or dep.startswith(room + "."))]


def test_no_import_cycles_and_samplers_depend_on_neither_policy_nor_acceleration():
    graph = _module_graph()
    for name, deps in graph.items():
        if name.startswith("parapolicy.samplers"):
            assert not {d for d in deps if d.startswith(("parapolicy.acceleration", "parapolicy.policy"))}, name
    assert not _arrows(graph, "parapolicy.samplers", ("parapolicy.checkpoints", "parapolicy.models", "parapolicy.eval",
                                                       "parapolicy.controller", "parapolicy.cli"))
    assert not _arrows(graph, "parapolicy.models", ("parapolicy.checkpoints", "parapolicy.samplers", "parapolicy.eval",
                                                     "parapolicy.policy"))  # no arrow back up from the networks
    # checkpoints is self-contained: it reads files into the networks and the Policy, and needs only the floors below
    assert not _arrows(graph, "parapolicy.checkpoints", ("parapolicy.",),
                       allowed=("parapolicy.models", "parapolicy.policy", "parapolicy.tensor_safety", "parapolicy.errors",
                                "parapolicy.scheduler_kinds"))
    # the simulated clock and the wall-clock Controller share parapolicy.chunking, never each other
    assert not _arrows(graph, "parapolicy.eval", ("parapolicy.controller",))
    assert not _arrows(graph, "parapolicy.chunking", ("parapolicy.controller", "parapolicy.eval"))
    assert not _arrows(graph, "parapolicy.tensor_safety", ("parapolicy.",), allowed=("parapolicy.errors",))
    assert not _arrows(graph, "parapolicy.scheduler_kinds", ("parapolicy.",))
    state = {}

    def visit(node, stack):
        state[node] = "open"
        for dep in sorted(graph[node]):
            if state.get(dep) == "open":
                cycle = stack[stack.index(dep):] + [dep]
                # a submodule importing its own package's __init__ is how Python resolves packages
                if not all(b.startswith(a + ".") or a.startswith(b + ".") for a, b in zip(cycle, cycle[1:])):
                    raise AssertionError(f"import cycle: {' -> '.join(cycle)}")
            elif dep not in state:
                visit(dep, stack + [dep])
        state[node] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
