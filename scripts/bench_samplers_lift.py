#!/usr/bin/env python
"""Every sampler on the shipped robomimic Lift policy (7-d actions): rounds, rows per round,
NFE, deviation from sequential, success with CIs, time per chunk on this CPU.

    python scripts/bench_samplers_lift.py --episodes 50 --out benchmarks/samplers_lift
    python scripts/bench_samplers_lift.py --fewer picard=5,jacobian_newton=0 --fewer-b1 jacobian_newton=2

Each sampler runs with its default settings. (1) Closed loop on ``--episodes`` seeds from
100000, all envs batched, noise generator seeded 0 (``parapolicy.bench.loops.closed_loop``): score and
success with 95% CIs, rounds/NFE per chunk at that batch, and the max |action difference| to
the sequential sampler replayed on every chunk's observations and generator state. An episode
ends at its first success (``--fewer``: costly samplers run the first n seeds only): robomimic's reward is the sparse success, so the score (max reward)
cannot change after it, while upstream's runner steps on to 400. (2) Batch 1, on ``--open-loop``
single observations spread over the sequential rollout, generator seeded by index: rounds,
rows per round (when the sampler stats report it), NFE, the p50 wall time of one
``predict_action`` with ``--threads`` torch threads, and the max deviation from sequential on
the same observation and noise. Rows are cached in ``<out>.json``; a re-run computes only the
missing ones (``--only`` recomputes the named rows).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import gymnasium as gym
import numpy as np
import torch
from omegaconf import OmegaConf

import parapolicy
from parapolicy.eval.build import ASSETS_DIR, device_name, make_env_factory
from parapolicy.eval.env_choice import env_for_task
from parapolicy.bench.harness import score_ci, success_ci, write_json_atomic, write_report
from parapolicy.bench.loops import closed_loop
from parapolicy.samplers import SAMPLERS

CHECKPOINT = os.path.join(ASSETS_DIR, "lift_lowdim_unet.ckpt")
ORDER = ("sequential", *sorted(name for name in SAMPLERS if name != "sequential"))  # every registered sampler


class EndOnSuccess(gym.Wrapper):
    """Terminates the episode at its first success (the score cannot change after it)."""

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        return obs, reward, terminated or bool(info.get("is_success")), truncated, info


class SpreadTap:
    """Passes calls to a policy and keeps row ``call % batch`` of each call's observations:
    single observations from every phase of the rollout, not only its first chunk."""

    def __init__(self, policy, keep: int):
        self.policy, self.keep, self.observations, self.calls = policy, keep, [], 0

    def predict_action(self, obs, generator=None):
        rows = obs["obs"]
        if len(self.observations) < self.keep:
            self.observations.append(np.asarray(rows[self.calls % len(rows)]))
        self.calls += 1
        return self.policy.predict_action(obs, generator=generator)


def batch_one(policy, observations, name, reference=None):
    """Per single observation: rounds, rows per round, NFE, wall ms, and |action - reference|."""
    policy.set_sampler(name)
    rounds, rows, nfe, ms, plans = [], [], [], [], []
    for i, obs in enumerate(observations):
        started = time.perf_counter()
        out = policy.predict_action({"obs": torch.as_tensor(obs)[None]}, generator=torch.Generator().manual_seed(i))
        ms.append((time.perf_counter() - started) * 1000.0)
        stats = out.stats.sampling
        rounds.append(stats.rounds)
        nfe.append(stats.nfe)
        rows.append(stats.rows_per_round)  # every network row runs in some round: NFE / rounds
        plans.append(out["action_pred"][0].numpy())
    row = {"rounds_per_chunk_b1": float(np.mean(rounds)), "rounds_max_b1": int(max(rounds)),
           "nfe_per_chunk_b1": float(np.mean(nfe)), "ms_per_chunk_b1": float(np.median(ms)),
           "ms_p90_b1": float(np.percentile(ms, 90)),
           "rows_per_round_b1": float(np.mean(rows)), "n_b1": len(observations)}
    if reference is not None:
        row["max_deviation_b1"] = float(np.abs(np.stack(plans) - np.asarray(reference)).max())
    if getattr(policy.sampler, "calibration", None):  # auto: what it measured and predicted, to check its pick
        row["calibration_b1"] = policy.sampler.calibration
    return row, plans


def _fmt(value, spec):
    return "n/a" if value is None else format(value, spec)


def markdown(result) -> str:
    lines = [
        f"# Samplers on the shipped robomimic Lift policy ({os.path.basename(result['checkpoint'])})\n",
        f"Command: `{result['command']}`  ",
        f"Device: {result['device']}, torch {result['torch']}, {result['threads']} torch thread(s); the 2 cores are "
        "shared, so times are indicative. Env: parapolicy/Lift-lowdim-v0 (delta OSC_POSE, 7-d actions, horizon 16 "
        f"x 7 = 112 numbers per sample), seeds {result['seeds'][0]}..{result['seeds'][-1]} ({len(result['seeds'])} "
        "episodes, batched; rows marked n= ran the first n seeds), noise generator seed 0; episodes end at their first success (the sparse reward's max "
        "cannot change after it; upstream steps on to 400).\n",
        "Batch-1 columns: one `predict_action` on each of "
        f"{len(result['observations'])} single observations spread over the sequential rollout (at most "
        f"--open-loop {result['n_open_loop']}: one per sequential chunk; generator seeded by "
        "index; rows marked n= used the first n). Rounds = sequential network-call depth per chunk; rows/round = "
        "network rows per round per sample (NFE / rounds, the mean over rounds); NFE = network evaluations per chunk and sample; time = p50 "
        "wall ms of one chunk. Deviation = max |action difference| to the sequential sampler (upstream's DDPM-100 "
        "loop) on identical observations and noise, over the whole predicted horizon, in action units (delta "
        "actions span [-1, 1]); piadm and randomized_midpoint solve a coarser discretisation, so theirs is a "
        "path difference, not an error. CIs: mean score +- 1.96 s/sqrt(n); success: Wilson 95%.\n",
        "| sampler | settings | rounds/chunk b1 | rows/round b1 | NFE/chunk b1 | time/chunk b1 (ms) | deviation b1 | "
        "rounds/chunk (batch) | deviation closed loop | mean score (95% CI) | success (95% CI) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for label in ORDER:
        row = result["rows"].get(label)
        if row is None:
            continue
        settings = ", ".join(f"{k}={v}" for k, v in row["settings"].items() if k != "name") or "DDPM-100"
        n = f" (n={len(row['scores'])})" if len(row["scores"]) != len(result["seeds"]) else ""
        n_b1 = f" (n={row['n_b1']})" if row.get("n_b1", len(result["observations"])) != len(result["observations"]) else ""
        if row["scores"]:
            mean, half = score_ci(row["scores"])
            p, (lo, hi) = success_ci(row["successes"])
            score, success = f"{mean:.3f} ({mean - half:.3f}-{mean + half:.3f}){n}", f"{p:.2f} ({lo:.2f}-{hi:.2f}){n}"
        else:
            score = success = "not run"
        rows_b1 = _fmt(row.get("rows_per_round_b1"), ".1f")
        lines.append(
            f"| {label} | {settings} | {row['rounds_per_chunk_b1']:.2f} (max {row['rounds_max_b1']}){n_b1} | {rows_b1} | "
            f"{row['nfe_per_chunk_b1']:.0f} | {row['ms_per_chunk_b1']:.0f} | {_fmt(row.get('max_deviation_b1'), '.2g')} | "
            f"{_fmt(row.get('rounds_per_chunk'), '.2f')} | {_fmt(row.get('max_action_deviation'), '.2g')} | "
            f"{score} | {success} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=CHECKPOINT)
    p.add_argument("--episodes", type=int, default=50)
    p.add_argument("--seed", type=int, default=100000)
    p.add_argument("--open-loop", type=int, default=30, help="single observations for the batch-1 columns")
    p.add_argument("--only", default=None, help="comma-separated samplers to (re)compute")
    p.add_argument("--out", default="benchmarks/samplers_lift")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 avoids oversubscribing shared cores)")
    p.add_argument("--fewer", default="jacobian_newton=10",
                   help="closed-loop episodes for costly samplers, e.g. jacobian_newton=10 (its D + 1 = 113 network "
                        "rows per state and round make 50 batched episodes hours of CPU time); 0 skips the closed "
                        "loop; '' for none")
    p.add_argument("--fewer-b1", default="",
                   help="batch-1 observations for costly samplers, e.g. jacobian_newton=2 (the first n)")
    args = p.parse_args(argv)
    fewer = {k: int(v) for k, v in (item.split("=") for item in args.fewer.split(",") if item)}
    fewer_b1 = {k: int(v) for k, v in (item.split("=") for item in args.fewer_b1.split(",") if item)}
    torch.set_num_threads(args.threads)
    policy = parapolicy.load_policy(args.checkpoint)
    make_env = make_env_factory(OmegaConf.create(env_for_task(policy.spec)), policy.spec, wrappers=[EndOnSuccess])
    seeds = list(range(args.seed, args.seed + args.episodes))
    cache = {}
    if os.path.exists(args.out + ".json"):
        with open(args.out + ".json") as f:
            cache = json.load(f)
        # the same checkpoint file wherever the checkout lives (a path from another machine still matches)
        if cache.get("seeds") != seeds or os.path.basename(cache.get("checkpoint") or "") != os.path.basename(
                args.checkpoint):
            cache = {}
    result = {"checkpoint": os.path.abspath(args.checkpoint), "seeds": seeds, "device": device_name("cpu"),
              "torch": torch.__version__, "threads": args.threads, "n_open_loop": args.open_loop,
              "observations": cache.get("observations"), "reference_b1": cache.get("reference_b1"),
              "rows": cache.get("rows", {}),
              "fewer": fewer, "fewer_b1": fewer_b1,
              "command": f"python scripts/bench_samplers_lift.py --episodes {args.episodes} --open-loop "
                         f"{args.open_loop} --fewer '{args.fewer}' --fewer-b1 '{args.fewer_b1}' --out {args.out}"}
    wanted = args.only.split(",") if args.only else [s for s in ORDER if s not in result["rows"]]
    unknown = [s for s in wanted if s not in SAMPLERS]
    if unknown:
        p.error(f"unknown samplers {unknown}; choose from {sorted(SAMPLERS)}")
    if result["observations"] is None and "sequential" not in wanted:
        wanted.insert(0, "sequential")
    for name in sorted(wanted, key=lambda s: s != "sequential"):  # sequential first: it records the observations
        started = time.time()
        if name == "sequential":
            tap = SpreadTap(policy, args.open_loop)
            row = closed_loop(policy, make_env, seeds, name, {}, tap=tap, deviation=False)
            row["max_action_deviation"] = 0.0
            result["observations"] = [o.tolist() for o in tap.observations]
            b1, plans = batch_one(policy, np.asarray(result["observations"], dtype=np.float32), name)
            result["reference_b1"] = [plan.tolist() for plan in plans]
            b1["max_deviation_b1"] = 0.0
        else:
            n = fewer.get(name, len(seeds))
            row = closed_loop(policy, make_env, seeds[:n], name, {}) if n > 0 else \
                {"scores": [], "successes": [], "rounds_per_chunk": None, "max_action_deviation": None}
            k = fewer_b1.get(name, len(result["observations"]))
            b1, _ = batch_one(policy, np.asarray(result["observations"][:k], dtype=np.float32), name,
                              reference=result["reference_b1"][:k])
        row.update(b1)
        policy.set_sampler(name)
        row["settings"] = policy.sampler.config()  # every setting as it ran, name included
        row["wall_s"] = time.time() - started
        result["rows"][name] = row
        print(json.dumps({name: {k: row.get(k) for k in ("success_rate", "rounds_per_chunk", "rounds_per_chunk_b1",
                                                         "nfe_per_chunk_b1", "ms_per_chunk_b1", "wall_s")}}), flush=True)
        write_json_atomic(args.out + ".json", result)  # the numbers first: a table bug must not lose a row
        write_report(args.out, result, markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
