#!/usr/bin/env python
"""Real-time chunking on PushT keypoints, on a simulated clock (inference takes d ticks).

    python scripts/bench_realtime.py --out benchmarks/realtime_pusht

For each delay d (ticks at the env's 10 Hz) and mode -- sync (the env waits), naive async
(switch at index d), ACT temporal ensembling, RTC hard and soft -- runs the seeds closed
loop with ``parapolicy.eval.realtime.run_realtime`` (sequential sampler, noise seed 0) and
records mean score (95% CI, normal approximation), success rate, mean/max action jump at
chunk switches and the mean step between consecutive actions. Then an exact parallel
sampler (``--rounds-sampler``, default newton_prior) runs RTC with and without warm start
on ``--rounds-episodes`` seeds for its rounds per chunk (a count: a few episodes of about
40 chunks each suffice). Rows are cached in ``<out>.json``: an interrupted run resumes, and
the table is rewritten after every row.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import gymnasium as gym
import torch

import parapolicy
from parapolicy.eval.realtime import RealtimeSettings, run_realtime
from parapolicy.samplers.prefix import DEFAULT_MAX_GUIDANCE_WEIGHT
from parapolicy.bench.harness import command_line, score_ci, write_report
from parapolicy.eval.build import ASSETS_DIR, device_name, ensure_envs_importable as _ensure_envs_importable

ENV_ID = "parapolicy/PushT-keypoints-v0"


def run_row(policy, seeds, settings, sampler, args) -> dict:
    name, kwargs = sampler
    policy.set_sampler(name, **kwargs)
    started = time.perf_counter()
    res = run_realtime(policy, lambda: gym.make(ENV_ID).unwrapped, seeds, settings,
                       generator=torch.Generator().manual_seed(args.noise_seed), max_steps=args.max_steps,
                       drop_finished=True)
    out = res.to_json()
    row = {key: out[key] for key in ("n_episodes", "mean_score", "success_rate", "n_chunks", "rounds_per_chunk",
                                     "nfe_per_chunk", "n_fallbacks")}
    row.update(out["realtime"])
    row.update(sampler=name, seeds=[int(seeds[0]), int(seeds[-1])], score_ci95=score_ci(res.scores)[1],
               wall_s=time.perf_counter() - started)
    return row


def guidance_label(settings: RealtimeSettings) -> str:
    """Only rtc has a guidance form; soft guidance also names its weight cap (RTC's beta)."""
    if settings.mode != "rtc":
        return "any"
    return f"soft-b{settings.max_guidance_weight:g}" if settings.soft_guided else settings.guidance


def row_key(kind, settings: RealtimeSettings) -> str:
    guidance = guidance_label(settings)
    return f"{kind}/{settings.mode}/{guidance}/d{settings.delay_ticks}/warm{int(settings.warm_start)}"


def plan(args):
    """(key, kind, settings) in priority order: the d = 4 comparison first."""
    rows = [("score", RealtimeSettings("sync", 0))]
    delays = sorted(args.delays, key=lambda d: (d != 4, d))
    for d in delays:  # every row of one delay before the next delay
        for mode, guidance in (("async", "hard"), ("rtc", "hard"), ("rtc", "soft"), ("ensemble", "hard")):
            if d == 0 and mode in ("async", "rtc"):
                continue  # identical to sync at d = 0 (tested)
            rows.append(("score", RealtimeSettings(mode, d, guidance, args.max_guidance_weight)))
        for warm in (False, True):
            rows.append(("rounds", RealtimeSettings("rtc", d, args.rounds_guidance, warm_start=warm)))
    for weight in args.weight_sweep:  # how the default soft weight cap was chosen: paired seeds at d = 4
        rows.append(("sweep", RealtimeSettings("rtc", 4, "soft", weight)))
    return [(row_key(kind, s), kind, s) for kind, s in rows]


def markdown(result: dict, args) -> str:
    rows = result["rows"]
    lines = [
        "# Real-time chunking on PushT keypoints (simulated clock)",
        "",
        f"Command: `{result['command']}`",
        "",
        f"Device: {result['device']}. Policy: shipped `pusht_keypoints_unet.ckpt` (DDPM-100, horizon 16, "
        "8 executed actions). Simulated clock: the env advances one tick per action (10 Hz) and a chunk "
        "planned at tick k is usable at tick k + d; execution horizon s = max(8 - d, d). Sequential "
        "sampler, noise seed 0. Score: mean of each episode's max coverage reward, with the 95% CI of "
        "the mean (normal approximation). Jump: L2 distance (action units, pixels) between the first "
        "action of a new chunk and the previous tick's action; step: the same over all consecutive ticks.",
        "",
        "| d (ticks) | mode | episodes | mean score (95% CI) | success | mean jump | max jump | mean step |",
        "|---|---|---|---|---|---|---|---|",
    ]
    order = {"sync": 0, "async": 1, "rtc": 2, "ensemble": 3}
    score_rows = sorted(((k, r) for k, r in rows.items() if k.startswith("score/")),
                        key=lambda kr: (kr[1]["delay_ticks"], order[kr[1]["mode"]], kr[1]["guidance"] or "",
                                        kr[1].get("max_guidance_weight") or 0))
    for key, row in score_rows:
        mode = row["mode"] + (f" {row['guidance']}" if row["mode"] == "rtc" else "")
        if row.get("max_guidance_weight"):
            mode += f" (β={row['max_guidance_weight']:g})"
        d = "any (env waits)" if row["mode"] == "sync" else row["delay_ticks"]
        lines.append(f"| {d} | {mode} | {row['n_episodes']} | {row['mean_score']:.3f} ± {row['score_ci95']:.3f} | "
                     f"{row['success_rate']:.2f} | {row['mean_jump']:.2f} | {row['max_jump']:.2f} | "
                     f"{row['mean_step']:.2f} |")
    rounds = {k: v for k, v in rows.items() if k.startswith("rounds/")}
    if rounds:
        lines += ["", f"Rounds per chunk of the exact parallel sampler ({args.window_desc}), RTC "
                  f"{args.rounds_guidance}, first {args.rounds_episodes} seeds:", "",
                  "| d (ticks) | cold start | warm start | nfe cold | nfe warm | score cold | score warm |",
                  "|---|---|---|---|---|---|---|"]
        for d in sorted({r["delay_ticks"] for r in rounds.values()}):
            cold = rounds.get(f"rounds/rtc/{args.rounds_guidance}/d{d}/warm0")
            warm = rounds.get(f"rounds/rtc/{args.rounds_guidance}/d{d}/warm1")

            def cell(r, field, fmt="{:.1f}"):
                return fmt.format(r[field]) if r else "not run"
            lines.append(f"| {d} | {cell(cold, 'rounds_per_chunk')} | {cell(warm, 'rounds_per_chunk')} | "
                         f"{cell(cold, 'nfe_per_chunk')} | {cell(warm, 'nfe_per_chunk')} | "
                         f"{cell(cold, 'mean_score', '{:.3f}')} | {cell(warm, 'mean_score', '{:.3f}')} |")
    sweep = sorted((r for k, r in rows.items() if k.startswith("sweep/")), key=lambda r: r["max_guidance_weight"])
    if sweep:
        lines += ["", f"Soft guidance weight cap (RTC's beta) at d = 4, sequential sampler, first "
                  f"{sweep[0]['n_episodes']} seeds (paired: same seeds and noise for every beta); the default "
                  f"is {DEFAULT_MAX_GUIDANCE_WEIGHT:g}:", "",
                  "| beta | mean score (95% CI) | success | mean jump | max jump | mean step |", "|---|---|---|---|---|---|"]
        lines += [f"| {r['max_guidance_weight']:g} | {r['mean_score']:.3f} ± {r['score_ci95']:.3f} | "
                  f"{r['success_rate']:.2f} | {r['mean_jump']:.2f} | {r['max_jump']:.2f} | {r['mean_step']:.2f} |"
                  for r in sweep]
    lines += ["", "## Targets at d = 4", ""] + targets(rows, args.max_guidance_weight)
    missing = [key for key, _, _ in plan(args) if key not in rows]
    if missing:
        lines += ["", f"Not run (time budget): {', '.join(missing)}."]
    return "\n".join(lines) + "\n"


def targets(rows: dict, weight: float) -> list[str]:
    sync = rows.get("score/sync/any/d0/warm0")
    naive = rows.get("score/async/any/d4/warm0")
    out = []
    soft = {k.split("/")[2] for k in rows if k.startswith("score/rtc/soft-b")} | {f"soft-b{weight:g}"}
    for guidance in ["hard"] + sorted(soft, key=lambda g: float(g[len("soft-b"):])):
        rtc = rows.get(f"score/rtc/{guidance}/d4/warm0")
        name = guidance.replace("soft-b", "soft (β=") + (")" if guidance.startswith("soft-b") else "")
        if not (sync and rtc and naive):
            out.append(f"- RTC {name}: not measured.")
            continue
        low = sync["mean_score"] - sync["score_ci95"]
        gap = rtc["mean_score"] - low
        score_ok = rtc["mean_score"] >= low
        ratio = rtc["mean_jump"] / naive["mean_jump"] if naive["mean_jump"] else float("nan")
        out.append(f"- RTC {name}: score {rtc['mean_score']:.3f} vs sync d=0 CI lower bound {low:.3f} -> "
                   f"{'met' if score_ok else f'missed by {-gap:.3f}'}; mean jump {rtc['mean_jump']:.2f} = "
                   f"{ratio:.4f} x naive async's {naive['mean_jump']:.2f} (target <= 0.5) -> "
                   f"{'met' if ratio <= 0.5 else f'missed by {ratio - 0.5:.4f}'}.")
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=os.path.join(ASSETS_DIR, "pusht_keypoints_unet.ckpt"))
    p.add_argument("--episodes", type=int, default=50)
    p.add_argument("--seed", type=int, default=100000)
    p.add_argument("--delays", type=lambda s: [int(x) for x in s.split(",")], default=[0, 1, 2, 4, 6])
    p.add_argument("--rounds-episodes", type=int, default=5)
    p.add_argument("--rounds-guidance", default="hard")
    p.add_argument("--max-guidance-weight", type=float, default=DEFAULT_MAX_GUIDANCE_WEIGHT,
                   help="soft rows: RTC's beta (rows of other weights already in <out>.json stay in the table)")
    p.add_argument("--weight-sweep", type=lambda s: [float(x) for x in s.split(",") if x], default=[5.0, 10.0, 20.0],
                   help="soft guidance weight caps compared at d = 4 on --sweep-episodes seeds (empty: none)")
    p.add_argument("--sweep-episodes", type=int, default=20)
    p.add_argument("--rounds-sampler", default="newton_prior", help="the exact parallel sampler of the rounds rows")
    p.add_argument("--window", type=int, default=100)
    p.add_argument("--tolerance", type=float, default=None, help="default: the sampler's own")
    p.add_argument("--max-steps", type=int, default=300)
    p.add_argument("--noise-seed", type=int, default=0)
    p.add_argument("--only", default=None, help="comma-separated row keys to run (default: all, in order)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 avoids oversubscribing shared cores)")
    p.add_argument("--out", default="benchmarks/realtime_pusht")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.rounds_settings = {"window": args.window, "max_rows": args.window}
    if args.tolerance is not None:
        args.rounds_settings["tolerance"] = args.tolerance
    args.window_desc = f"{args.rounds_sampler}, " + ", ".join(f"{k} {v}" for k, v in args.rounds_settings.items())
    _ensure_envs_importable()
    policy = parapolicy.load_policy(args.checkpoint)
    seeds = [args.seed + i for i in range(args.episodes)]
    result = {"command": command_line(__file__, argv),
              "device": device_name("cpu"), "rows": {}}
    if os.path.exists(args.out + ".json"):  # resume: keep the rows run on the seeds asked for now
        with open(args.out + ".json") as f:
            cached = json.load(f).get("rows", {})
        wanted = {"score": [seeds[0], seeds[-1]], "rounds": [seeds[0], seeds[min(args.rounds_episodes, len(seeds)) - 1]],
                  "sweep": [seeds[0], seeds[min(args.sweep_episodes, len(seeds)) - 1]]}
        result["rows"] = {k: v for k, v in cached.items() if v.get("seeds") == wanted[k.split("/")[0]]}
    only = set(args.only.split(",")) if args.only else None
    for key, kind, settings in plan(args):
        if key in result["rows"] or (only is not None and key not in only):
            continue
        if kind == "score":
            row = run_row(policy, seeds, settings, ("sequential", {}), args)
        elif kind == "sweep":
            row = run_row(policy, seeds[: args.sweep_episodes], settings, ("sequential", {}), args)
        else:
            row = run_row(policy, seeds[: args.rounds_episodes], settings,
                          (args.rounds_sampler, args.rounds_settings), args)
        result["rows"][key] = row
        print(json.dumps({key: row}), flush=True)
        write_report(args.out, result, markdown(result, args))
    write_report(args.out, result, markdown(result, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
