#!/usr/bin/env python
"""Collect scripted-expert demonstrations into an .npz replay buffer (with episode_ends).

    python scripts/collect_demos.py --env pusht --episodes 200 --workers 2 --out data/pusht_demos.npz
    python scripts/collect_demos.py --env lift --episodes 200 --steps-after-success 30 --out data/lift_demos.npz

Episodes use seeds start_seed, start_seed+1, ...; failed episodes are dropped unless
--keep-failures. Prints the expert's success rate over the seeds it ran.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import time

import numpy as np
from tqdm.auto import tqdm

from parapolicy.eval.build import ensure_envs_importable
from parapolicy.train.dataset import save_buffer

ensure_envs_importable()
from parapolicy_envs.demos import EXPERT_ENVS, render_pusht_images, run_expert_episode  # noqa: E402


def _episode(args):
    env, seed, randomize, images, after = args
    episode = run_expert_episode(env, seed, randomize=randomize, steps_after_success=after)
    if images and episode["success"]:
        episode.update(render_pusht_images(seed, episode["action"], episode["state"]))
    return episode


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env", choices=EXPERT_ENVS, required=True)
    p.add_argument("--episodes", type=int, default=100)
    p.add_argument("--start-seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 1)))
    p.add_argument("--out", required=True)
    p.add_argument("--no-randomize", action="store_true", help="fixed expert parameters (less diverse demos)")
    p.add_argument("--keep-failures", action="store_true")
    p.add_argument("--images", action="store_true", help="pusht: also store 96x96 images and agent_pos")
    p.add_argument("--steps-after-success", type=int, default=None,
                   help="end each episode this many steps after its first success (robomimic demos end at success)")
    args = p.parse_args(argv)
    if args.images and args.env != "pusht":
        p.error("--images is available for --env pusht")
    jobs = [(args.env, args.start_seed + i, not args.no_randomize, args.images, args.steps_after_success) for i in range(args.episodes)]
    started = time.time()
    episodes = []
    if args.workers > 1:
        with mp.get_context("spawn").Pool(args.workers) as pool:
            for ep in tqdm(pool.imap(_episode, jobs), total=len(jobs), desc=f"{args.env} demos"):
                episodes.append(ep)
    else:
        episodes = [_episode(j) for j in tqdm(jobs, desc=f"{args.env} demos")]
    successes = sum(ep["success"] for ep in episodes)
    kept = [ep for ep in episodes if ep["success"] or args.keep_failures]
    if not kept:
        print("no successful episodes: nothing written", file=sys.stderr)
        return 1
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    keys = ("obs", "action", "state") + (("image", "agent_pos") if args.images else ()) \
        + (("action_abs",) if "action_abs" in kept[0] else ())
    save_buffer(args.out, [{k: ep[k] for k in keys} for ep in kept],
                extra={"seeds": np.array([ep["seed"] for ep in kept]), "success": np.array([ep["success"] for ep in kept])})
    lengths = [len(ep["action"]) for ep in episodes]
    print(f"expert success {successes}/{len(episodes)} = {successes / len(episodes):.3f} "
          f"(seeds {args.start_seed}..{args.start_seed + args.episodes - 1}); mean length {np.mean(lengths):.1f}; "
          f"kept {len(kept)} episodes, {sum(len(ep['action']) for ep in kept)} steps -> {args.out} "
          f"in {time.time() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
