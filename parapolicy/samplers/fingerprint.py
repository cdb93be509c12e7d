"""Keys from content: what a captured kernel may be reused for.

A capturing executor builds a kernel once per key and replays it; the kernel has the step
rule's coefficients, timesteps and convergence weights baked in. Keying by the rule
object's ``id`` reused a kernel for a different rule that happened to get a freed rule's
id, and rebuilt it for an equal rule made again. A fingerprint compares by value instead:
equal content, one key; different content, different keys.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping

import numpy as np
import torch


def fingerprint(value):
    """A hashable summary of ``value``'s content: tensors by dtype, shape and a digest of their
    bytes; dataclasses, mappings and sequences by their parts; plain values as themselves;
    anything else by its repr."""
    if isinstance(value, np.ndarray):  # e.g. a scheduler config's trained_betas: its repr rounds
        value = torch.from_numpy(np.ascontiguousarray(value))
    if isinstance(value, torch.Tensor):
        data = value.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8)
        digest = hashlib.blake2b(data.numpy().tobytes(), digest_size=16).hexdigest()
        return ("tensor", str(value.dtype), tuple(value.shape), digest)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return (type(value).__qualname__,
                tuple((f.name, fingerprint(getattr(value, f.name))) for f in dataclasses.fields(value)))
    if isinstance(value, Mapping):
        return ("mapping", tuple(sorted((str(k), fingerprint(v)) for k, v in value.items())))
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, tuple(fingerprint(v) for v in value))
    if isinstance(value, (torch.dtype, torch.device)):
        return (type(value).__name__, str(value))
    if value is None or isinstance(value, (bool, int, float, str)):
        return (type(value).__name__, value)
    return (type(value).__qualname__, repr(value))


def rule_key(rule) -> tuple:
    """The step rule's content key, computed once per rule object (``StepRule``s are frozen schedules)."""
    cache = rule.__dict__
    if "_content_key" not in cache:
        cache["_content_key"] = fingerprint(rule)
    return cache["_content_key"]


def problem_key(problem) -> tuple:
    """What a kernel built for ``problem`` depends on: the rule's content and the shapes it was built for."""
    return (rule_key(problem.rule), tuple(problem.x_T.shape), problem.x_T.dtype, problem.noises is not None,
            problem.cond_mask is not None)
