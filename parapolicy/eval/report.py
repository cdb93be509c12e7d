"""What a finished rollout tells its readers: wandb/sweep metrics, LeRobot's eval_info.json, the
console summary table. All three are built from the results.json dict, so they cannot disagree."""

from __future__ import annotations

import numpy as np

# Added to the latency metric when the paired score difference shows a significant drop, so a
# sweep minimising it never prefers a faster sampler that changed the task score.
SCORE_DROP_PENALTY_MS = 1e6


RUN_METRICS = ("mean_score", "success_rate", "n_episodes", "n_completed", "n_failed", "n_not_finished",
               "n_chunks", "rounds_per_chunk", "rows_per_round", "max_rows_per_round", "nfe_per_chunk", "n_fallbacks")
REALTIME_METRICS = ("delay_ticks", "execution_horizon", "n_switches", "mean_jump", "max_jump", "mean_step")


def _run_metrics(run: dict, prefix: str) -> dict:
    flat = {f"{prefix}{key}": run.get(key) for key in RUN_METRICS}
    for kind in ("chunk", "step"):
        for q in ("p50", "p95", "p99"):
            flat[f"{prefix}latency_{kind}_{q}_ms"] = (run.get(f"latency_{kind}_ms") or {}).get(q)
    return flat


def flat_metrics(results: dict) -> dict:
    """The scalar metrics logged to wandb (run summary) and read by sweeps, by name: the run's
    counts and measurements, the compare side's under ``rollout/b/``, the real-time block's
    under ``rollout/realtime/``, ``sampler=auto``'s prediction and measurement under ``rollout/auto/``. Values that were not measured are left out, never written as 0."""
    flat = _run_metrics(results, "rollout/")
    realtime = results.get("realtime")
    if realtime:
        flat.update({f"rollout/realtime/{key}": realtime.get(key) for key in REALTIME_METRICS})
    auto = results.get("auto")
    if auto:  # sampler=auto: what it predicted for its choice beside what the choice's later calls took
        flat.update({"rollout/auto/predicted_ms": auto["predicted_ms"], "rollout/auto/measured_ms_p50":
                     auto["measured_ms_p50"], "rollout/auto/calibration_s": auto["calibration_s"]})
    paired = results.get("paired")
    if paired:
        flat.update(_run_metrics(paired["b"], "rollout/b/"))
        flat["rollout/score_difference_b_minus_a"] = paired["score_difference_b_minus_a"]["mean"]
        flat["rollout/max_action_deviation"] = paired["max_action_deviation"]
        if not paired.get("interrupted"):
            flat["rollout/latency_at_equal_score_ms"] = latency_at_equal_score(results)
    return {k: v for k, v in flat.items() if v is not None}


def latency_at_equal_score(results: dict) -> float | None:
    """Chunk p50 latency of sampler a, plus a penalty when a scores significantly below b.

    "Significantly": the lower end of the 95% CI of (score_b - score_a) is above zero. A sweep
    that minimises this finds the fastest setting whose score is unchanged. None when there is
    no latency or no episode completed on both sides: nothing to compare.
    """
    latency = (results.get("latency_chunk_ms") or {}).get("p50")
    ci = results["paired"]["score_difference_b_minus_a"]["ci95"]
    if latency is None or ci is None:
        return None
    return float(latency + (SCORE_DROP_PENALTY_MS if ci[0] > 0 else 0.0))


def eval_info(results: dict, episodes, video_paths=()) -> dict:
    """LeRobot's ``eval_info.json`` shape (per_task / per_group / overall), one task per env,
    over the completed episodes, plus a ``latency`` block LeRobot does not have."""
    done = [e for e in episodes if e.status == "completed"]
    sums = [np.nan if e.sum_reward is None else e.sum_reward for e in done]
    maxes = [e.max_reward for e in done]
    succ = [bool(e.success) for e in done]
    videos = list(video_paths)

    def agg(xs, scale=1.0):
        return float(np.nanmean(np.asarray(xs, dtype=float)) * scale) if xs else float("nan")

    group = {"avg_sum_reward": agg(sums), "avg_max_reward": agg(maxes), "pc_success": agg(succ, 100.0),
             "n_episodes": len(done), "video_paths": videos}
    wall = float(results.get("wall_s") or 0.0)
    env = results["env"]
    return {
        "per_task": [{"task_group": env, "task_id": 0,
                      "metrics": {"sum_rewards": sums, "max_rewards": maxes, "successes": succ, "video_paths": videos}}],
        "per_group": {env: group},
        "overall": dict(group, eval_s=wall, eval_ep_s=wall / max(1, len(done))),
        "latency": {
            "sampler": results["sampler"],
            "chunk_ms": results["latency_chunk_ms"],
            "step_ms": results["latency_step_ms"],
            "rounds_per_chunk": results.get("rounds_per_chunk"),
            "rows_per_round": results.get("rows_per_round"),
            "max_rows_per_round": results.get("max_rows_per_round"),
            "nfe_per_chunk": results.get("nfe_per_chunk"),
            "n_fallbacks": results.get("n_fallbacks"),
            "device": results.get("device"),
        },
    }


def _fmt(value, spec):
    return "-" if value is None else format(value, spec)


# (header, row key, format): the summary table's numeric columns, units in the header
COLUMNS = (
    ("episodes", "episodes", "s"),
    ("score", "mean_score", ".3f"),
    ("success", "success_rate", ".0%"),
    ("chunk p50 ms", "p50", ".1f"),
    ("chunk p95 ms", "p95", ".1f"),
    ("rounds/chunk", "rounds_per_chunk", ".1f"),
    ("rows/round", "rows_per_round", ".1f"),
    ("NFE/chunk", "nfe_per_chunk", ".1f"),
)


def run_row(label: str, run: dict, sampler: dict, inference: dict | None) -> dict:
    """One table row from a run's results.json fields (the run itself, or a paired run's ``b``)."""
    latency = run.get("latency_chunk_ms") or {}
    return {"label": label, "episodes": f"{run.get('n_completed', 0)}/{run.get('n_episodes', 0)}",
            "mean_score": run.get("mean_score"), "success_rate": run.get("success_rate"),
            "p50": latency.get("p50"), "p95": latency.get("p95"), "rounds_per_chunk": run.get("rounds_per_chunk"),
            "rows_per_round": run.get("rows_per_round"), "nfe_per_chunk": run.get("nfe_per_chunk"),
            "settings": settings_text(sampler, inference)}


def settings_text(sampler: dict, inference: dict | None = None) -> str:
    """A sampler's settings and the inference schedule, for the table's last column."""
    parts = [f"{k}={v}" for k, v in sampler.items() if k != "name"]
    if inference:
        parts.append(f"{inference['scheduler']}-{inference['num_inference_steps']}")
    return " ".join(parts) or "-"


def format_table(rows: list) -> str:
    """Rows aligned whatever their labels: the label column is as wide as its longest entry and
    the free-length settings come last, so numbers always line up under their headers."""
    width = max(len("sampler"), *(len(r["label"]) for r in rows))
    cells = [[_fmt(r[key], spec) if spec != "s" else r[key] for _, key, spec in COLUMNS] for r in rows]
    widths = [max(len(head), *(len(c[i]) for c in cells)) for i, (head, _, _) in enumerate(COLUMNS)]
    header = "  ".join([f"{'sampler':<{width}}", *(f"{h:>{w}}" for (h, _, _), w in zip(COLUMNS, widths)),
                        "settings"])
    lines = [header, "-" * len(header)]
    for r, c in zip(rows, cells):
        lines.append("  ".join([f"{r['label']:<{width}}", *(f"{v:>{w}}" for v, w in zip(c, widths)), r["settings"]]))
    return "\n".join(lines)


def summary_rows(results: dict, prefix: str = "") -> list:
    """The run's row, and in paired mode the compare side's (labels ``a <name>``, ``b <name>``)."""
    paired = results.get("paired")
    sampler = results["sampler"]
    if not paired:
        return [run_row(prefix + sampler["name"], results, sampler, results.get("inference"))]
    return [run_row(f"{prefix}a {sampler['name']}", results, sampler, results.get("inference")),
            run_row(f"{prefix}b {paired['sampler_b']['name']}", paired["b"], paired["sampler_b"],
                    paired.get("inference_b"))]


def counts_line(results: dict) -> str:
    return (f"{results['env']}: {results['n_completed']} of {results['n_episodes']} episodes completed, "
            f"{results['n_failed']} failed, {results['n_not_finished']} not finished"
            + (" (interrupted)" if results.get("interrupted") else ""))


def detail_lines(results: dict) -> list:
    """What follows the table: fallbacks, auto's choice, the paired difference and deviation, the
    real-time block."""
    lines = []
    if results.get("n_fallbacks"):
        lines.append(f"{results['n_fallbacks']} of {results['n_chunks']} chunks fell back to the sequential loop")
    auto = results.get("auto")
    if auto:
        for i, choice in enumerate([auto, *auto.get("other_batches", [])]):
            lines.append(f"sampler=auto {'also ' if i else ''}chose {choice['chosen']} at batch {choice['batch']}: "
                         f"predicted {choice['predicted_ms']:.1f} ms per chunk, measured "
                         f"{_fmt(choice['measured_ms_p50'], '.1f')} ms (sampling, median of its "
                         f"{choice['measured_chunks']} later chunks); calibration {choice['calibration_s']:.1f} s")
    paired = results.get("paired")
    if paired:
        diff = paired["score_difference_b_minus_a"]
        if diff["mean"] is None:
            lines.append("score difference b - a: - (no episode completed on both sides)")
        else:
            lo, hi = diff["ci95"]
            lines.append(f"score difference b - a: {diff['mean']:+.3f} (95% CI {lo:+.3f} .. {hi:+.3f}, "
                         f"{diff['n']} paired episodes)")
        lines.append(f"max action deviation b vs a: {_fmt(paired['max_action_deviation'], '.3g')} "
                     f"{paired['deviation_unit']}")
    realtime = results.get("realtime")
    if realtime:
        mode = realtime["mode"]
        if realtime.get("guidance"):
            weight = realtime.get("max_guidance_weight")
            mode += f" ({realtime['guidance']} guidance" + (f", max weight {weight:g})" if weight else ")")
        lines.append(f"real time (simulated clock): mode {mode}, delay {realtime['delay_ticks']} ticks, "
                     f"execution horizon {realtime['execution_horizon']} ticks, warm start "
                     f"{'on' if realtime['warm_start'] else 'off'}")
        lines.append(f"jump at chunk switches (L2, env action units): mean {_fmt(realtime['mean_jump'], '.3f')}, "
                     f"max {_fmt(realtime['max_jump'], '.3f')} over {realtime['n_switches']} switches; "
                     f"mean step {_fmt(realtime['mean_step'], '.3f')}")
    for seed, error in list((results.get("errors") or {}).items())[:5]:
        lines.append(f"episode seed {seed} failed: {error}")
    return lines


def summary_table(results: dict) -> str:
    """The console summary of one run, the same in every mode: counts, the table, the details."""
    return "\n".join([counts_line(results), format_table(summary_rows(results)), *detail_lines(results)])


def runs_table(runs: list) -> str:
    """A multirun's or sweep's runs in one table: ``runs`` is [(label, results or None)] in run order.

    A run without results (it failed before writing them) is listed as such, never as zeros.
    """
    done = [(label, r) for label, r in runs if r is not None]
    lines = [f"{len(done)} of {len(runs)} runs wrote results"]
    rows = [row for label, r in done for row in summary_rows(r, prefix=f"{label} ")]
    if rows:
        lines.append(format_table(rows))
    for label, r in runs:
        if r is None:
            lines.append(f"{label}: no results.json (the run failed before writing it)")
            continue
        lines += [f"{label}: {line}" for line in [counts_line(r), *detail_lines(r)]]
    return "\n".join(lines)
