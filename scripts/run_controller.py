#!/usr/bin/env python
"""Drive a Gymnasium env at a fixed control rate with parapolicy.Controller.

    python scripts/run_controller.py --env parapolicy/ToyReach-v0 --hz 10 --mode async --sampler picard
    python scripts/run_controller.py --env parapolicy/ToyReach-v0 --hz 10 --mode rtc --delay-ticks 2
    python scripts/run_controller.py --env parapolicy/PushT-keypoints-v0 --hz 10   # shipped PushT policy

Each tick: read the observation, ask the controller for this tick's action, step the env,
sleep until the next tick. Prints the controller's latency statistics and deadline misses.
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
from parapolicy.eval.build import ASSETS_DIR, ensure_envs_importable
from parapolicy.samplers.prefix import DEFAULT_MAX_GUIDANCE_WEIGHT

DEFAULT_CKPT = {"parapolicy/ToyReach-v0": "toy_reach_unet.ckpt", "parapolicy/PushT-keypoints-v0": "pusht_keypoints_unet.ckpt"}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env", default="parapolicy/ToyReach-v0")
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--hz", type=float, default=10.0)
    p.add_argument("--mode", choices=["sync", "async", "rtc"], default="async")
    p.add_argument("--delay-ticks", type=int, default=None, help="rtc: fixed delay (default: measured)")
    p.add_argument("--guidance", choices=["hard", "soft"], default="soft")
    p.add_argument("--max-guidance-weight", type=float, default=DEFAULT_MAX_GUIDANCE_WEIGHT, help="soft: RTC's beta")
    p.add_argument("--sampler", choices=["sequential", "picard"], default="picard")
    p.add_argument("--window", type=int, default=100)
    p.add_argument("--tolerance", type=float, default=0.1)
    p.add_argument("--warm-start", action="store_true")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--seed", type=int, default=100000)
    args = p.parse_args(argv)
    ensure_envs_importable()
    ckpt = args.checkpoint or os.path.join(ASSETS_DIR, DEFAULT_CKPT.get(args.env, ""))
    policy = parapolicy.load_policy(ckpt)
    if args.sampler == "picard":
        policy.set_sampler("picard", window=args.window, max_rows=args.window, tolerance=args.tolerance)
    env = gym.make(args.env)
    obs, _ = env.reset(seed=args.seed)
    best = 0.0
    with parapolicy.Controller(policy, control_hz=args.hz, mode=args.mode, warm_start=args.warm_start,
                               delay_ticks=args.delay_ticks, guidance=args.guidance,
                               max_guidance_weight=args.max_guidance_weight,
                               generator=torch.Generator().manual_seed(0)) as controller:
        next_tick = time.perf_counter()
        for _ in range(args.steps):
            obs, reward, terminated, truncated, _ = env.step(controller.act(obs))
            best = max(best, float(reward))
            if terminated or truncated:
                break
            next_tick += controller.period_s
            time.sleep(max(0.0, next_tick - time.perf_counter()))
        print(json.dumps({"max_reward": best, **controller.stats}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
