"""Observation encoders of DiffusionPolicy's image policies, in plain torch + torchvision.

Two encoders exist upstream and their checkpoints name parameters differently:

* ``RobomimicObsEncoder`` -- the hybrid policies' encoder, which upstream builds through
  robomimic: per rgb key a ResNet18 trunk (BatchNorm -> GroupNorm), SpatialSoftmax
  keypoints, Linear, then ReLU; low-dim keys pass through. Feature order is the stored
  ``shape_meta.obs`` order. Built natively here so loading needs no robomimic install;
  module names reproduce robomimic's (``obs_nets.<key>.backbone.nets.N``, the shared
  ``nets.0``/``nets.1`` duplicates, ``pool.pos_x`` ...).
* ``MultiImageObsEncoder`` -- torchvision ResNet18 (fc removed, 512-d pooled feature) per
  rgb key after center crop and ImageNet normalisation; sorted rgb keys, then sorted
  low-dim keys.

Both center-crop in eval mode at ``round((H - h) / 2)``, as upstream's eval crop does, and
crop at random positions in train mode.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def center_crop(x: torch.Tensor, size: Sequence[int] | None) -> torch.Tensor:
    if size is None:
        return x
    h, w = int(size[0]), int(size[1])
    top = int(round((x.shape[-2] - h) / 2.0))
    left = int(round((x.shape[-1] - w) / 2.0))
    return x[..., top : top + h, left : left + w]


def random_crop(x: torch.Tensor, size: Sequence[int] | None) -> torch.Tensor:
    """Training-time augmentation: an independent random crop per image (upstream's train crop)."""
    if size is None:
        return x
    h, w = int(size[0]), int(size[1])
    tops = torch.randint(0, x.shape[-2] - h + 1, (x.shape[0],))
    lefts = torch.randint(0, x.shape[-1] - w + 1, (x.shape[0],))
    return torch.stack([img[..., t : t + h, c : c + w] for img, t, c in zip(x, tops.tolist(), lefts.tolist())])


def _crop(module: nn.Module, x: torch.Tensor, size) -> torch.Tensor:
    return random_crop(x, size) if module.training else center_crop(x, size)


def make_resnet18(group_norm: bool) -> nn.Module:
    from torchvision.models import resnet18

    net = resnet18(weights=None)
    if group_norm:
        _replace_batchnorm(net)
    return net


def _replace_batchnorm(module: nn.Module) -> None:
    """BatchNorm2d(C) -> GroupNorm(C // 16, C), as upstream does for policy training."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            setattr(module, name, nn.GroupNorm(child.num_features // 16, child.num_features))
        else:
            _replace_batchnorm(child)


class _ResNetTrunk(nn.Module):
    """ResNet18 without avgpool/fc, as ``nets`` (robomimic's ResNet18Conv layout)."""

    def __init__(self, group_norm: bool):
        super().__init__()
        self.nets = nn.Sequential(*list(make_resnet18(group_norm).children())[:-2])

    def forward(self, x):
        return self.nets(x)


class SpatialSoftmax(nn.Module):
    """Expected (x, y) image position of each of ``num_kp`` learned feature maps."""

    def __init__(self, in_channels: int, height: int, width: int, num_kp: int = 32, temperature: float = 1.0):
        super().__init__()
        self.nets = nn.Conv2d(in_channels, num_kp, kernel_size=1)
        self.num_kp, self.height, self.width = num_kp, height, width
        self.register_buffer("temperature", torch.ones(1) * temperature)
        xs = torch.linspace(-1.0, 1.0, width, dtype=torch.float64)
        ys = torch.linspace(-1.0, 1.0, height, dtype=torch.float64)
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
        self.register_buffer("pos_x", grid_x.reshape(1, height * width).float())
        self.register_buffer("pos_y", grid_y.reshape(1, height * width).float())

    def forward(self, feature):
        logits = self.nets(feature).reshape(-1, self.height * self.width)
        attention = torch.softmax(logits / self.temperature, dim=-1)
        expected_x = torch.sum(self.pos_x * attention, dim=1, keepdim=True)
        expected_y = torch.sum(self.pos_y * attention, dim=1, keepdim=True)
        return torch.cat([expected_x, expected_y], 1).view(-1, self.num_kp, 2)


class VisualCore(nn.Module):
    """Trunk -> SpatialSoftmax -> Flatten -> Linear, with robomimic's shared-module layout."""

    def __init__(self, image_hw: Sequence[int], feature_dim: int = 64, num_kp: int = 32, group_norm: bool = True):
        super().__init__()
        self.backbone = _ResNetTrunk(group_norm)
        fh, fw = (int(image_hw[0]) + 31) // 32, (int(image_hw[1]) + 31) // 32
        self.pool = SpatialSoftmax(512, fh, fw, num_kp)
        # the same backbone/pool objects again: robomimic's state dicts list them twice
        self.nets = nn.Sequential(self.backbone, self.pool, nn.Flatten(start_dim=1), nn.Linear(num_kp * 2, feature_dim))

    def forward(self, x):
        return self.nets(x)


class RobomimicObsEncoder(nn.Module):
    """The hybrid policies' encoder: robomimic VisualCore per rgb key, low-dim passthrough."""

    def __init__(self, obs_shapes: dict, rgb_keys: Sequence[str], crop_shape=None, group_norm=True, feature_dim=64):
        super().__init__()
        self.obs_shapes = dict(obs_shapes)  # order matters: it is the feature order
        self.rgb_keys = [k for k in self.obs_shapes if k in set(rgb_keys)]
        self.crop_shape = tuple(crop_shape) if crop_shape is not None else None
        self.obs_nets = nn.ModuleDict()
        for key in self.rgb_keys:
            hw = self.crop_shape or tuple(self.obs_shapes[key][1:])
            self.obs_nets[key] = VisualCore(hw, feature_dim, group_norm=group_norm)
        self.feature_dim = feature_dim

    def output_dim(self) -> int:
        return sum(self.feature_dim if k in self.obs_nets else _numel(self.obs_shapes[k]) for k in self.obs_shapes)

    def forward(self, obs: dict) -> torch.Tensor:
        feats = []
        for key in self.obs_shapes:
            x = obs[key]
            if key in self.obs_nets:
                x = torch.relu(self.obs_nets[key](_crop(self, x, self.crop_shape)))
            feats.append(x.reshape(x.shape[0], -1))
        return torch.cat(feats, dim=-1)


class MultiImageObsEncoder(nn.Module):
    """torchvision ResNet18 features per rgb key (sorted), then sorted low-dim keys."""

    def __init__(self, obs_shapes: dict, rgb_keys: Sequence[str], crop_shape=None, group_norm=True, imagenet_norm=True):
        super().__init__()
        self._dummy_variable = nn.Parameter()
        self.obs_shapes = dict(obs_shapes)
        self.rgb_keys = sorted(k for k in self.obs_shapes if k in set(rgb_keys))
        self.low_dim_keys = sorted(k for k in self.obs_shapes if k not in set(rgb_keys))
        self.crop_shape = tuple(crop_shape) if crop_shape is not None else None
        self.imagenet_norm = imagenet_norm
        self.key_model_map = nn.ModuleDict()
        for key in self.rgb_keys:
            net = make_resnet18(group_norm)
            net.fc = nn.Identity()
            self.key_model_map[key] = net
        self.register_buffer("_mean", torch.tensor(IMAGENET_MEAN).view(3, 1, 1), persistent=False)
        self.register_buffer("_std", torch.tensor(IMAGENET_STD).view(3, 1, 1), persistent=False)

    def output_dim(self) -> int:
        return 512 * len(self.rgb_keys) + sum(_numel(self.obs_shapes[k]) for k in self.low_dim_keys)

    def forward(self, obs: dict) -> torch.Tensor:
        feats = []
        for key in self.rgb_keys:
            x = _crop(self, obs[key], self.crop_shape)
            if self.imagenet_norm:
                x = (x - self._mean) / self._std
            feats.append(self.key_model_map[key](x))
        for key in self.low_dim_keys:
            x = obs[key]
            feats.append(x.reshape(x.shape[0], -1))
        return torch.cat(feats, dim=-1)


def _numel(shape) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n
