"""What a finished rollout tells its readers: wandb/sweep metrics, LeRobot's eval_info.json, the
console summary table. All three are built from the results.json dict, so they cannot disagree."""

from __future__ import annotations

import numpy as np

# Added to the latency metric when the paired score difference shows a significant drop, so a
# sweep minimising it never prefers a faster sampler that changed the task score.
SCORE_DROP_PENALTY_MS = 1e6


def flat_metrics(results: dict) -> dict:
    """The scalar metrics logged to wandb (run summary) and read by sweeps, by name."""
    flat = {
        "rollout/mean_score": results.get("mean_score"),
        "rollout/success_rate": results.get("success_rate"),
        "rollout/n_completed": results.get("n_completed"),
        "rollout/n_failed": results.get("n_failed"),
        "rollout/nfe_per_chunk": results.get("nfe_per_chunk"),
        "rollout/rounds_per_chunk": results.get("rounds_per_chunk"),
        "rollout/n_fallbacks": results.get("n_fallbacks"),
    }
    for kind in ("chunk", "step"):
        for q in ("p50", "p95", "p99"):
            flat[f"rollout/latency_{kind}_{q}_ms"] = (results.get(f"latency_{kind}_ms") or {}).get(q)
    paired = results.get("paired")
    if paired:
        diff = paired["score_difference_b_minus_a"]
        flat["rollout/score_difference_b_minus_a"] = diff["mean"]
        flat["rollout/max_action_deviation"] = paired["max_action_deviation"]
        if not paired.get("interrupted"):
            flat["rollout/latency_at_equal_score_ms"] = latency_at_equal_score(results)
    return {k: v for k, v in flat.items() if v is not None}


def latency_at_equal_score(results: dict) -> float:
    """Chunk p50 latency of sampler a, plus a penalty when a scores significantly below b.

    "Significantly": the lower end of the 95% CI of (score_b - score_a) is above zero. A sweep
    that minimises this finds the fastest setting whose score is unchanged.
    """
    latency = results["latency_chunk_ms"]["p50"]
    drop = results["paired"]["score_difference_b_minus_a"]["ci95"][0] > 0
    return float(latency + (SCORE_DROP_PENALTY_MS if drop else 0.0))


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
            "nfe_per_chunk": results.get("nfe_per_chunk"),
            "n_fallbacks": results.get("n_fallbacks"),
            "device": results.get("device"),
        },
    }


def _fmt(value, spec):
    return "-" if value is None else format(value, spec)


def summary_table(results: dict) -> str:
    """The console summary: one row per sampler, then the paired difference and deviation."""
    header = f"{'sampler':<22} {'score':>7} {'success':>8} {'p50 ms':>9} {'p95 ms':>9} {'rounds':>7} {'NFE':>7}"
    rows = [header, "-" * len(header)]

    def row(label, score, success, latency, rounds, nfe):
        rows.append(f"{label:<22} {_fmt(score, '.3f'):>7} {_fmt(success, '.0%'):>8} "
                    f"{_fmt(latency.get('p50'), '.1f'):>9} {_fmt(latency.get('p95'), '.1f'):>9} "
                    f"{_fmt(rounds, '.1f'):>7} {_fmt(nfe, '.1f'):>7}")

    row(_label(results["sampler"]), results.get("mean_score"), results.get("success_rate"),
        results.get("latency_chunk_ms") or {}, results.get("rounds_per_chunk"), results.get("nfe_per_chunk"))
    paired = results.get("paired")
    if paired:
        row(_label(paired["sampler_b"]), paired.get("mean_score_b"), None, paired.get("latency_chunk_ms_b") or {},
            paired.get("rounds_per_chunk_b"), paired.get("nfe_per_chunk_b"))
    lines = [f"{results['env']}: {results['n_completed']} of {results['n_episodes']} episodes completed, "
             f"{results['n_failed']} failed, {results['n_not_finished']} not finished"
             + (" (interrupted)" if results.get("interrupted") else ""), *rows]
    if results.get("n_fallbacks"):
        lines.append(f"{results['n_fallbacks']} of {results['n_chunks']} chunks fell back to the sequential loop")
    if paired:
        diff = paired["score_difference_b_minus_a"]
        lo, hi = diff["ci95"]
        lines.append(f"score difference ({_label(paired['sampler_b'])}) - ({_label(paired['sampler_a'])}): "
                     f"{diff['mean']:+.3f} (95% CI {lo:+.3f} .. {hi:+.3f}, {diff['n']} paired episodes); "
                     f"max action deviation {_fmt(paired['max_action_deviation'], '.3g')}")
    for seed, error in list((results.get("errors") or {}).items())[:5]:
        lines.append(f"episode seed {seed} failed: {error}")
    return "\n".join(lines)


def _label(sampler: dict) -> str:
    settings = ",".join(f"{k}={v}" for k, v in sampler.items() if k != "name")
    return sampler["name"] + (f"({settings})" if settings else "")
