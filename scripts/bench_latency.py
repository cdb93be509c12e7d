#!/usr/bin/env python
"""Per-chunk latency of upstream-style, sequential and parallel sampling, measured in one run.

    python scripts/bench_latency.py --device cuda --repeats 20 --batches 1,28,56 --out benchmarks/latency_h100
    python scripts/bench_latency.py --device cpu --repeats 3 --batches 1 --policies shipped_pusht --out benchmarks/latency_cpu

Policies: the shipped PushT keypoint checkpoint; a randomly initialised upstream-size UNet
lowdim policy (down_dims 256/512/1024, 65.8M parameters, horizon 16); and an upstream-size
hybrid-image policy (ResNet-18 encoder on 2 frames of 96x96, UNet 512/1024/2048, 255M).
For each scheduler (DDPM-100, DDIM-16, DPM-Solver-16) and batch it times whole
``predict_action`` calls (p50/p95 over ``--repeats`` chunks after two warm-up chunks) of:

- ``upstream``: upstream's loop, eager: ``scheduler.step`` per timestep, noise drawn inside;
- ``seq_eager`` / ``seq_graph``: our sequential sampler, eager and with CUDA graphs;
- ``picard`` / ``newton``: Picard (tolerance ``--tolerance``) and Newton-Picard (``--newton-tolerance``)
  with CUDA graphs, window chosen by ``parapolicy.autotune`` on this device (``--window auto``)
  or fixed; their rounds, NFE and max action difference from ``seq_graph`` under the same seeds;

- ``seq_graph_ddim16`` / ``seq_graph_ddim10``: the user's alternative to an exact parallel
  sampler, graphed sequential DDIM with 16 and 10 steps on the same network, timed in the
  same run beside every scheduler's parallel rows (``picard``/``newton`` vs these ratios);
- ``--rounds-per-sync 1,2,4,8``: candidates k for several rounds per graph replay, chosen
  with the window by the autotuner (``--window auto``) or the first one; the k used is a column;

and the speed ratios of each against the others, all from this one run. On a CPU the graph
rows run eagerly (labelled so). ``--quick``: one tiny configuration (shipped PushT policy,
batch 1, one timed chunk, DDPM-100 and DDIM-16), to check the script runs.

``--table samplers`` measures instead every exact sampler against the user's sequential
alternatives on one policy at batch 1, interleaved (each observation runs every mode before
the next): time per chunk, its ratio to sequential DDPM-100 and to sequential on the same
schedule, rounds, rows per round (mean and max), NFE and the max action deviation from
sequential on the same schedule, observations and noise; plus a *modelled* time per chunk on
a device that is not here, from a stored cost curve (``--cost-curve``, default the H100's):
rounds x the curve's cost at each chunk's rows per round. Example:

    python scripts/bench_latency.py --table samplers --policies shipped_pusht --chunks 20 --settle 1 --out benchmarks/latency_cpu
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import sys
import time

# oneDNN keeps each CPU convolution primitive it compiles, per input shape, in a cache of 1024 by
# default. The samplers table calls the network at a hundred-odd row counts across its modes, so
# each mode evicted the next one's primitives and paid to rebuild them: the same sampler measured
# about 10% slower right after newton_prior than as auto's choice (benchmarks/README.md). A user's
# process runs one sampler; this one keeps every mode's primitives. Set before torch loads oneDNN.
os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "8192")

import numpy as np
import torch

from parapolicy.autotune import autotune_window
from parapolicy.bench.harness import command_line, time_chunks, write_report
from parapolicy.bench.networks import INFERENCE, POLICIES, SCHEDULERS, random_obs, table_observations, with_scheduler
from parapolicy.bench.stored_curve import modelled_cost, network_cost
from parapolicy.eval.build import device_name
from parapolicy.samplers import SampleResult, SamplerBase, SampleStats, make_sampler
from parapolicy.samplers.inpainting import impose


class UpstreamStepLoop(SamplerBase):
    """Upstream's ``conditional_sample``: eager network call and ``scheduler.step`` per timestep."""

    name = "upstream"

    def __init__(self, scheduler):
        self.scheduler = copy.deepcopy(scheduler)

    def sample(self, problem):
        denoise_fn, x, cond_data, cond_mask = problem.denoise, problem.x_T, problem.cond_data, problem.cond_mask
        sched = self.scheduler
        sched.set_timesteps(len(sched.timesteps))  # resets multistep history, as upstream's per-call set_timesteps
        for t in sched.timesteps:
            x = impose(x, cond_data, cond_mask)
            eps = denoise_fn(x, t.to(x.device).long().expand(x.shape[0]))
            x = sched.step(eps, t, x).prev_sample
        n = len(sched.timesteps)
        return SampleResult(impose(x, cond_data, cond_mask), SampleStats(self.name, rounds=n, nfe=n))

    def config(self) -> dict:
        return {"name": self.name}


def choose_window(policy, obs, name, tolerance, window_arg, ks=(1,)):
    """(window, rounds_per_sync): fixed, or the autotuner's best pair for ``name`` on this device."""
    steps = len(policy.scheduler.timesteps)
    if window_arg == "all":
        return steps, ks[0]
    if window_arg != "auto":
        return min(int(window_arg), steps), ks[0]
    table = autotune_window(policy, obs, tolerance=tolerance, apply=False, name=name, rounds_per_sync=ks)["table"]
    best = min((row for row in table if row["name"] == name), key=lambda row: row["expected_ms"])
    return best["window"], best["rounds_per_sync"]


def alternative_ddim(policy, obs, args, accel, steps: int) -> list:
    """Graphed sequential DDIM-``steps`` on the same network: the user's fewer-steps alternative."""
    ddim = with_scheduler(policy, "DDIM-16", steps)
    ddim.accelerate(accel).set_sampler("sequential")
    times, _ = time_chunks(ddim, obs, args.repeats)
    ddim.accelerate("eager")
    return times


def bench_config(policy, obs, args, accel):
    """All modes on one (policy, scheduler, batch): a dict of measured numbers."""
    row = {}
    policy.accelerate("eager").set_sampler(UpstreamStepLoop(policy.scheduler))
    row["upstream"], _ = time_chunks(policy, obs, args.repeats)
    policy.set_sampler("sequential")
    row["seq_eager"], _ = time_chunks(policy, obs, args.repeats)
    policy.accelerate(accel)
    row["seq_graph"], reference = time_chunks(policy, obs, args.repeats)
    row["seq_graphed_chain"] = all(o.stats.sampling.captured for o in reference)
    row["seq_graph_ddim16"] = alternative_ddim(policy, obs, args, accel, 16)
    row["seq_graph_ddim10"] = alternative_ddim(policy, obs, args, accel, 10)
    ks = tuple(int(k) for k in args.rounds_per_sync.split(","))
    for label, name, tol in (("picard", "picard", args.tolerance), ("newton", "newton_picard", args.newton_tolerance)):
        window, k = choose_window(policy, obs, name, tol, args.window, ks)
        policy.set_sampler(name, window=window, max_rows=window, tolerance=tol, rounds_per_sync=k)
        row[label], outs = time_chunks(policy, obs, args.repeats)
        row[f"{label}_window"], row[f"{label}_rounds_per_sync"] = window, k
        row[f"{label}_rounds"] = float(np.mean([o.stats.sampling.rounds for o in outs]))
        row[f"{label}_nfe"] = float(np.mean([o.stats.sampling.nfe for o in outs]))
        row[f"{label}_graphed_rounds"] = all(o.stats.sampling.captured for o in outs)
        row[f"{label}_max_action_diff"] = max(float((a["action"] - b["action"]).abs().max())
                                             for a, b in zip(reference, outs))
    policy.accelerate("eager")
    for mode in ("upstream", "seq_eager", "seq_graph", "seq_graph_ddim16", "seq_graph_ddim10", "picard", "newton"):
        times = row.pop(mode)
        row[f"{mode}_p50_ms"], row[f"{mode}_p95_ms"] = float(np.percentile(times, 50)), float(np.percentile(times, 95))
    for fast in ("picard", "newton", "seq_graph"):
        for slow in ("seq_graph", "seq_eager", "upstream", "seq_graph_ddim16", "seq_graph_ddim10"):
            if fast != slow:
                row[f"{fast}_speedup_vs_{slow}"] = row[f"{slow}_p50_ms"] / row[f"{fast}_p50_ms"]
    return row


MD_COLUMNS = [  # (header, format)
    ("policy", "{policy}"), ("params", "{params_M}M"), ("scheduler", "{scheduler}"), ("batch", "{batch}"),
    ("upstream eager p50/p95", "{upstream_p50_ms:.1f} / {upstream_p95_ms:.1f}"),
    ("seq eager p50", "{seq_eager_p50_ms:.1f}"), ("seq graph p50/p95", "{seq_graph_p50_ms:.1f} / {seq_graph_p95_ms:.1f}"),
    ("Picard p50/p95", "{picard_p50_ms:.1f} / {picard_p95_ms:.1f}"),
    ("seq graph DDIM-16 / DDIM-10 p50", "{seq_graph_ddim16_p50_ms:.1f} / {seq_graph_ddim10_p50_ms:.1f}"),
    ("Picard window / k / rounds / NFE",
     "{picard_window} / {picard_rounds_per_sync} / {picard_rounds:.1f} / {picard_nfe:.0f}"),
    ("Picard vs seq graph / eager / upstream",
     "{picard_speedup_vs_seq_graph:.2f}x / {picard_speedup_vs_seq_eager:.2f}x / {picard_speedup_vs_upstream:.2f}x"),
    ("Newton p50/p95", "{newton_p50_ms:.1f} / {newton_p95_ms:.1f}"),
    ("Newton window / k / rounds / NFE",
     "{newton_window} / {newton_rounds_per_sync} / {newton_rounds:.1f} / {newton_nfe:.0f}"),
    ("Newton vs seq graph / upstream", "{newton_speedup_vs_seq_graph:.2f}x / {newton_speedup_vs_upstream:.2f}x"),
    ("Picard / Newton vs seq graph DDIM-16",
     "{picard_speedup_vs_seq_graph_ddim16:.2f}x / {newton_speedup_vs_seq_graph_ddim16:.2f}x"),
    ("Picard / Newton vs seq graph DDIM-10",
     "{picard_speedup_vs_seq_graph_ddim10:.2f}x / {newton_speedup_vs_seq_graph_ddim10:.2f}x"),
    ("max action diff Picard / Newton", "{picard_max_action_diff:.1e} / {newton_max_action_diff:.1e}"),
]


def markdown(result, args) -> str:
    lines = [
        f"# Per-chunk latency ({result['device']})\n\n",
        f"Command: `{result['command']}`  \n",
        f"torch {result['torch']}, TF32 matmuls and convs {result['tf32']}, acceleration of the graph rows: "
        f"`{result['acceleration']}`; Picard tolerance {args.tolerance}, Newton-Picard tolerance "
        f"{args.newton_tolerance}, window `{args.window}`; {args.repeats} timed chunks after two warm-up chunks; "
        "times in ms per chunk (whole `predict_action`).\n\n",
        "| " + " | ".join(h for h, _ in MD_COLUMNS) + " |\n|" + "---|" * len(MD_COLUMNS) + "\n",
    ]
    lines += ["| " + " | ".join(f.format(**r) for _, f in MD_COLUMNS) + " |\n" for r in result["rows"]]
    return "".join(lines)


SAMPLER_MODES = (  # (label, schedule, sampler, settings): the exact samplers and the sequential alternatives
    ("sequential", "DDPM-100", "sequential", {}),
    ("picard", "DDPM-100", "picard", {}),
    ("newton_picard", "DDPM-100", "newton_picard", {}),
    ("newton_prior", "DDPM-100", "newton_prior", {}),
    ("jacobian_newton", "DDPM-100", "jacobian_newton", {}),
    ("quasi_newton", "DDPM-100", "quasi_newton", {"probes": False}),
    ("quasi_newton_probes", "DDPM-100", "quasi_newton", {"probes": True}),
    ("auto", "DDPM-100", "auto", {}),
    ("sequential", "DDIM-16", "sequential", {}),
    ("newton_prior", "DDIM-16", "newton_prior", {}),
    ("quasi_newton", "DDIM-16", "quasi_newton", {"probes": False, "max_rows": 16}),
    ("quasi_newton_probes", "DDIM-16", "quasi_newton", {"probes": True, "max_rows": 16}),
    ("auto", "DDIM-16", "auto", {}),
    ("sequential", "DDIM-10", "sequential", {}),
    ("quasi_newton", "DDIM-10", "quasi_newton", {"probes": False, "max_rows": 10}),
)
RECORDED = os.path.join(os.path.dirname(__file__), "..", "benchmarks", "samplers.json")  # PushT observations


def sampler_table(base, pname: str, args) -> list[dict]:
    """Every mode of SAMPLER_MODES on ``args.chunks`` observations, interleaved; one row per mode."""
    cost, curve_network = network_cost(args.cost_curve, args.cost_mode, pname)
    base.accelerate(args.acceleration or ("cuda_graph" if args.device.startswith("cuda") else "eager"))
    policies = {name: base.with_inference(*INFERENCE[name]) for name in INFERENCE}
    samplers = {(label, sched): make_sampler(name, **settings)
                for label, sched, name, settings in SAMPLER_MODES}
    observations = table_observations(base, args.chunks, pname, RECORDED)
    runs = {key: [] for key in samplers}
    for warm in (True, False):  # one untimed pass (first calls, auto's calibration), then the timed one
        for i, obs in enumerate(observations[:1] if warm else observations):
            reference = {}
            for (label, sched), sampler in samplers.items():
                policy = policies[sched].set_sampler(sampler)
                for back in range(args.settle if not warm else 0, 0, -1):  # the chunks before, as a controller's
                    k = (i - back) % len(observations)
                    policy.predict_action(observations[k], generator=torch.Generator().manual_seed(k))
                started = time.perf_counter()
                out = policy.predict_action(obs, generator=torch.Generator().manual_seed(i))
                ms = (time.perf_counter() - started) * 1000.0
                if label == "sequential":
                    reference[sched] = out["action"]
                if not warm:
                    stats = out.stats.sampling
                    runs[(label, sched)].append({"ms": ms, "rounds": stats.rounds, "nfe": stats.nfe,
                                                 "rows": stats.rows_per_round, "max_rows": stats.max_rows_per_round,
                                                 "dev": float((out["action"] - reference[sched]).abs().max()),
                                                 "chosen": stats.settings.get("chosen")})
    rows = []
    for (label, sched), chunks in runs.items():
        rows.append({"policy": pname, "label": label, "schedule": sched, "chunks": len(chunks),
                     "config": samplers[(label, sched)].config(),
                     "p50_ms": float(np.median([c["ms"] for c in chunks])),
                     "rounds": float(np.mean([c["rounds"] for c in chunks])), "rounds_max": max(c["rounds"] for c in chunks),
                     "rows_per_round": float(np.mean([c["rows"] for c in chunks])),
                     "max_rows_per_round": max(c["max_rows"] for c in chunks),
                     "nfe": float(np.mean([c["nfe"] for c in chunks])), "max_dev": max(c["dev"] for c in chunks),
                     "modelled_ms": float(np.mean([c["rounds"] * cost(c["rows"]) for c in chunks])),
                     "modelled_network": curve_network,
                     "chosen": sorted({c["chosen"] for c in chunks if c["chosen"]}),
                     "calibration": samplers[(label, sched)].calibration if label == "auto" else None})
    seq = {r["schedule"]: r for r in rows if r["label"] == "sequential"}
    for r in rows:
        r["vs_seq_ddpm100"] = seq["DDPM-100"]["p50_ms"] / r["p50_ms"]
        r["vs_seq_same"] = seq[r["schedule"]]["p50_ms"] / r["p50_ms"]
        r["modelled_vs_seq_ddim16"] = seq["DDIM-16"]["modelled_ms"] / r["modelled_ms"]
    return rows


def sampler_markdown(result, args) -> str:
    _, curve_device, points = modelled_cost(args.cost_curve, args.cost_mode, result["rows"][0]["modelled_network"])
    lines = [f"# Time per chunk of every exact sampler and the sequential alternatives ({result['device']})\n\n",
             f"Command: `{result['command']}`  \n",
             f"torch {result['torch']}; batch 1; {args.chunks} observations, each running every mode before the next "
             "(interleaved), after one untimed pass (first calls, `auto`'s calibration); before its timed call on "
             f"an observation each mode is called untimed on the {args.settle} observation(s) before it (`--settle`, "
             "as a controller's previous chunks); p50 of whole `predict_action` "
             f"calls; oneDNN primitive cache {os.environ.get('ONEDNN_PRIMITIVE_CACHE_CAPACITY', 'default')} (so that "
             "modes do not evict each other's compiled convolutions). Ratios are time ratios from this one run (> 1: "
             "faster than the named sequential sampler). "
             "Deviation: max |action - sequential action| on the same schedule, observations and noise (action units: "
             "PushT pixels). Modelled: rounds x the cost of one call at that round's rows per sample on "
             f"{curve_device} ({os.path.basename(args.cost_curve)}, {args.cost_mode}, measured at rows {points}, linear "
             "between and beyond) for the network named in the column (the row's own where the curve has it, else "
             "the 65.8M UNet); a model of the network calls from a stored curve (the sampler's own work between calls "
             "is left out), not a measurement of these rows.\n\n",
             "| policy | schedule | sampler | ms/chunk | vs seq DDPM-100 | vs seq same schedule | rounds (max) | "
             "rows/round (max) | NFE | max dev | modelled ms (network) | modelled vs seq DDIM-16 |\n",
             "|---|---|---|---|---|---|---|---|---|---|---|---|\n"]
    for r in result["rows"]:
        chosen = f" -> {'/'.join(r['chosen'])}" if r["chosen"] else ""
        lines.append(f"| {r['policy']} | {r['schedule']} | {r['label']}{chosen} | {r['p50_ms']:.1f} | "
                     f"{r['vs_seq_ddpm100']:.2f}x | {r['vs_seq_same']:.2f}x | {r['rounds']:.2f} ({r['rounds_max']}) | "
                     f"{r['rows_per_round']:.1f} ({r['max_rows_per_round']}) | {r['nfe']:.0f} | {r['max_dev']:.3g} | "
                     f"{r['modelled_ms']:.1f} ({r['modelled_network']}) | {r['modelled_vs_seq_ddim16']:.2f}x |\n")
    return "".join(lines)


def main_sampler_table(args, argv) -> int:
    if not args.device.startswith("cuda"):
        torch.set_num_threads(args.threads)
    else:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = not args.no_tf32
    result = {"device": device_name(args.device), "torch": torch.__version__, "python": platform.python_version(),
              "rows": [], "command": command_line(__file__, argv)}
    for pname in args.policies.split(","):
        rows = sampler_table(POLICIES[pname](args.device), pname, args)
        result["rows"].extend(rows)
        for r in rows:
            print(json.dumps({k: v for k, v in r.items() if k != "calibration"}), flush=True)
        if args.out:
            write_report(args.out, result, sampler_markdown(result, args))
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--batches", default="1,28")
    p.add_argument("--schedulers", default=",".join(SCHEDULERS))
    p.add_argument("--tolerance", type=float, default=0.1)
    p.add_argument("--newton-tolerance", type=float, default=0.01)
    p.add_argument("--window", default="auto", help="auto (autotune on this device), all, or a number")
    p.add_argument("--policies", default=",".join(POLICIES))
    p.add_argument("--acceleration", default=None, help="cuda_graph (default on CUDA) or compile")
    p.add_argument("--no-tf32", action="store_true", help="full fp32 matmuls/convs (default on CUDA: TF32)")
    p.add_argument("--out", default=None, help="writes <out>.md and <out>.json after every row")
    p.add_argument("--fresh", action="store_true", help="recompute rows already in <out>.json")
    p.add_argument("--rounds-per-sync", default="1", help="candidate rounds per graph replay, e.g. 1,2,4,8")
    p.add_argument("--quick", action="store_true", help="one tiny configuration, to check the script runs")
    p.add_argument("--table", choices=["configs", "samplers"], default="configs",
                   help="configs: the graphed GPU table; samplers: every exact sampler vs the sequential alternatives")
    p.add_argument("--chunks", type=int, default=10, help="--table samplers: observations per mode")
    p.add_argument("--settle", type=int, default=0,
                   help="--table samplers: untimed calls of each mode before its timed one, on the observations "
                        "before it (a user's controller calls one sampler chunk after chunk; the first call after "
                        "another mode runs with that mode's caches)")
    p.add_argument("--threads", type=int, default=1, help="--table samplers: torch threads")
    p.add_argument("--cost-curve", default=os.path.join(os.path.dirname(__file__), "..", "benchmarks",
                                                        "network_call_h100.json"),
                   help="--table samplers: a bench_network_call result for the modelled column")
    p.add_argument("--cost-mode", default="cuda_graph", help="--table samplers: the curve's acceleration mode")
    args = p.parse_args(argv)
    if args.table == "samplers":
        if args.quick:
            args.chunks = 1
        return main_sampler_table(args, argv)
    if args.quick:
        args.policies, args.batches, args.schedulers, args.repeats = "shipped_pusht", "1", "DDPM-100,DDIM-16", 1
    cuda = args.device.startswith("cuda")
    accel = args.acceleration or ("cuda_graph" if cuda else "eager")
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = cuda and not args.no_tf32
    result = {"device": device_name(args.device), "torch": torch.__version__, "python": platform.python_version(),
              "tf32": bool(torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32), "acceleration": accel, "rows": [],
              "command": command_line(__file__, argv)}
    done = {}
    if args.out and os.path.exists(args.out + ".json") and not args.fresh:
        old = json.load(open(args.out + ".json"))
        if old.get("device") == result["device"]:  # rows are only comparable on the same device
            done = {(r["policy"], r["scheduler"], r["batch"]): r for r in old["rows"]}
    batches = [int(b) for b in args.batches.split(",")]
    for pname in args.policies.split(","):
        todo = [(s, b) for s in args.schedulers.split(",") for b in batches if (pname, s, b) not in done]
        if not todo:
            continue
        base = POLICIES[pname](args.device)
        params = sum(q.numel() for q in base.parameters())
        for sname, batch in todo:
            policy = with_scheduler(base, sname)
            row = {"policy": pname, "params_M": round(params / 1e6, 1), "scheduler": sname, "batch": batch,
                   **bench_config(policy, random_obs(policy, batch), args, accel)}
            done[(pname, sname, batch)] = row
            print(json.dumps(row), flush=True)
            if args.out:  # after every row, so a run cut short keeps what it measured
                result["rows"] = list(done.values())
                write_report(args.out, result, markdown(result, args))
        del base, policy
        if cuda:
            torch.cuda.empty_cache()
    result["rows"] = list(done.values())
    if args.out:
        write_report(args.out, result, markdown(result, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
