#!/usr/bin/env python
"""Per-chunk latency of sequential vs Picard sampling, measured in one run on this device.

    python scripts/bench_latency.py --device cpu --repeats 5 --out benchmarks/latency_cpu
    python scripts/bench_latency.py --device cuda --repeats 20 --out benchmarks/latency_h100

Policies: the shipped PushT keypoint checkpoint, and a randomly initialised upstream-size
UNet lowdim policy (down_dims 256/512/1024, 65.8M parameters, horizon 16). For each
scheduler setting (DDPM-100, DDIM-16, DPM-Solver-16) and batch size it reports p50/p95
latency per chunk, rounds and NFE of each sampler, the Picard/sequential speed ratio
measured in the same run, and Picard's max action difference from sequential.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time

import numpy as np
import torch

import parapolicy
from parapolicy.checkpoints.dp_builders import build_from_policy_cfg
from parapolicy.metrics import write_report
from parapolicy.models.normalizer import LinearNormalizer
from parapolicy.policy import Policy
from parapolicy.rollout import ASSETS_DIR, device_name

SCHEDULERS = {
    "DDPM-100": ({"_target_": "diffusers.DDPMScheduler", "variance_type": "fixed_small"}, 100),
    "DDIM-16": ({"_target_": "diffusers.DDIMScheduler", "set_alpha_to_one": True, "steps_offset": 0}, 16),
    "DPMSolver-16": ({"_target_": "diffusers.DPMSolverMultistepScheduler"}, 16),
}
COMMON = {"num_train_timesteps": 100, "beta_start": 0.0001, "beta_end": 0.02, "beta_schedule": "squaredcos_cap_v2",
          "prediction_type": "epsilon"}


def upstream_size_policy(device) -> Policy:
    cfg = {
        "_target_": "diffusion_policy.policy.diffusion_unet_lowdim_policy.DiffusionUnetLowdimPolicy",
        "model": {"input_dim": 2, "global_cond_dim": 40, "diffusion_step_embed_dim": 256,
                  "down_dims": [256, 512, 1024], "kernel_size": 5, "n_groups": 8, "cond_predict_scale": True},
        "noise_scheduler": {"_target_": "diffusers.DDPMScheduler", **COMMON},
        "horizon": 16, "obs_dim": 20, "action_dim": 2, "n_action_steps": 8, "n_obs_steps": 2,
        "num_inference_steps": 100, "obs_as_global_cond": True, "oa_step_convention": True,
    }
    torch.manual_seed(0)
    spec, model, _, scheduler = build_from_policy_cfg(cfg)
    norm = LinearNormalizer()
    norm.set_field("obs", torch.full((20,), 1 / 256), torch.full((20,), -1.0))
    norm.set_field("action", torch.full((2,), 1 / 256), torch.full((2,), -1.0))
    return Policy(spec, model, norm, scheduler).to(device)


def with_scheduler(policy: Policy, name: str) -> Policy:
    from parapolicy.checkpoints.schedulers import build_scheduler

    extra, steps = SCHEDULERS[name]
    spec = dataclasses.replace(policy.spec, num_inference_steps=steps)
    return Policy(spec, policy.model, policy.normalizer, build_scheduler({**COMMON, **extra}), policy.obs_encoder)


def time_chunks(policy, obs, repeats, device):
    times, outs = [], []
    for r in range(repeats + 1):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = policy.predict_action(obs, generator=torch.Generator().manual_seed(r))
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        if r > 0:  # the first call warms up
            times.append((time.perf_counter() - t0) * 1000)
            outs.append(out)
    return times, outs


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--batches", default="1,28")
    p.add_argument("--schedulers", default="DDPM-100,DDIM-16,DPMSolver-16")
    p.add_argument("--tolerance", type=float, default=0.1)
    p.add_argument("--policies", default="shipped_pusht,upstream_size_unet")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    rows = []
    base = {}
    if "shipped_pusht" in args.policies:
        base["shipped_pusht"] = parapolicy.load_policy(os.path.join(ASSETS_DIR, "pusht_keypoints_unet.ckpt"),
                                                       device=args.device)
    if "upstream_size_unet" in args.policies:
        base["upstream_size_unet"] = upstream_size_policy(args.device)
    for pname, policy0 in base.items():
        params = sum(p.numel() for p in policy0.model.parameters())
        for sname in args.schedulers.split(","):
            policy = with_scheduler(policy0, sname)
            steps = len(policy.scheduler.timesteps)
            for batch in [int(b) for b in args.batches.split(",")]:
                obs = {"obs": torch.rand(batch, policy.spec.n_obs_steps, 20, generator=torch.Generator().manual_seed(1)) * 500}
                policy.set_sampler("sequential")
                seq_t, seq_out = time_chunks(policy, obs, args.repeats, args.device)
                policy.set_sampler("picard", window=steps, tolerance=args.tolerance)
                par_t, par_out = time_chunks(policy, obs, args.repeats, args.device)
                dev = max(float((a["action"] - b["action"]).abs().max()) for a, b in zip(seq_out, par_out))
                row = {
                    "policy": pname, "params_M": round(params / 1e6, 2), "scheduler": sname, "batch": batch,
                    "sequential_p50_ms": float(np.percentile(seq_t, 50)), "sequential_p95_ms": float(np.percentile(seq_t, 95)),
                    "picard_p50_ms": float(np.percentile(par_t, 50)), "picard_p95_ms": float(np.percentile(par_t, 95)),
                    "picard_rounds": float(np.mean([o["stats"]["parallel_iters"] for o in par_out])),
                    "picard_nfe": float(np.mean([o["stats"]["nfe"] for o in par_out])), "sequential_nfe": steps,
                    "speedup_picard_vs_sequential": float(np.percentile(seq_t, 50) / np.percentile(par_t, 50)),
                    "max_action_diff": dev,
                }
                rows.append(row)
                print(json.dumps(row), flush=True)
    result = {"device": device_name(args.device), "torch": torch.__version__, "python": platform.python_version(),
              "tolerance": args.tolerance, "repeats": args.repeats, "rows": rows,
              "command": "python scripts/bench_latency.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    if args.out:
        lines = [
            f"# Per-chunk latency, sequential vs Picard ({result['device']})\n\n",
            f"Command: `{result['command']}`  \ntorch {result['torch']}, Picard window = all steps, "
            f"tolerance {args.tolerance}, {args.repeats} timed chunks after one warm-up.\n\n",
            "| policy | params | scheduler | batch | sequential p50 / p95 ms | Picard p50 / p95 ms | "
            "rounds | Picard NFE | speed ratio seq/Picard | max action diff |\n|---|---|---|---|---|---|---|---|---|---|\n",
        ]
        lines += [f"| {r['policy']} | {r['params_M']}M | {r['scheduler']} | {r['batch']} | "
                  f"{r['sequential_p50_ms']:.1f} / {r['sequential_p95_ms']:.1f} | {r['picard_p50_ms']:.1f} / "
                  f"{r['picard_p95_ms']:.1f} | {r['picard_rounds']:.1f} | {r['picard_nfe']:.0f} | "
                  f"{r['speedup_picard_vs_sequential']:.2f} | {r['max_action_diff']:.1e} |\n" for r in rows]
        write_report(args.out, result, "".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
