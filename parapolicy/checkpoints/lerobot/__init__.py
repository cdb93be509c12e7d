"""LeRobot DiffusionPolicy ``pretrained_model/`` directories of every release, without lerobot.

``config`` (config.json eras, validated), ``stats`` (both statistics layouts and LeRobot's
formulas), ``weights`` (safetensors reads), ``model`` (networks and key mapping), ``load``
(directory -> Policy) and ``export`` (Policy -> directory of a chosen release).
Observation keys are LeRobot's feature names (``observation.state``, ``observation.image``...),
each (B, n_obs_steps, ...).
"""

from parapolicy.checkpoints.lerobot.config import ENV, STATE, LeRobotConfig, parse_config
from parapolicy.checkpoints.lerobot.export import ERAS, config_fields, export_lerobot
from parapolicy.checkpoints.lerobot.load import is_lerobot_dir, load_lerobot
from parapolicy.checkpoints.lerobot.model import (
    LeRobotObsEncoder,
    dp_unet_key_to_lerobot,
    lerobot_unet_key_to_dp,
)
from parapolicy.checkpoints.lerobot.stats import POST_STATS, PRE_STATS, LeRobotNormalizer

__all__ = [
    "ENV", "ERAS", "POST_STATS", "PRE_STATS", "STATE", "LeRobotConfig", "LeRobotNormalizer", "LeRobotObsEncoder",
    "config_fields", "dp_unet_key_to_lerobot", "export_lerobot", "is_lerobot_dir", "lerobot_unet_key_to_dp",
    "load_lerobot", "parse_config",
]
