"""Rotation formats of upstream's absolute robomimic actions: axis-angle <-> 6-d rotation.

Upstream DiffusionPolicy trains absolute-action policies on ``[pos 3, rot6d 6, gripper 1]``
per arm and its robomimic runners turn the 6-d part back into robosuite's axis-angle before
``env.step``, both through pytorch3d's conventions, which are restated here in numpy:

* the 6-d rotation is the first two **rows** of the rotation matrix, ``R[0, :]`` then
  ``R[1, :]`` (``matrix_to_rotation_6d``);
* back to a matrix by Gram-Schmidt on those rows, the third row their cross product
  (``rotation_6d_to_matrix``), so any 6 numbers with independent halves give a rotation;
* axis-angle is ``axis * angle`` with the matrix ``R = exp([axis * angle]x)`` (Rodrigues).
  The angle returned here lies in [0, pi]; an angle in (pi, 2 pi) about the opposite axis
  is the same rotation, which is all robosuite's absolute controller reads.

Computed in float64; the conversions are exact up to rounding (round trips within 1e-12).
"""

from __future__ import annotations

import numpy as np

_SMALL = 1e-8


def axis_angle_to_matrix(axis_angle) -> np.ndarray:
    """(..., 3) rotation vectors -> (..., 3, 3) rotation matrices (Rodrigues' formula)."""
    v = np.asarray(axis_angle, dtype=np.float64)
    angle = np.linalg.norm(v, axis=-1)[..., None, None]
    k = np.zeros(v.shape[:-1] + (3, 3))
    k[..., 0, 1], k[..., 0, 2] = -v[..., 2], v[..., 1]
    k[..., 1, 0], k[..., 1, 2] = v[..., 2], -v[..., 0]
    k[..., 2, 0], k[..., 2, 1] = -v[..., 1], v[..., 0]
    small = angle < _SMALL
    safe = np.where(small, 1.0, angle)
    a = np.where(small, 1.0 - angle**2 / 6.0, np.sin(safe) / safe)  # sin(x)/x
    b = np.where(small, 0.5 - angle**2 / 24.0, (1.0 - np.cos(safe)) / safe**2)  # (1-cos x)/x^2
    return np.eye(3) + a * k + b * (k @ k)


def matrix_to_axis_angle(matrix) -> np.ndarray:
    """(..., 3, 3) rotation matrices -> (..., 3) rotation vectors with angle in [0, pi]."""
    q = _matrix_to_quaternion(np.asarray(matrix, dtype=np.float64))
    q = np.where(q[..., :1] < 0, -q, q)  # w >= 0: the half angle is in [0, pi/2]
    vec = q[..., 1:]
    norm = np.linalg.norm(vec, axis=-1, keepdims=True)
    half = np.arctan2(norm, q[..., :1])
    small = norm < _SMALL
    scale = np.where(small, 2.0 / np.maximum(q[..., :1], _SMALL), 2.0 * half / np.where(small, 1.0, norm))
    return vec * scale


def _matrix_to_quaternion(m: np.ndarray) -> np.ndarray:
    """(w, x, y, z) from a rotation matrix, from the largest of the four candidate pivots."""
    trace = m[..., 0, 0] + m[..., 1, 1] + m[..., 2, 2]
    candidates = np.stack([
        np.stack([1 + trace, m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] - m[..., 0, 1]], -1),
        np.stack([m[..., 2, 1] - m[..., 1, 2], 1 + 2 * m[..., 0, 0] - trace, m[..., 0, 1] + m[..., 1, 0],
                  m[..., 0, 2] + m[..., 2, 0]], -1),
        np.stack([m[..., 0, 2] - m[..., 2, 0], m[..., 0, 1] + m[..., 1, 0], 1 + 2 * m[..., 1, 1] - trace,
                  m[..., 1, 2] + m[..., 2, 1]], -1),
        np.stack([m[..., 1, 0] - m[..., 0, 1], m[..., 0, 2] + m[..., 2, 0], m[..., 1, 2] + m[..., 2, 1],
                  1 + 2 * m[..., 2, 2] - trace], -1),
    ], -2)  # row i is 4 q_i q (unnormalised)
    pivots = np.stack([1 + trace, 1 + 2 * m[..., 0, 0] - trace, 1 + 2 * m[..., 1, 1] - trace,
                       1 + 2 * m[..., 2, 2] - trace], -1)
    best = np.take_along_axis(candidates, pivots.argmax(-1)[..., None, None], axis=-2)[..., 0, :]
    return best / np.linalg.norm(best, axis=-1, keepdims=True)


def matrix_to_rotation_6d(matrix) -> np.ndarray:
    """(..., 3, 3) -> (..., 6): the first two rows, as pytorch3d (and so upstream) stores them."""
    m = np.asarray(matrix, dtype=np.float64)
    return m[..., :2, :].reshape(m.shape[:-2] + (6,))


def rotation_6d_to_matrix(rot6d) -> np.ndarray:
    """(..., 6) -> (..., 3, 3): Gram-Schmidt on the two rows, the third their cross product."""
    d6 = np.asarray(rot6d, dtype=np.float64)
    a1, a2 = d6[..., :3], d6[..., 3:]
    b1 = a1 / np.linalg.norm(a1, axis=-1, keepdims=True)
    b2 = a2 - np.sum(b1 * a2, axis=-1, keepdims=True) * b1
    b2 = b2 / np.linalg.norm(b2, axis=-1, keepdims=True)
    return np.stack([b1, b2, np.cross(b1, b2)], axis=-2)


def axis_angle_to_rotation_6d(axis_angle) -> np.ndarray:
    return matrix_to_rotation_6d(axis_angle_to_matrix(axis_angle))


def rotation_6d_to_axis_angle(rot6d) -> np.ndarray:
    return matrix_to_axis_angle(rotation_6d_to_matrix(rot6d))
