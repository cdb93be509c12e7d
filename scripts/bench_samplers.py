#!/usr/bin/env python
"""Every sampler on the shipped PushT policy: rounds, NFE, deviation from sequential, task score.

    python scripts/bench_samplers.py --episodes 50 --out benchmarks/samplers

For each sampler: (1) a closed-loop rollout of ``--episodes`` seeds (from 100000, all envs
batched, noise generator seeded 0, as ``parapolicy-rollout``) gives the task score and the
rounds/NFE per chunk at that batch; during it, every chunk is also sampled by the
sequential sampler on the same observations and generator state, and the max |action
difference| is recorded (PushT action units: pixels of the 512x512 board); (2) the same
sampler on single observations (batch 1) recorded from the sequential rollout gives the
rounds per chunk a one-robot controller sees. Results are cached per sampler in
``<out>.json``: re-running computes only the rows not there yet (``--fresh`` recomputes).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
import torch
from omegaconf import OmegaConf

import parapolicy
from parapolicy.eval.build import ASSETS_DIR, CONFIG_DIR, device_name, make_env_factory
from parapolicy.eval.compare import DeviationRecorder
from parapolicy.eval.episodes import run_batch
from parapolicy.metrics import write_report

SEQUENTIAL = ("sequential", {})
ROWS = [  # (label, sampler name, settings)
    ("sequential", "sequential", {}),
    ("picard", "picard", {"window": 100, "tolerance": 0.1}),
    ("newton_picard", "newton_picard", {"window": 100, "tolerance": 0.01}),
    ("newton_picard@0.1", "newton_picard", {"window": 100, "tolerance": 0.1}),
    ("piadm_sde", "piadm", {"block_size": 10, "iterations": 3, "mode": "sde"}),
    ("piadm_ode", "piadm", {"block_size": 10, "iterations": 3, "mode": "ode"}),
    ("randomized_midpoint", "randomized_midpoint", {"steps": 16, "block_size": 4, "iterations": 6}),
    ("randomized_midpoint_exact", "randomized_midpoint", {"steps": 16, "block_size": 1, "iterations": 2}),
]


class ObservationTap:
    """Passes calls through to a policy and keeps the single observations of its first calls."""

    def __init__(self, policy, keep: int):
        self.policy, self.keep, self.observations = policy, keep, []

    def predict_action(self, obs, generator=None):
        for row in obs["obs"]:
            if len(self.observations) < self.keep:
                self.observations.append(np.asarray(row))
        return self.policy.predict_action(obs, generator=generator)


def closed_loop(policy, make_env, seeds, name, settings, tap=None):
    policy.set_sampler(name, **settings)
    recorder = DeviationRecorder(policy, (name, settings), SEQUENTIAL)
    driver = tap if tap is not None else recorder
    if tap is not None:
        tap.policy = recorder
    run = run_batch(driver, make_env, seeds, generator=torch.Generator().manual_seed(0), obs_key="obs")
    out = run.to_json()
    out["max_action_deviation"] = recorder.max_dev
    return out


def open_loop_batch1(policy, observations, name, settings):
    """Rounds and NFE per chunk for one observation at a time, generator seeded by its index."""
    policy.set_sampler(name, **settings)
    rounds, nfe = [], []
    for i, obs in enumerate(observations):
        out = policy.predict_action({"obs": torch.as_tensor(obs)[None]}, generator=torch.Generator().manual_seed(i))
        rounds.append(out["stats"]["rounds"])
        nfe.append(out["stats"]["nfe"])
    return {"rounds_per_chunk_b1": float(np.mean(rounds)), "rounds_max_b1": int(max(rounds)),
            "nfe_per_chunk_b1": float(np.mean(nfe))}


def markdown(result) -> str:
    lines = [
        f"# Samplers on the shipped PushT policy ({os.path.basename(result['checkpoint'])})\n",
        f"Command: `{result['command']}`  ",
        f"Device: {result['device']}, torch {torch.__version__}. Seeds {result['seeds'][0]}..{result['seeds'][-1]} "
        f"({len(result['seeds'])} episodes, all batched), noise generator seed 0. Batch-1 columns: "
        f"{result['n_open_loop']} single observations recorded from the sequential rollout.\n",
        "Rounds = batched network calls per action chunk (the parallel depth); NFE = network evaluations per chunk "
        "and sample. Deviation = max |action difference| to the sequential sampler (upstream's DDPM-100 loop) on "
        "identical observations and noise, in PushT action units (pixels); the ODE samplers (piadm_ode, "
        "randomized_midpoint) solve the probability-flow ODE from the same x_T, a different sampler of the same "
        "distribution, so their deviation is a path difference, not an error.\n",
        "| sampler | settings | rounds/chunk (batch 1) | NFE/chunk (batch 1) | rounds/chunk (50 envs) | "
        "max deviation vs sequential | mean score | success rate |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label, _name, settings in ROWS:
        row = result["rows"].get(label)
        if row is None:
            continue
        cfg = ", ".join(f"{k}={v}" for k, v in settings.items()) or "DDPM-100"
        lines.append(
            f"| {label} | {cfg} | {row['rounds_per_chunk_b1']:.2f} (max {row['rounds_max_b1']}) | "
            f"{row['nfe_per_chunk_b1']:.0f} | {row['rounds_per_chunk']:.2f} | {row['max_action_deviation']:.3g} | "
            f"{row['mean_score']:.3f} | {row['success_rate']:.2f} |")
    rows = result["rows"]
    if "picard" in rows and "newton_picard" in rows:
        for label in ("newton_picard", "newton_picard@0.1"):
            if label in rows:
                ratio = rows[label]["rounds_per_chunk_b1"] / rows["picard"]["rounds_per_chunk_b1"]
                lines.append(f"\n{label} needs {ratio:.2f}x the rounds of picard at batch 1 "
                             f"({rows[label]['rounds_per_chunk_b1']:.2f} vs {rows['picard']['rounds_per_chunk_b1']:.2f}).")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=os.path.join(ASSETS_DIR, "pusht_keypoints_unet.ckpt"))
    p.add_argument("--episodes", type=int, default=50)
    p.add_argument("--seed", type=int, default=100000)
    p.add_argument("--open-loop", type=int, default=40, help="single observations for the batch-1 columns")
    p.add_argument("--only", default=None, help="comma-separated row labels to (re)compute")
    p.add_argument("--fresh", action="store_true", help="ignore cached rows in <out>.json")
    p.add_argument("--out", default="benchmarks/samplers")
    args = p.parse_args(argv)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    policy = parapolicy.load_policy(args.checkpoint)
    env_cfg = OmegaConf.load(os.path.join(CONFIG_DIR, "env", "pusht_keypoints.yaml"))
    make_env = make_env_factory(env_cfg, policy.spec)
    seeds = list(range(args.seed, args.seed + args.episodes))
    cache = {}
    if not args.fresh and os.path.exists(args.out + ".json"):
        with open(args.out + ".json") as f:
            cache = json.load(f)
        if cache.get("seeds") != seeds or cache.get("checkpoint") != os.path.abspath(args.checkpoint):
            cache = {}
    result = {
        "checkpoint": os.path.abspath(args.checkpoint), "seeds": seeds, "device": device_name("cpu"),
        "n_open_loop": args.open_loop, "observations": cache.get("observations"), "rows": cache.get("rows", {}),
        "command": "python scripts/bench_samplers.py --episodes %d --out %s" % (args.episodes, args.out),
    }
    wanted = set(args.only.split(",")) if args.only else {label for label, _, _ in ROWS}
    for label, name, settings in ROWS:
        if label not in wanted or (label in result["rows"] and not args.only):
            continue
        started = time.time()
        needs_obs = result["observations"] is None
        tap = ObservationTap(policy, args.open_loop) if needs_obs else None
        row = closed_loop(policy, make_env, seeds, name, settings, tap)
        if needs_obs:
            result["observations"] = [o.tolist() for o in tap.observations]
        row.update(open_loop_batch1(policy, np.asarray(result["observations"], dtype=np.float32), name, settings))
        row["wall_s"] = time.time() - started
        row["settings"] = {"name": name, **settings}
        result["rows"][label] = row
        print(json.dumps({label: {k: row[k] for k in ("mean_score", "rounds_per_chunk", "rounds_per_chunk_b1",
                                                       "max_action_deviation", "wall_s")}}), flush=True)
        write_report(args.out, result, markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
