#!/usr/bin/env python
"""Rounds, rows and time per chunk of a sampler with and without warm start, on identical observations.

    python scripts/bench_warm_start.py --episodes 5 --out benchmarks/warm_start_pusht
    python scripts/bench_warm_start.py --sampler quasi_newton --episodes 5 --out benchmarks/warm_start_pusht_qn

For each seed, a cold-start controller drives the env closed-loop and its observations are
recorded; a warm-start controller then sees exactly those observations (same generator
seed). Prints and writes, for both, the mean rounds per chunk, rows per round, NFE and wall ms
per chunk (the first chunk of each episode, which has nothing to warm-start from, left out),
the rounds ratio, and the max action difference between them (both converge to the sequential
answer within the tolerance). The sampler runs at its defaults unless ``--window`` /
``--tolerance`` / ``--settings`` are given; e.g. quasi_newton with every evaluated step's whole
Jacobian measured each round (far over any row budget: the rounds its acceptance rule leaves):

    python scripts/bench_warm_start.py --sampler quasi_newton --episodes 2 --out benchmarks/warm_start_pusht_qn_exact \
        --settings '{"probes": true, "max_rows": 4096, "thin_start": false, "reuse_jacobians": false}'
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

import parapolicy
from parapolicy.bench.harness import command_line, write_report
from parapolicy.eval.build import ASSETS_DIR, device_name, ensure_envs_importable


def _drive(policy, env_id, seed, steps, warm, observations=None):
    with parapolicy.Controller(policy, mode="sync", warm_start=warm, generator=torch.Generator().manual_seed(seed)) as c:
        actions, recorded = [], []
        if observations is None:
            env = gym.make(env_id)
            obs, _ = env.reset(seed=seed)
            for _ in range(steps):
                recorded.append(obs)
                action = c.act(obs)
                actions.append(action)
                obs, _, terminated, truncated, _ = env.step(action)
                if terminated or truncated:
                    break
        else:
            actions = [c.act(o) for o in observations]
            recorded = observations
        return np.stack(actions), list(c.chunks.records), recorded


def _means(records) -> dict:
    """Mean rounds, rows per round and NFE, the widest round, and the median wall time of the chunks."""
    return {"rounds": float(np.mean([r.rounds for r in records])), "nfe": float(np.mean([r.nfe for r in records])),
            "rows_per_round": float(np.mean([r.rows_per_round for r in records])),
            "max_rows_per_round": int(max(r.max_rows_per_round for r in records)),
            "ms_p50": float(np.median([r.latency_ms for r in records]))}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=os.path.join(ASSETS_DIR, "pusht_keypoints_unet.ckpt"))
    p.add_argument("--env", default="parapolicy/PushT-keypoints-v0")
    p.add_argument("--episodes", type=int, default=5)
    p.add_argument("--steps", type=int, default=120)
    p.add_argument("--sampler", default="picard", help="a sampler that accepts a guess (picard, quasi_newton, ...)")
    p.add_argument("--window", type=int, default=None, help="picard family: window and row budget")
    p.add_argument("--tolerance", type=float, default=None)
    p.add_argument("--settings", type=json.loads, default={}, help="more sampler settings, as a JSON object")
    p.add_argument("--seed", type=int, default=100000)
    p.add_argument("--out", default=None, help="write <out>.md and <out>.json")
    args = p.parse_args(argv)
    ensure_envs_importable()
    settings = {} if args.window is None else {"window": args.window, "max_rows": args.window}
    if args.tolerance is not None:
        settings["tolerance"] = args.tolerance
    if not isinstance(args.settings, dict):
        p.error(f"--settings must be a JSON object, got {args.settings!r}")
    settings.update(args.settings)
    policy = parapolicy.load_policy(args.checkpoint).set_sampler(args.sampler, **settings)
    cold_chunks, warm_chunks, max_diff = [], [], 0.0
    started = time.time()
    for i in range(args.episodes):
        seed = args.seed + i
        cold_actions, cold, observations = _drive(policy, args.env, seed, args.steps, warm=False)
        warm_actions, warm, _ = _drive(policy, args.env, seed, args.steps, warm=True, observations=observations)
        cold_chunks += cold[1:]  # the first chunk has nothing to warm-start from
        warm_chunks += warm[1:]
        max_diff = max(max_diff, float(np.abs(warm_actions - cold_actions).max()))
    per = {start: _means(chunks) for start, chunks in (("cold", cold_chunks), ("warm", warm_chunks))}
    result = {
        "checkpoint": os.path.abspath(args.checkpoint), "env": args.env, "episodes": args.episodes,
        "seeds": [args.seed + i for i in range(args.episodes)], "sampler": policy.sampler.config(),
        "chunks_compared": len(cold_chunks), "cold": per["cold"], "warm": per["warm"],
        "mean_rounds_cold": per["cold"]["rounds"], "mean_rounds_warm": per["warm"]["rounds"],
        "rounds_ratio_warm_over_cold": per["warm"]["rounds"] / per["cold"]["rounds"],
        "max_action_difference": max_diff, "device": device_name("cpu"), "wall_s": time.time() - started,
        "command": command_line(__file__, argv),
    }
    print(json.dumps(result, indent=2))
    if args.out:
        write_report(args.out, result, (
            f"# Warm-started vs cold {args.sampler} ({os.path.basename(args.checkpoint)})\n\n"
            f"Command: `{result['command']}`  \nDevice: {result['device']}  \nSampler: {result['sampler']}\n\n"
            "| start | rounds/chunk | rows/round (max) | NFE/chunk | ms/chunk (p50) |\n|---|---|---|---|---|\n"
            + "".join(f"| {start} | {m['rounds']:.2f} | {m['rows_per_round']:.1f} ({m['max_rows_per_round']}) | "
                      f"{m['nfe']:.0f} | {m['ms_p50']:.0f} |\n" for start, m in per.items()) + "\n"
            f"Ratio warm/cold (rounds): {result['rounds_ratio_warm_over_cold']:.3f} over {result['chunks_compared']} "
            f"chunks (seeds {result['seeds'][0]}..{result['seeds'][-1]}). "
            f"Max action difference warm vs cold on identical observations: {max_diff:.2e} (action units; both are "
            "within the tolerance's reach of the sequential answer).\n"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
