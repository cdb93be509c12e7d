#!/usr/bin/env python
"""The cost curve: ONE denoiser call at 1, 2, 4, ... rows, per network and acceleration mode.

    python scripts/bench_network_call.py --device cuda --out benchmarks/network_call_h100
    python scripts/bench_network_call.py --device cpu --modes eager --networks shipped_pusht --max-rows 256 \
        --out benchmarks/network_call_cpu

A parallel sampler's chunk costs the sum, over its rounds, of one call at that round's rows,
so this curve (median ms per call over ``--repeats`` calls, the device synchronised around
each) is what its latency is predicted from (``sampler=auto``, the modelled columns of
``bench_latency.py --table samplers``). Networks: ``parapolicy.bench.networks.POLICIES`` (the
shipped PushT UNet, the 65.8M upstream-size UNet, the 255M hybrid-image policy); modes:
eager, cuda_graph and compile on CUDA (graph capture / compile cost is the first call), eager
on the CPU.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from parapolicy.eval.build import device_name
from parapolicy.bench.harness import command_line, write_report
from parapolicy.bench.networks import POLICIES, random_obs
from parapolicy.timing import median_call_ms, synchronize


def time_calls(denoise, x, t, repeats: int, device: str):
    """(first call ms, median ms of ``repeats`` calls after two more warm-up calls)."""
    with torch.no_grad():
        synchronize(device)
        started = time.perf_counter()
        denoise(x, t)  # the first call: capture / compile cost included
        synchronize(device)
        first = (time.perf_counter() - started) * 1000.0
        denoise(x, t)  # second warm-up; median_call_ms runs the third
        return first, median_call_ms(lambda: denoise(x, t), device, repeats)


def powers_of_two(limit: int) -> list[int]:
    return [1 << k for k in range(limit.bit_length()) if 1 << k <= limit]


def markdown(result: dict, repeats: int) -> str:
    lines = [f"# One denoiser call: the cost curve ({result['device']})\n\n",
             f"Command: `{result['command']}`  \ntorch {result['torch']}, TF32 {'on' if result['tf32'] else 'off'}, "
             f"median of {repeats} calls after 3 warm-up calls; first call: capture / compile cost included.\n\n",
             "| network | params | mode | rows | median ms | ms per row | first call ms |\n|---|---|---|---|---|---|---|\n"]
    lines += [f"| {r['network']} | {r['params_M']}M | {r['mode']} | {r['rows']} | {r['median_ms']:.2f} | "
              f"{r['median_ms'] / r['rows']:.3f} | {r['first_call_ms']:.0f} |\n" for r in result["rows"]]
    return "".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda")
    p.add_argument("--rows", default=None, help="comma-separated rows (default: 1, 2, 4, ... up to --max-rows)")
    p.add_argument("--max-rows", type=int, default=4096)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--modes", default=None, help="default: eager,cuda_graph,compile on CUDA, eager on the CPU")
    p.add_argument("--networks", default="upstream_size_unet,shipped_pusht,hybrid_image_unet")
    p.add_argument("--threads", type=int, default=1, help="CPU threads")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    cuda = args.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        print("bench_network_call: --device cuda needs a CUDA device; use --device cpu", file=sys.stderr)
        return 1
    if not cuda:
        torch.set_num_threads(args.threads)
    modes = (args.modes or ("eager,cuda_graph,compile" if cuda else "eager")).split(",")
    rows_list = [int(r) for r in args.rows.split(",")] if args.rows else powers_of_two(args.max_rows)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = cuda
    result = {"device": device_name(args.device), "torch": torch.__version__, "tf32": cuda, "rows": [],
              "command": command_line(__file__, argv)}
    for network in args.networks.split(","):
        policy = POLICIES[network](args.device)
        params = round(sum(q.numel() for q in policy.parameters()) / 1e6, 1)
        for mode in modes:
            policy.accelerate(mode)
            denoise, shape = policy.bound_denoiser(random_obs(policy, 1))
            for rows in rows_list:
                x = torch.randn(rows, *shape[1:], device=args.device)
                t = torch.full((rows,), 50, dtype=torch.long, device=args.device)
                first, median = time_calls(denoise, x, t, args.repeats, args.device)
                row = {"network": network, "params_M": params, "mode": mode, "rows": rows, "first_call_ms": first,
                       "median_ms": median}
                result["rows"].append(row)
                print(row, flush=True)
            policy.accelerate("eager")
        del policy
        if cuda:
            torch.cuda.empty_cache()
        if args.out:  # after every network, so a run cut short keeps what it measured
            write_report(args.out, result, markdown(result, args.repeats))
    return 0


if __name__ == "__main__":
    sys.exit(main())
