"""DDPM training of DiffusionPolicy UNet policies (lowdim, hybrid image), in upstream's ``.ckpt`` format.

A ``task`` section in the training cfg (upstream's ``config/task/*.yaml``: env runner,
``abs_action``, episode length, test seeds) is stored with the checkpoint, as upstream's
workspaces store it, so evaluation can set the env up from the checkpoint alone.

Recipe as upstream: limits-mode LinearNormalizer fitted on the whole buffer, epsilon
prediction at uniformly drawn timesteps, AdamW with cosine decay after warmup, and an
EMA copy of the weights (decay ``1 - (1 + step)^-power`` capped at ``ema_max``) which is
what evaluation uses. Checkpoints hold ``model``, ``ema_model`` and ``optimizer`` state,
so training resumes from ``checkpoints/latest.ckpt``.
"""

from __future__ import annotations

import copy
import math
import os
import sys
import time

import numpy as np
import torch
from tqdm.auto import tqdm

from parapolicy.checkpoints.dp_builders import build_from_policy_cfg
from parapolicy.checkpoints.dp_workspace import read_payload, save_dp_workspace, upstream_state_dict
from parapolicy.checkpoints.safe_pickle import allow_list_pickle
from parapolicy.models.normalizer import LinearNormalizer, fit_limits
from parapolicy.policy import GLOBAL, Policy
from parapolicy.train.dataset import SequenceDataset, load_buffer

WORKSPACES = {
    "unet_lowdim": "diffusion_policy.workspace.train_diffusion_unet_lowdim_workspace.TrainDiffusionUnetLowdimWorkspace",
    "unet_hybrid_image": "diffusion_policy.workspace.train_diffusion_unet_hybrid_workspace.TrainDiffusionUnetHybridWorkspace",
    "unet_image": "diffusion_policy.workspace.train_diffusion_unet_image_workspace.TrainDiffusionUnetImageWorkspace",
}


class EMA:
    """Exponential moving average of parameters (buffers are copied, as upstream)."""

    def __init__(self, model, power=0.75, max_value=0.9999):
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.power, self.max_value, self.step = power, max_value, 0

    def decay(self) -> float:
        value = 1 - (1 + self.step) ** -self.power
        return max(0.0, min(value, self.max_value))

    @torch.no_grad()
    def update(self, model):
        d = self.decay()
        for ema_p, p in zip(self.model.parameters(), model.parameters()):
            ema_p.mul_(d).add_(p.detach(), alpha=1 - d)
        for ema_b, b in zip(self.model.buffers(), model.buffers()):
            ema_b.copy_(b)
        self.step += 1


def _normalizer(buffer, obs_fields: dict, rgb_keys, action_key) -> LinearNormalizer:
    """Limits mode for low-dim fields and the action; images map [0, 1] -> [-1, 1] (upstream)."""
    norm = LinearNormalizer()
    for field, key in obs_fields.items():
        if key in rgb_keys:
            norm.set_field(field, torch.tensor([2.0]), torch.tensor([-1.0]))
        else:
            fit = fit_limits(torch.as_tensor(buffer[key], dtype=torch.float32))
            norm.set_field(field, fit["scale"], fit["offset"], fit["input_stats"])
    fit = fit_limits(torch.as_tensor(buffer[action_key], dtype=torch.float32))
    norm.set_field("action", fit["scale"], fit["offset"], fit["input_stats"])
    return norm


def _lr_lambda(warmup: int, total: int):
    def f(step):
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return f


def train(cfg: dict, out_dir: str, logger=None, resume: bool = True, progress: bool = True) -> str:
    """Train per ``cfg`` (``policy``, ``training``, ``data`` sections); returns the checkpoint path."""
    tcfg, pcfg = cfg["training"], cfg["policy"]
    torch.manual_seed(int(tcfg.get("seed", 42)))
    np.random.seed(int(tcfg.get("seed", 42)))
    device = torch.device(tcfg.get("device", "cpu"))
    networks, scheduler = build_from_policy_cfg(pcfg)
    spec, model, encoder = networks.spec, networks.model, networks.obs_encoder
    if spec.cond_mode != GLOBAL:
        raise NotImplementedError("train.py trains UNet policies with global observation conditioning")
    buffer = load_buffer(cfg["data"]["path"])
    action_key = cfg["data"].get("action_key", "action")
    if encoder is None:  # lowdim: the policy's 'obs' comes from one buffer array
        obs_fields = {"obs": cfg["data"].get("obs_key", "obs")}
        rgb_keys = []
    else:  # image policies: buffer arrays named like the shape_meta keys
        obs_fields = {k: k for k in spec.obs_shapes}
        rgb_keys = list(getattr(encoder, "rgb_keys", []))
    missing = [k for k in [*obs_fields.values(), action_key] if k not in buffer]
    if missing:
        raise KeyError(f"replay buffer {cfg['data']['path']} lacks {missing}")
    normalizer = _normalizer(buffer, obs_fields, rgb_keys, action_key)
    dataset = SequenceDataset(buffer, [*obs_fields.values(), action_key], spec.horizon, spec.n_obs_steps,
                              spec.n_action_steps)
    loader = torch.utils.data.DataLoader(dataset, batch_size=int(tcfg["batch_size"]), shuffle=True, drop_last=True,
                                         num_workers=0)
    policy = Policy(spec, model, normalizer, scheduler, encoder).to(device)
    policy.train()
    net = torch.nn.ModuleDict({"model": model, **({"obs_encoder": encoder} if encoder is not None else {})})
    ema = EMA(net, tcfg.get("ema_power", 0.75), tcfg.get("ema_max", 0.9999))
    optimizer = torch.optim.AdamW(net.parameters(), lr=float(tcfg["lr"]), betas=tuple(tcfg.get("betas", (0.95, 0.999))),
                                  weight_decay=float(tcfg.get("weight_decay", 1e-6)))
    total = int(tcfg["num_steps"])
    lr_sched = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(int(tcfg.get("warmup_steps", 500)), total))
    ckpt_dir = os.path.join(out_dir, "checkpoints")
    latest = os.path.join(ckpt_dir, "latest.ckpt")
    step = 0
    if resume and os.path.isfile(latest):
        step = _resume(latest, net, ema, optimizer, lr_sched)
    stored_cfg = {"_target_": WORKSPACES[spec.family], "name": cfg.get("name", "train"), "policy": pcfg,
                  "horizon": spec.horizon, "n_obs_steps": spec.n_obs_steps, "n_action_steps": spec.n_action_steps,
                  "training": dict(tcfg, use_ema=True), "data": dict(cfg["data"])}
    if "task" in cfg:  # upstream's task section: which env runner evaluates the policy, and how
        stored_cfg["task"] = cfg["task"]
    bar = tqdm(total=total, initial=step, disable=not progress, desc="train", dynamic_ncols=True,
               mininterval=0.1 if sys.stderr.isatty() else 30.0)
    started = time.time()
    while step < total:
        for batch in loader:
            if step >= total:
                break
            nobs = {field: normalizer.normalize(field, batch[key].to(device)) for field, key in obs_fields.items()}
            naction = normalizer.normalize("action", batch[action_key].to(device))
            global_cond = policy.encode_observations(nobs).reshape(naction.shape[0], -1)
            noise = torch.randn_like(naction)
            t = torch.randint(0, scheduler.config.num_train_timesteps, (naction.shape[0],), device=device)
            noisy = scheduler.add_noise(naction, noise, t)
            loss = torch.nn.functional.mse_loss(model(noisy, t, global_cond=global_cond), noise)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            lr_sched.step()
            ema.update(net)
            step += 1
            bar.update(1)
            if step % 50 == 0:
                bar.set_postfix(loss=f"{loss.item():.4f}")
                if logger is not None:
                    logger.log({"train/loss": loss.item(), "train/lr": lr_sched.get_last_lr()[0],
                                "train/ema_decay": ema.decay()}, step=step)
            if step % int(tcfg.get("checkpoint_every", 1000)) == 0 or step == total:
                _save(latest, stored_cfg, net, ema, optimizer, lr_sched, normalizer, step)
    bar.close()
    if not os.path.isfile(latest) or step == 0:
        _save(latest, stored_cfg, net, ema, optimizer, lr_sched, normalizer, step)
    if logger is not None:
        logger.summary({"train/steps": step, "train/wall_s": time.time() - started})
    return latest


def _upstream(net, normalizer) -> dict:
    return upstream_state_dict(net["model"], net["obs_encoder"] if "obs_encoder" in net else None, normalizer)


def _save(path, cfg, net, ema, optimizer, lr_sched, normalizer, step):
    state_dicts = {
        "model": _upstream(net, normalizer),
        "ema_model": _upstream(ema.model, normalizer),
        "optimizer": optimizer.state_dict(),
        "lr_scheduler": lr_sched.state_dict(),
    }
    save_dp_workspace(path, cfg, state_dicts, pickles={"global_step": step, "epoch": 0, "ema_step": ema.step})


def _resume(path, net, ema, optimizer, lr_sched) -> int:
    payload = read_payload(path)
    sd = payload["state_dicts"]
    for target, weights in ((net, sd["model"]), (ema.model, sd["ema_model"])):
        target.load_state_dict({k: v for k, v in weights.items() if k.startswith(("model.", "obs_encoder."))})
    optimizer.load_state_dict(sd["optimizer"])
    lr_sched.load_state_dict(sd["lr_scheduler"])
    pickles = {k: allow_list_pickle.loads(v) for k, v in payload.get("pickles", {}).items()}
    ema.step = int(pickles.get("ema_step", pickles.get("global_step", 0)))
    return int(pickles.get("global_step", 0))


def export_for_inference(src: str, dst: str) -> str:
    """Keep only the weights evaluation uses (EMA) and the cfg: small enough to ship."""
    payload = read_payload(src)
    weights = payload["state_dicts"]["ema_model"]
    save_dp_workspace(dst, payload["cfg"], {"ema_model": weights},
                      pickles={k: allow_list_pickle.loads(v) for k, v in payload.get("pickles", {}).items()})
    return dst
