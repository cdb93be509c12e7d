"""One rollout from a composed cfg: check, load, run, then write results.json and eval_info.json.

Everything that can be refused (settings, checkpoint, sampler, env id) is checked before
anything is written, so a bad input leaves no output behind. results.json is built here and
nowhere else: the run header, ``RunResult.to_json()`` (every mode), and the paired or
real-time block.
"""

from __future__ import annotations

import logging
import os
import time

from parapolicy.eval.build import (
    device_name,
    ensure_envs_importable,
    logged_config,
    make_env_factory,
    make_step_env_factory,
    resolve_checkpoint,
    sampler_settings,
    versions,
)
from parapolicy.eval.compare import COMPARE_SCHEDULE_KEYS, compare_policy
from parapolicy.eval.env_choice import AUTO, fill_episode_length, resolve_env
from parapolicy.eval.episodes import VECTOR_MODES, RunResult, keyed_obs, run_episodes
from parapolicy.eval.report import eval_info, flat_metrics
from parapolicy.metrics import write_json_atomic

log = logging.getLogger("parapolicy.rollout")


def check_settings(cfg) -> None:
    """Refuse out-of-range rollout settings with one RolloutConfigError."""
    from parapolicy.errors import RolloutConfigError

    def integer(name, value, low, allow_none=False):
        if value is None and allow_none:
            return
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise RolloutConfigError(f"{name} must be an integer >= {low}, got {value!r}")

    integer("n_episodes", cfg.n_episodes, 1)
    integer("n_envs", cfg.n_envs, 1, allow_none=True)
    integer("video_episodes", cfg.video_episodes, 0)
    integer("seed", cfg.seed, 0)
    integer("noise_seed", cfg.noise_seed, 0)
    if cfg.vector not in VECTOR_MODES:
        raise RolloutConfigError(f"vector must be one of {', '.join(VECTOR_MODES)}, got {cfg.vector!r}")
    if cfg.get("controller") and cfg.controller.mode and cfg.compare_sampler:
        raise RolloutConfigError("controller.mode and compare_sampler cannot be combined: a paired run compares "
                                 "samplers in the batched runner; drop one of them")


def _check_env(env_cfg) -> None:
    """The env id must be registered (``module:EnvId`` imports ``module`` first, as gym.make does)."""
    import importlib

    import gymnasium as gym

    from parapolicy.errors import RolloutConfigError

    ensure_envs_importable()
    env_id = str(env_cfg.id)
    if ":" in env_id:
        module, env_id = env_id.split(":", 1)
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise RolloutConfigError(f"env module {module!r} of env id {env_cfg.id!r} does not import: {exc}") from None
    if env_id not in gym.registry and "/" in env_id:  # gymnasium's convention: the namespace is the module
        try:
            importlib.import_module(env_id.split("/", 1)[0])
        except ImportError:
            pass
    if env_id not in gym.registry:
        raise RolloutConfigError(f"env id {env_cfg.id!r} is not a registered gymnasium env "
                                 f"(expected e.g. parapolicy/PushT-keypoints-v0)")


def prepare(cfg):
    """Load and configure the policy (and the paired run's compare side), pick the env for
    ``env=auto`` and check it; raises before anything is written. Returns
    ``(checkpoint, policy, compare or None)``."""
    import parapolicy

    check_settings(cfg)
    auto = str(cfg.env.get("id")) == AUTO
    if not auto:
        _check_env(cfg.env)
    ckpt = resolve_checkpoint(cfg)
    policy = parapolicy.load_policy(ckpt, device=cfg.policy.device, use_ema=cfg.policy.use_ema,
                                    trust_checkpoint=bool(cfg.policy.trust_checkpoint))
    if cfg.policy.get("scheduler") is not None or cfg.policy.get("num_inference_steps") is not None:
        policy = policy.with_inference(cfg.policy.get("scheduler"), cfg.policy.get("num_inference_steps"))
    if auto:
        resolve_env(cfg, policy.spec)
        _check_env(cfg.env)
    fill_episode_length(cfg)
    policy.accelerate(cfg.policy.get("acceleration", "eager"))
    name, settings = sampler_settings(cfg.sampler)
    policy.set_sampler(name, **settings)
    compare = None
    if cfg.compare_sampler:  # a bad compare side is refused now, before any episode runs
        other, other_settings = sampler_settings(cfg.compare_sampler)
        schedule = {k: other_settings.pop(k, None) for k in COMPARE_SCHEDULE_KEYS}
        compare = compare_policy(policy, other, other_settings, **schedule)
    log.info("loaded %s (%s, horizon %d, %d obs steps, %d action steps); sampler %s %s", ckpt,
             policy.spec.family, policy.spec.horizon, policy.spec.n_obs_steps, policy.spec.n_action_steps, name,
             settings)
    return ckpt, policy, compare


def run_rollout(cfg, output_dir: str, progress=None, obs_adapter=None) -> dict:
    """Everything the CLI does, callable from Python with a composed cfg; returns results.json's dict.

    Every mode (batched, paired, simulated clock) fills the same fields from its episodes and
    chunk log; ``progress`` (``eval.progress.Progress``) shows a bar for every pass.
    """
    from parapolicy.logging import RunLogger

    started = time.time()
    ckpt, policy, compare = prepare(cfg)
    realtime_mode = bool(cfg.get("controller") and cfg.controller.mode)
    if realtime_mode:
        from parapolicy.eval.realtime import realtime_settings

        settings = realtime_settings(cfg.controller)  # refused here, before anything is written
    make_env = make_env_factory(cfg.env, policy.spec)
    seeds = [int(cfg.seed) + i for i in range(int(cfg.n_episodes))]
    adapter = obs_adapter or keyed_obs(cfg.env.obs_key)
    episode_kwargs = dict(noise_seed=int(cfg.noise_seed), batch_size=cfg.n_envs, vector=cfg.vector,
                          obs_adapter=adapter)
    log.info("%d episodes (seeds %d..%d) on %s, batches of %s, vector=%s", len(seeds), seeds[0], seeds[-1], cfg.env.id,
             cfg.n_envs or len(seeds), cfg.vector)
    logger = RunLogger(mode=cfg.logger.mode, project=cfg.logger.project, directory=output_dir,
                       config=logged_config(cfg), tags=[policy.sampler.name, cfg.env.id])
    results = {
        "checkpoint": policy.spec.source.get("path", os.path.abspath(ckpt)),
        "env": cfg.env.id,
        "sampler": policy.sampler.config(),  # as it ran: every setting, defaults included
        "inference": policy.inference,  # scheduler kind and steps a chunk ran
        "device": device_name(cfg.policy.device),
        "versions": versions(),
        "seeds": seeds,
        "noise_seed": int(cfg.noise_seed),
        "policy": {"family": policy.spec.family, "horizon": policy.spec.horizon,
                   "n_obs_steps": policy.spec.n_obs_steps, "n_action_steps": policy.spec.n_action_steps,
                   "num_inference_steps": len(policy.scheduler.timesteps)},
    }
    run, paired, videos, realtime = RunResult(episodes=[]), None, [], None
    try:
        if realtime_mode:  # simulated-clock real-time control
            from parapolicy.eval.realtime import run_realtime_episodes

            desc = f"{settings.mode} d={settings.delay_ticks if settings.mode != 'sync' else 0} {policy.sampler.name}"
            bar = progress.episodes(desc, len(seeds)) if progress else None
            result = run_realtime_episodes(policy, make_step_env_factory(cfg.env, policy.spec), seeds, settings,
                                           noise_seed=int(cfg.noise_seed), batch_size=cfg.n_envs,
                                           obs_key=cfg.env.obs_key, max_steps=int(cfg.env.max_episode_steps),
                                           on_chunk=bar)
            run, realtime = result.run, result.summary()
        elif compare is not None:
            from parapolicy.eval.compare import run_paired

            run, paired = run_paired(policy, compare, make_env, seeds, progress=progress, **episode_kwargs)
            run.interrupted = paired["interrupted"]
        else:
            bar = progress.episodes(policy.sampler.name, len(seeds)) if progress else None
            run = run_episodes(policy, make_env, seeds, on_chunk=bar, **episode_kwargs)
        if int(cfg.video_episodes) > 0 and not run.interrupted:
            from parapolicy.eval.video import record_videos

            filmed = seeds[: int(cfg.video_episodes)]
            bar = progress.episodes("video", len(filmed)) if progress else None
            videos = record_videos(policy, cfg.env, filmed, output_dir, noise_seed=int(cfg.noise_seed),
                                   obs_adapter=adapter, on_chunk=bar)
            for path in videos:
                logger.video(f"rollout/video_{os.path.basename(path)[:-4]}", path)
    except KeyboardInterrupt:  # keep what finished; the run says it was interrupted
        run.interrupted = True
    except BaseException:
        logger.finish()
        raise
    finally:
        if progress:
            progress.close()
    results.update(run.to_json())
    calibrations = getattr(policy.sampler, "calibrations", None)
    if calibrations:
        results["auto"] = auto_block(calibrations)
    if realtime is not None:
        results["realtime"] = realtime
    if paired is not None:
        results["paired"] = paired
    results["wall_s"] = time.time() - started
    results["metrics"] = flat_metrics(results)  # the names logged to wandb, read back by local sweeps
    write_json_atomic(os.path.join(output_dir, "results.json"), results)
    write_json_atomic(os.path.join(output_dir, "eval_info.json"), eval_info(results, run.episodes, videos))
    _log_to_wandb(logger, results, run)
    logger.finish()
    return results


def auto_block(calibrations: list) -> dict:
    """``sampler=auto``'s choice beside what it then measured: for the batch shape that ran the most
    chunks, the cost curve, each candidate's prediction and the choice's predicted time beside the
    median of its later calls (``measured_ms_p50``, calibration apart); a run whose batches had
    other shapes too (a last, smaller batch) lists those calibrations under ``other_batches``."""
    main = max(calibrations, key=lambda c: c["measured_chunks"])
    block = {**main, "predicted_ms": main["candidates"][main["chosen"]]["predicted_ms"]}
    others = [c for c in calibrations if c is not main]
    if others:
        block["other_batches"] = [{"batch": c["batch"], "chosen": c["chosen"],
                                   "predicted_ms": c["candidates"][c["chosen"]]["predicted_ms"],
                                   "measured_ms_p50": c["measured_ms_p50"], "measured_chunks": c["measured_chunks"],
                                   "calibration_s": c["calibration_s"]} for c in others]
    return block


def _log_to_wandb(logger, results: dict, run: RunResult) -> None:
    flat = results["metrics"]
    logger.log(flat)
    logger.summary(flat)
    if run.chunks.latency_ms:
        logger.histogram("rollout/latency_chunk_ms", run.chunks.latency_ms)
    rewards = results.get("rewards_by_seed", {})
    if rewards:
        logger.table("rollout/per_seed", ["seed", "max_reward"], [[int(k), v] for k, v in rewards.items()])
