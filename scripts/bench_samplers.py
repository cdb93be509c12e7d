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

The SWEEP rows (PIADM-SDE, PIADM-ODE, parallel randomized midpoint at 3-4 round budgets)
run the closed loop only, paired with the sequential row by seeds and noise generator (their
rounds per chunk are fixed by their settings, and their actions solve a different SDE/ODE
discretisation, so a deviation from DDPM-100 is not an error). Every closed-loop row keeps
its per-seed scores; ``<out>_pareto.png`` draws rounds per chunk against mean score and
success (95% CIs) with sequential DDPM-100 as a horizontal band.
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
from parapolicy.bench.harness import score_ci, success_ci, write_json_atomic, write_report
from parapolicy.bench.loops import closed_loop

ROWS = [  # (label, sampler name, settings)
    ("sequential", "sequential", {}),
    ("picard", "picard", {"window": 100, "max_rows": 100, "tolerance": 0.1}),
    ("newton_picard", "newton_picard", {"window": 100, "max_rows": 100, "tolerance": 0.01}),
    ("newton_picard@0.1", "newton_picard", {"window": 100, "max_rows": 100, "tolerance": 0.1}),
]
SWEEP = [  # (label, sampler name, settings): rounds per chunk = blocks x iterations here
    ("piadm_sde@15", "piadm", {"blocks": 5, "points": 4, "iterations": 3, "mode": "sde"}),
    ("piadm_ode@15", "piadm", {"blocks": 5, "points": 4, "iterations": 3, "mode": "ode"}),
    ("randomized_midpoint@15", "randomized_midpoint", {"blocks": 5, "points": 4, "iterations": 3}),
    ("piadm_sde@10", "piadm", {"blocks": 5, "points": 4, "iterations": 2, "mode": "sde"}),
    ("piadm_ode@10", "piadm", {"blocks": 5, "points": 4, "iterations": 2, "mode": "ode"}),
    ("randomized_midpoint@10", "randomized_midpoint", {"blocks": 5, "points": 4, "iterations": 2}),
    ("piadm_sde@20", "piadm", {"blocks": 5, "points": 4, "iterations": 4, "mode": "sde"}),
    ("piadm_ode@20", "piadm", {"blocks": 5, "points": 4, "iterations": 4, "mode": "ode"}),
    ("randomized_midpoint@20", "randomized_midpoint", {"blocks": 5, "points": 4, "iterations": 4}),
]
SWEEP += [  # the same 10 rounds spent on a coarser grid solved exactly (iterations >= block steps)
    ("piadm_sde_coarse@10", "piadm", {"blocks": 5, "points": 2, "iterations": 2, "mode": "sde"}),
    ("piadm_ode_coarse@10", "piadm", {"blocks": 5, "points": 2, "iterations": 2, "mode": "ode"}),
    ("randomized_midpoint_coarse@10", "randomized_midpoint", {"blocks": 5, "points": 1, "iterations": 2}),
]
SWEEP_FAMILIES = ("piadm_sde", "piadm_ode", "randomized_midpoint", "piadm_sde_coarse", "piadm_ode_coarse",
                  "randomized_midpoint_coarse")


class ObservationTap:
    """Passes calls through to a policy and keeps the single observations of its first calls."""

    def __init__(self, policy, keep: int):
        self.policy, self.keep, self.observations = policy, keep, []

    def predict_action(self, obs, generator=None):
        for row in obs["obs"]:
            if len(self.observations) < self.keep:
                self.observations.append(np.asarray(row))
        return self.policy.predict_action(obs, generator=generator)


def open_loop_batch1(policy, observations, name, settings):
    """Rounds and NFE per chunk for one observation at a time, generator seeded by its index."""
    policy.set_sampler(name, **settings)
    rounds, nfe = [], []
    for i, obs in enumerate(observations):
        out = policy.predict_action({"obs": torch.as_tensor(obs)[None]}, generator=torch.Generator().manual_seed(i))
        rounds.append(out.stats.sampling.rounds)
        nfe.append(out.stats.sampling.nfe)
    return {"rounds_per_chunk_b1": float(np.mean(rounds)), "rounds_max_b1": int(max(rounds)),
            "nfe_per_chunk_b1": float(np.mean(nfe))}


def markdown(result, rounds_block: str = "") -> str:
    lines = [
        f"# Samplers on the shipped PushT policy ({os.path.basename(result['checkpoint'])})\n",
        f"Command: `{result['command']}`  ",
        f"Device: {result['device']}, torch {torch.__version__}. Seeds {result['seeds'][0]}..{result['seeds'][-1]} "
        f"({len(result['seeds'])} episodes, all batched), noise generator seed 0. Batch-1 columns: "
        f"{result['n_open_loop']} single observations recorded from the sequential rollout.\n",
        "Rounds = batched network calls per action chunk (the parallel depth); NFE = network evaluations per chunk "
        "and sample; rows/round = NFE / rounds, the rows one call evaluates per sample (a call's cost grows with "
        "them). Deviation = max |action difference| to the sequential sampler (upstream's DDPM-100 loop) on "
        "identical observations and noise, in PushT action units (pixels); the ODE samplers (piadm_ode, "
        "randomized_midpoint) solve the probability-flow ODE from the same x_T, a different sampler of the same "
        "distribution, so their deviation is a path difference, not an error.\n",
        "| sampler | settings | rounds/chunk (batch 1) | rows/round (batch 1) | NFE/chunk (batch 1) | "
        "rounds/chunk (50 envs) | max deviation vs sequential | mean score | success rate |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for label, _name, settings in ROWS:
        row = result["rows"].get(label)
        if row is None:
            continue
        cfg = ", ".join(f"{k}={v}" for k, v in settings.items()) or "DDPM-100"
        lines.append(
            f"| {label} | {cfg} | {row['rounds_per_chunk_b1']:.2f} (max {row['rounds_max_b1']}) | "
            f"{row['nfe_per_chunk_b1'] / row['rounds_per_chunk_b1']:.1f} | "
            f"{row['nfe_per_chunk_b1']:.0f} | {row['rounds_per_chunk']:.2f} | {row['max_action_deviation']:.3g} | "
            f"{row['mean_score']:.3f} | {row['success_rate']:.2f} |")
    rows = result["rows"]
    if "picard" in rows and "newton_picard" in rows:
        for label in ("newton_picard", "newton_picard@0.1"):
            if label in rows:
                ratio = rows[label]["rounds_per_chunk_b1"] / rows["picard"]["rounds_per_chunk_b1"]
                lines.append(f"\n{label} needs {ratio:.2f}x the rounds of picard at batch 1 "
                             f"({rows[label]['rounds_per_chunk_b1']:.2f} vs {rows['picard']['rounds_per_chunk_b1']:.2f}).")
    lines += sweep_markdown(result)
    if rounds_block:
        lines += ["", rounds_block]
    return "\n".join(lines) + "\n"


def sweep_markdown(result) -> list:
    rows = result["rows"]
    done = [(label, name, settings) for label, name, settings in SWEEP if label in rows]
    if not done:
        labels = ",".join(["sequential"] + [label for label, _, _ in SWEEP])
        return ["\n## Rounds vs task score: PIADM and parallel randomized midpoint\n",
                f"Not measured yet for the continuous-time samplers: `python scripts/bench_samplers.py --only {labels}` "
                "(the sequential row is re-run to record its per-seed scores for the CI band)."]
    lines = [
        "\n## Rounds vs task score: PIADM and parallel randomized midpoint\n",
        "Closed loop only, same seeds and noise generator as the sequential row (`--only` with the labels below). "
        "Rounds/chunk = sequential network-call depth, fixed by the settings (blocks x iterations); NFE/chunk per sample. CIs: mean score +- 1.96 s/sqrt(n) over seeds, success Wilson "
        "95%. ![rounds vs score](samplers_pareto.png)\n",
        "| sampler | settings | rounds/chunk | rows/round | NFE/chunk | mean score (95% CI) | success rate (95% CI) |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, _name, settings in [("sequential", "sequential", {})] + done:
        row = rows.get(label)
        if row is None or "scores" not in row:
            continue
        mean, half = score_ci(row["scores"])
        p, (lo, hi) = success_ci(row["successes"])
        cfg = ", ".join(f"{k}={v}" for k, v in settings.items()) or "DDPM-100"
        lines.append(f"| {label} | {cfg} | {row['rounds_per_chunk']:.0f} | "
                     f"{row['nfe_per_chunk'] / row['rounds_per_chunk']:.1f} | {row['nfe_per_chunk']:.0f} | "
                     f"{mean:.3f} ({mean - half:.3f}-{mean + half:.3f}) | {p:.2f} ({lo:.2f}-{hi:.2f}) |")
    return lines


def draw_pareto(result, path) -> bool:
    """x = rounds per chunk, y = mean score and success rate with 95% CIs; sequential as a band."""
    rows = result["rows"]
    if "scores" not in rows.get("sequential", {}) or not any(label in rows for label, _, _ in SWEEP):
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    seq = rows["sequential"]
    bands = [score_ci(seq["scores"]), success_ci(seq["successes"])]
    for ax, (kind, band) in zip(axes, zip(("mean score", "success rate"), bands)):
        centre, (lo, hi) = (band[0], (band[0] - band[1], band[0] + band[1])) if kind == "mean score" else band
        ax.axhspan(lo, hi, color="0.85", label="sequential DDPM-100 (95% CI)")
        ax.axhline(centre, color="0.4", lw=1)
        for offset, family in zip(np.linspace(-0.3, 0.3, len(SWEEP_FAMILIES)), SWEEP_FAMILIES):
            pts = sorted((rows[label]["rounds_per_chunk"], rows[label]) for label, _, _ in SWEEP
                         if label.split("@")[0] == family and label in rows)
            if not pts:
                continue
            xs, ys, err = [], [], [[], []]
            for rounds, row in pts:
                if kind == "mean score":
                    mean, half = score_ci(row["scores"])
                    lo_, hi_ = mean - half, mean + half
                else:
                    mean, (lo_, hi_) = success_ci(row["successes"])
                xs.append(rounds + offset)
                ys.append(mean)
                err[0].append(mean - lo_)
                err[1].append(hi_ - mean)
            ax.errorbar(xs, ys, yerr=err, marker="s" if "coarse" in family else "o", capsize=3, label=family)
        ax.set_xlabel("rounds per chunk (sequential network calls)")
        ax.set_ylabel(kind)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, loc="lower right")
    fig.suptitle(f"PushT, {len(result['seeds'])} seeds, paired noise: rounds vs task score")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


ROUNDS_BEGIN, ROUNDS_END = "<!-- rounds:begin -->", "<!-- rounds:end -->"


def preserved_rounds_block(path) -> str:
    """The block another bench writes into samplers.md, kept verbatim when this one rewrites it."""
    if not os.path.exists(path):
        return ""
    with open(path) as f:
        text = f.read()
    start, end = text.find(ROUNDS_BEGIN), text.find(ROUNDS_END)
    return text[start : end + len(ROUNDS_END)] if 0 <= start < end else ""


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=os.path.join(ASSETS_DIR, "pusht_keypoints_unet.ckpt"))
    p.add_argument("--episodes", type=int, default=50)
    p.add_argument("--seed", type=int, default=100000)
    p.add_argument("--open-loop", type=int, default=40, help="single observations for the batch-1 columns")
    p.add_argument("--only", default=None, help="comma-separated row labels to (re)compute")
    p.add_argument("--fresh", action="store_true", help="ignore cached rows in <out>.json")
    p.add_argument("--out", default="benchmarks/samplers")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 avoids oversubscribing shared cores)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
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
    every = {label: (name, settings) for label, name, settings in ROWS + SWEEP}
    wanted = args.only.split(",") if args.only else [label for label in every if label not in result["rows"]]
    unknown = [label for label in wanted if label not in every]
    if unknown:
        p.error(f"unknown row labels {unknown}; choose from {sorted(every)}")
    sweep_labels = {label for label, _, _ in SWEEP}
    for label in wanted:  # in the order asked for
        name, settings = every[label]
        started = time.time()
        cached = result["rows"].get(label, {})
        if label in sweep_labels or (label == "sequential" and "rounds_per_chunk_b1" in cached):
            row = closed_loop(policy, make_env, seeds, name, settings, deviation=False)
            if label == "sequential":  # deviation to itself is 0; batch-1 columns: deterministic, kept
                row.update({k: cached[k] for k in ("rounds_per_chunk_b1", "rounds_max_b1", "nfe_per_chunk_b1")})
                row["max_action_deviation"] = 0.0
        else:
            needs_obs = result["observations"] is None
            tap = ObservationTap(policy, args.open_loop) if needs_obs else None
            row = closed_loop(policy, make_env, seeds, name, settings, tap)
            if needs_obs:
                result["observations"] = [o.tolist() for o in tap.observations]
            row.update(open_loop_batch1(policy, np.asarray(result["observations"], dtype=np.float32), name, settings))
        row["wall_s"] = time.time() - started
        row["settings"] = {"name": name, **settings}
        result["rows"][label] = row
        print(json.dumps({label: {k: row.get(k) for k in ("mean_score", "success_rate", "rounds_per_chunk",
                                                           "nfe_per_chunk", "wall_s")}}), flush=True)
        write_json_atomic(args.out + ".json", result)  # the numbers first: a table bug must not lose a row
        write_report(args.out, result, markdown(result, preserved_rounds_block(args.out + ".md")))
        draw_pareto(result, args.out + "_pareto.png")
    print(markdown(result, preserved_rounds_block(args.out + ".md")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
