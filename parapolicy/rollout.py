"""``parapolicy-rollout``: roll a checkpoint out in an environment, write results.json.

The entry point reads like the data path: load the policy, choose its sampler, build
the environments, run seeded episodes in batches, summarise, log, write.

    parapolicy-rollout checkpoint=PATH sampler=picard env=pusht_keypoints n_episodes=50 seed=100000
"""

from __future__ import annotations

import os
import platform
import sys
import time

import torch

CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
ASSETS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets", "checkpoints")


def _ensure_envs_importable():
    try:
        import parapolicy_envs  # noqa: F401
    except ImportError:  # running from a source checkout without install
        sys.path.insert(0, os.path.join(os.path.dirname(CONFIG_DIR), "envs"))
        import parapolicy_envs  # noqa: F401


def resolve_checkpoint(cfg) -> str:
    if cfg.checkpoint:
        return os.path.expanduser(str(cfg.checkpoint))
    name = cfg.env.get("default_checkpoint")
    if not name:
        raise SystemExit(f"env {cfg.env.id} ships no checkpoint: pass checkpoint=PATH")
    return os.path.join(ASSETS_DIR, name)


def make_env_factory(env_cfg, spec):
    """Environments wrapped for the policy's observation history and action chunk."""
    _ensure_envs_importable()
    from parapolicy_envs import MultiStepWrapper

    kwargs = dict(env_cfg.get("kwargs") or {})

    from parapolicy_envs.adapters import make_adapted_env

    def make():
        env = make_adapted_env(env_cfg.id, kwargs, spec.obs_shapes, env_cfg.get("obs_key", "obs"))
        return MultiStepWrapper(env, spec.n_obs_steps, spec.n_action_steps, env_cfg.max_episode_steps)

    make().close()  # a checkpoint/env mismatch fails here, once, before any episode runs
    return make


def sampler_settings(sampler_cfg) -> tuple[str, dict]:
    settings = {k: v for k, v in dict(sampler_cfg).items() if k != "name"}
    return str(sampler_cfg["name"]), settings


def versions() -> dict:
    import diffusers

    import parapolicy

    return {"parapolicy": parapolicy.__version__, "torch": torch.__version__, "diffusers": diffusers.__version__,
            "python": platform.python_version()}


def device_name(device: str) -> str:
    if str(device).startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(device))
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def run_rollout(cfg, output_dir: str) -> dict:
    """Everything the CLI does, callable from Python with a composed cfg."""
    from omegaconf import OmegaConf

    import parapolicy
    from parapolicy.logging import RunLogger
    from parapolicy.metrics import write_json_atomic
    from parapolicy.rollout_modes import run_episodes, run_paired

    started = time.time()
    ckpt = resolve_checkpoint(cfg)
    policy = parapolicy.load_policy(ckpt, device=cfg.policy.device, use_ema=cfg.policy.use_ema,
                                    trust_checkpoint=bool(cfg.policy.trust_checkpoint))
    policy.accelerate(cfg.policy.get("acceleration", "eager"))
    name, settings = sampler_settings(cfg.sampler)
    policy.set_sampler(name, **settings)
    make_env = make_env_factory(cfg.env, policy.spec)
    seeds = [int(cfg.seed) + i for i in range(int(cfg.n_episodes))]
    plain_cfg = OmegaConf.to_container(cfg, resolve=True)
    logger = RunLogger(mode=cfg.logger.mode, project=cfg.logger.project, directory=output_dir, config=plain_cfg,
                       tags=[name, cfg.env.id])
    results = {
        "checkpoint": os.path.abspath(ckpt),
        "env": cfg.env.id,
        "sampler": {"name": name, **settings},
        "device": device_name(cfg.policy.device),
        "versions": versions(),
        "seeds": seeds,
        "noise_seed": int(cfg.noise_seed),
        "policy": {"family": policy.spec.family, "horizon": policy.spec.horizon,
                   "n_obs_steps": policy.spec.n_obs_steps, "n_action_steps": policy.spec.n_action_steps,
                   "num_inference_steps": len(policy.scheduler.timesteps)},
    }
    path = os.path.join(output_dir, "results.json")
    try:
        if cfg.compare_sampler:
            other_name, other_settings = sampler_settings(cfg.compare_sampler)
            results.update(run_paired(policy, make_env, seeds, cfg, (name, settings), (other_name, other_settings)))
        else:
            results.update(run_episodes(policy, make_env, seeds, cfg, output_dir, logger))
    finally:
        results["wall_s"] = time.time() - started
        write_json_atomic(path, results)
        _log_results(logger, results)
        logger.finish()
    return results


def _log_results(logger, results: dict) -> None:
    flat = {"rollout/mean_score": results.get("mean_score"), "rollout/success_rate": results.get("success_rate")}
    for kind in ("chunk", "step"):
        for q in ("p50", "p95", "p99"):
            value = results.get(f"latency_{kind}_ms", {}).get(q)
            if value is not None:
                flat[f"rollout/latency_{kind}_{q}_ms"] = value
    flat["rollout/nfe_per_chunk"] = results.get("nfe_per_chunk")
    flat["rollout/rounds_per_chunk"] = results.get("rounds_per_chunk")
    flat = {k: v for k, v in flat.items() if v is not None}
    logger.log(flat)
    logger.summary(flat)
    rewards = results.get("rewards_by_seed", {})
    if rewards:
        logger.table("rollout/per_seed", ["seed", "max_reward"], [[int(k), v] for k, v in rewards.items()])


def main() -> None:
    import hydra
    from hydra.core.hydra_config import HydraConfig

    @hydra.main(version_base=None, config_path=CONFIG_DIR, config_name="rollout")
    def _app(cfg):
        out_dir = HydraConfig.get().runtime.output_dir
        results = run_rollout(cfg, out_dir)
        print(f"mean_score {results.get('mean_score', float('nan')):.3f} over {len(results.get('seeds', []))} "
              f"episodes; results: {os.path.join(out_dir, 'results.json')}")

    _app()


if __name__ == "__main__":
    main()
