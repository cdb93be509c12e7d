#!/usr/bin/env python
"""Cost of ONE denoiser call per acceleration mode (eager, cuda_graph, compile), measured in one run.

    python scripts/bench_network_call.py --device cuda --rows 1,64 --out benchmarks/network_call_h100

Network: the upstream-size UNet of ``bench_latency.py`` (65.8M parameters, horizon 16). For
each row count it reports the median ms per call over ``--repeats`` calls (CUDA events are
not needed: the device is synchronised around each call) and the one-time cost of the
first call (graph capture or compilation). This answers whether ``torch.compile`` beats
plain CUDA-graph replay for the network call that every sampler round pays.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch

from bench_latency import random_obs, upstream_size_unet
from parapolicy.metrics import write_report
from parapolicy.eval.build import device_name


def time_calls(denoise, x, t, repeats):
    def once():
        torch.cuda.synchronize()
        started = time.perf_counter()
        with torch.no_grad():
            denoise(x, t)
        torch.cuda.synchronize()
        return (time.perf_counter() - started) * 1000.0

    first = once()
    for _ in range(2):
        once()
    return first, float(np.median([once() for _ in range(repeats)]))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda")
    p.add_argument("--rows", default="1,64")
    p.add_argument("--repeats", type=int, default=50)
    p.add_argument("--modes", default="eager,cuda_graph,compile")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("needs a CUDA device", file=sys.stderr)
        return 1
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    policy = upstream_size_unet(args.device)
    rows_list = [int(r) for r in args.rows.split(",")]
    result = {"device": device_name(args.device), "torch": torch.__version__, "rows": [],
              "command": "python scripts/bench_network_call.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    for mode in args.modes.split(","):
        policy.accelerate(mode)
        denoise, shape = policy.bound_denoiser(random_obs(policy, 1))
        for rows in rows_list:
            x = torch.randn(rows, *shape[1:], device=args.device)
            t = torch.full((rows,), 50, dtype=torch.long, device=args.device)
            first, median = time_calls(denoise, x, t, args.repeats)
            row = {"mode": mode, "rows": rows, "first_call_ms": first, "median_ms": median}
            result["rows"].append(row)
            print(row, flush=True)
    policy.accelerate("eager")
    if args.out:
        lines = [f"# One denoiser call per acceleration mode ({result['device']})\n\n",
                 f"Command: `{result['command']}`  \ntorch {result['torch']}, TF32 on, 65.8M-parameter UNet, "
                 f"median of {args.repeats} calls.\n\n| mode | rows | median ms | first call ms (capture/compile) |\n"
                 "|---|---|---|---|\n"]
        lines += [f"| {r['mode']} | {r['rows']} | {r['median_ms']:.2f} | {r['first_call_ms']:.0f} |\n"
                  for r in result["rows"]]
        write_report(args.out, result, "".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
