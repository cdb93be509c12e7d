#!/usr/bin/env python
"""Train a UNet lowdim DiffusionPolicy (DDPM, EMA) and save it in upstream's .ckpt format.

    python scripts/train.py --config-name pusht_keypoints training.num_steps=20000
    python scripts/train.py --config-name toy data.path=data/toy_demos.npz out_dir=outputs/toy

Resumes from <out_dir>/checkpoints/latest.ckpt when present (resume=false to restart).
Logs to wandb in offline mode by default (logger.mode=disabled|offline|online).
"""

from __future__ import annotations

import os
import sys

import hydra
from omegaconf import DictConfig, OmegaConf

from parapolicy.checkpoints.dp_cfg import safe_arithmetic
from parapolicy.logging import RunLogger
from parapolicy.train.trainer import train

CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "configs", "train")
if not OmegaConf.has_resolver("eval"):
    OmegaConf.register_new_resolver("eval", safe_arithmetic)


@hydra.main(version_base=None, config_path=CONFIG_DIR, config_name="pusht_keypoints")
def main(cfg: DictConfig) -> None:
    plain = OmegaConf.to_container(cfg, resolve=True)
    plain.pop("hydra", None)
    logger = RunLogger(mode=cfg.logger.mode, project=cfg.logger.project, name=cfg.name, directory=cfg.out_dir,
                       config=plain)
    try:
        path = train(plain, cfg.out_dir, logger=logger, resume=bool(cfg.resume))
    finally:
        logger.finish()
    print(f"checkpoint: {path}")


if __name__ == "__main__":
    sys.exit(main())
