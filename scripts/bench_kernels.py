#!/usr/bin/env python
"""The kernels ``quasi_newton`` launches between its network calls on a GPU, counted on the CPU.

    python scripts/bench_kernels.py --policies shipped_pusht,upstream_size_unet --out benchmarks/kernels

On a GPU a chunk's time is its rounds' network calls plus the sampler's own work between them:
eager torch ops on tensors of a few hundred numbers, each a kernel launch that costs microseconds
whatever its size. ``bench_latency.py``'s modelled GPU column has only the calls. This script runs
``quasi_newton`` with the settings it takes on CUDA (``scan`` and ``probes`` on, ``thin_start``
off) on this machine's CPU and counts, through torch's dispatcher (``parapolicy.bench.kernels``),
every op inside the solve on the states' tensors or on masks made from them, views aside, the
network's own calls left out, and every host index sent to the device: on CUDA each is one kernel
or copy. The host's index bookkeeping is not counted. Apart, it counts the host syncs, where the
host waits for every queued kernel (a device value read, a ``.cpu()`` copy, host data sent without
``non_blocking``, a linalg error check); their time is not modelled. It then models the whole
chunk: rounds x a stored curve's cost of one call at the chunk's rows per round
(``--cost-curve``, the H100's by default) plus kernels x ``--launch-us`` (an eager launch costs
5-10 us), beside the graphed sequential DDIM-16 chunk on the same curve. Modelled, not measured:
``scripts/gpu_check.sh`` times the real chunk when a GPU is lent. ``--quick``: one observation,
to check that the script runs.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform

import numpy as np
import torch

from parapolicy.bench.harness import command_line, write_report
from parapolicy.bench.kernels import OpCounter, count_chunk
from parapolicy.bench.networks import INFERENCE, POLICIES, table_observations
from parapolicy.bench.stored_curve import modelled_cost, network_cost
from parapolicy.eval.build import device_name
from parapolicy.samplers import make_sampler

RECORDED = os.path.join(os.path.dirname(__file__), "..", "benchmarks", "samplers.json")  # PushT observations


def kernel_rows(pname: str, args) -> list[dict]:
    base = POLICIES[pname]("cpu")
    cost, curve_network = network_cost(args.cost_curve, args.cost_mode, pname)
    sequential_ddim16 = 16 * cost(1)  # graphed: its steps' own kernels are in the captured graph
    obs = table_observations(base, args.observations, pname, RECORDED)
    rows = []
    for schedule in args.schedules.split(","):
        sampler = make_sampler("quasi_newton", scan=True, probes=True, thin_start=False)
        policy = base.with_inference(*INFERENCE[schedule]).set_sampler(sampler)
        chunks = []
        for i, o in enumerate(obs):  # one robot: the Jacobian store is kept from chunk to chunk, as on a GPU
            counter = OpCounter()
            stats = count_chunk(policy, o, i, counter)
            chunks.append({"rounds": stats.rounds, "rows": stats.rows_per_round, "nfe": stats.nfe,
                           "kernels": sum(counter.kernels.values()), "syncs": sum(counter.syncs.values()),
                           "by_op": counter.kernels, "by_sync": counter.syncs})
        rounds = float(np.mean([c["rounds"] for c in chunks]))
        kernels = float(np.mean([c["kernels"] for c in chunks]))
        network_ms = float(np.mean([c["rounds"] * cost(c["rows"]) for c in chunks]))
        by_op = sum((c["by_op"] for c in chunks), collections.Counter())
        by_sync = sum((c["by_sync"] for c in chunks), collections.Counter())
        syncs = float(np.mean([c["syncs"] for c in chunks]))
        row = {"policy": pname, "schedule": schedule, "chunks": len(chunks), "config": sampler.config(),
               "rounds": rounds, "rows_per_round": float(np.mean([c["rows"] for c in chunks])),
               "nfe": float(np.mean([c["nfe"] for c in chunks])), "kernels_per_chunk": kernels,
               "kernels_per_round": kernels / rounds, "syncs_per_chunk": syncs, "syncs_per_round": syncs / rounds,
               "syncs_by_kind": {kind: n / len(chunks) for kind, n in sorted(by_sync.items())},
               "top_ops": {name: n / len(chunks) for name, n in by_op.most_common(8)},
               "modelled_network_ms": network_ms, "modelled_network": curve_network,
               "modelled_seq_ddim16_ms": sequential_ddim16,
               "modelled_chunk_ms": {str(us): network_ms + kernels * us / 1000.0 for us in args.launch_us}}
        print(json.dumps({k: v for k, v in row.items() if k not in ("top_ops", "syncs_by_kind")}), flush=True)
        rows.append(row)
    return rows


def markdown(result, args) -> str:
    launch = [str(us) for us in args.launch_us]
    _, curve_device, points = modelled_cost(args.cost_curve, args.cost_mode, result["rows"][0]["modelled_network"])
    lines = [f"# quasi_newton's kernels between network calls (GPU settings, counted on {result['device']})\n\n",
             f"`{result['command']}`\n\n",
             "Counted, not timed: every op inside the sampler's solve on the states' tensors or on masks made from "
             "them (views aside, the network's calls left out), and each host index sent to the device (`to_device`), "
             "is a kernel or copy on a GPU; the host's index bookkeeping is not. Host syncs (where the host waits "
             "for every queued kernel: a device value read, a `.cpu()` copy, a blocking send of host data, a "
             "linalg error check) are counted apart and not timed. Settings as on CUDA: `scan`, "
             "`probes` on, `thin_start` off; the Jacobian store is kept from chunk to chunk (one robot). "
             f"**Modelled** chunk: rounds x one call's cost at the chunk's rows per round on the stored curve "
             f"({curve_device}, {args.cost_mode}, rows {points}) + kernels x the launch cost; graphed sequential "
             "DDIM-16 is 16 one-row calls on the same curve.\n\n",
             "| policy | schedule | chunks | rounds | rows/round | NFE | kernels/chunk | kernels/round "
             "| host syncs/round "
             "| modelled network ms | " + " | ".join(f"modelled chunk ms at {us} us" for us in launch)
             + " | graphed seq DDIM-16 ms (modelled) |\n",
             "|---" * (11 + len(launch)) + "|\n"]
    for r in result["rows"]:
        lines.append(f"| {r['policy']} | {r['schedule']} | {r['chunks']} | {r['rounds']:.2f} "
                     f"| {r['rows_per_round']:.1f} "
                     f"| {r['nfe']:.1f} | {r['kernels_per_chunk']:.0f} | {r['kernels_per_round']:.0f} "
                     f"| {r['syncs_per_round']:.1f} "
                     f"| {r['modelled_network_ms']:.1f} | "
                     + " | ".join(f"{r['modelled_chunk_ms'][us]:.1f}" for us in launch)
                     + f" | {r['modelled_seq_ddim16_ms']:.1f} |\n")
    most = [f"{r['policy']} {r['schedule']}: " + ", ".join(f"{k} {v:.0f}" for k, v in r["top_ops"].items())
            for r in result["rows"]]
    lines.append("\nMost launched ops per chunk: " + "; ".join(most) + "\n")
    syncs = [f"{r['policy']} {r['schedule']}: " + ", ".join(f"{k} {v:.1f}" for k, v in r["syncs_by_kind"].items())
             for r in result["rows"]]
    lines.append("\nHost syncs per chunk by kind: " + "; ".join(syncs) + "\n")
    return "".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--policies", default="shipped_pusht")
    p.add_argument("--schedules", default="DDPM-100,DDIM-16")
    p.add_argument("--observations", type=int, default=10)
    p.add_argument("--launch-us", default="5,10", help="modelled cost of one eager kernel launch, in microseconds")
    p.add_argument("--cost-curve", default=os.path.join(os.path.dirname(__file__), "..", "benchmarks",
                                                        "network_call_h100.json"))
    p.add_argument("--cost-mode", default="cuda_graph")
    p.add_argument("--out", default=None, help="writes <out>.md and <out>.json")
    p.add_argument("--quick", action="store_true", help="one observation, to check that the script runs")
    args = p.parse_args(argv)
    args.launch_us = [float(us) if "." in us else int(us) for us in args.launch_us.split(",")]
    if args.quick:
        args.observations = 1
    torch.set_num_threads(1)
    torch.set_grad_enabled(False)
    result = {"device": device_name("cpu"), "torch": torch.__version__, "python": platform.python_version(),
              "command": command_line(__file__, argv), "rows": []}
    for pname in args.policies.split(","):
        result["rows"].extend(kernel_rows(pname, args))
    if args.out:
        write_report(args.out, result, markdown(result, args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
