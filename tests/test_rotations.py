"""The 6-d rotation conversions against upstream's conventions, written out independently.

Upstream (RotationTransformer over pytorch3d) defines, for a rotation vector ``k * theta``:
the quaternion ``(cos(theta/2), sin(theta/2) k)``, its matrix by pytorch3d's
``quaternion_to_matrix`` formula, and the 6-d rotation as that matrix's first two rows.
"""

import numpy as np
import pytest

from parapolicy_envs.rotations import (
    axis_angle_to_matrix,
    axis_angle_to_rotation_6d,
    matrix_to_axis_angle,
    rotation_6d_to_axis_angle,
    rotation_6d_to_matrix,
)


def _quaternion_matrix(rotvec):
    """pytorch3d's quaternion_to_matrix of the quaternion of a rotation vector."""
    theta = np.linalg.norm(rotvec)
    axis = rotvec / theta if theta > 0 else np.zeros(3)
    r, (i, j, k) = np.cos(theta / 2), np.sin(theta / 2) * axis
    two_s = 2.0 / (r * r + i * i + j * j + k * k)
    return np.array([
        [1 - two_s * (j * j + k * k), two_s * (i * j - k * r), two_s * (i * k + j * r)],
        [two_s * (i * j + k * r), 1 - two_s * (i * i + k * k), two_s * (j * k - i * r)],
        [two_s * (i * k - j * r), two_s * (j * k + i * r), 1 - two_s * (i * i + j * j)],
    ])


def _rotvecs(n, seed=0):
    rng = np.random.default_rng(seed)
    axes = rng.normal(size=(n, 3))
    axes /= np.linalg.norm(axes, axis=-1, keepdims=True)
    angles = np.concatenate([rng.uniform(0, np.pi - 1e-3, n - 4), [0.0, 1e-7, 1e-3, np.pi - 1e-3]])
    return axes * angles[:, None]


def test_six_d_is_the_first_two_rows_of_upstreams_matrix():
    for rotvec in _rotvecs(50):
        want = _quaternion_matrix(rotvec)
        np.testing.assert_allclose(axis_angle_to_matrix(rotvec), want, atol=1e-12)
        np.testing.assert_allclose(axis_angle_to_rotation_6d(rotvec), want[:2].reshape(6), atol=1e-12)
    # a quarter turn about z: rows (0, -1, 0) and (1, 0, 0)
    np.testing.assert_allclose(axis_angle_to_rotation_6d([0, 0, np.pi / 2]), [0, -1, 0, 1, 0, 0], atol=1e-12)


def test_round_trip_axis_angle_to_6d_and_back_within_1e6():
    rotvecs = _rotvecs(2000)
    back = rotation_6d_to_axis_angle(axis_angle_to_rotation_6d(rotvecs))
    assert np.abs(back - rotvecs).max() < 1e-6
    # from float32 6-d rotations, as a policy outputs them, the rotation still comes back within 1e-6
    six = axis_angle_to_rotation_6d(rotvecs).astype(np.float32)
    again = axis_angle_to_matrix(rotation_6d_to_axis_angle(six))
    assert np.abs(again - axis_angle_to_matrix(rotvecs)).max() < 1e-6


def test_six_d_back_to_a_matrix_is_gram_schmidt_on_the_rows():
    rng = np.random.default_rng(1)
    six = rng.normal(size=(100, 6))
    m = rotation_6d_to_matrix(six)
    np.testing.assert_allclose(m @ np.swapaxes(m, -1, -2), np.broadcast_to(np.eye(3), m.shape), atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(m), 1.0, atol=1e-12)
    np.testing.assert_allclose(m[:, 0], six[:, :3] / np.linalg.norm(six[:, :3], axis=-1, keepdims=True), atol=1e-12)
    b2 = six[:, 3:] - np.sum(m[:, 0] * six[:, 3:], -1, keepdims=True) * m[:, 0]
    np.testing.assert_allclose(m[:, 1], b2 / np.linalg.norm(b2, axis=-1, keepdims=True), atol=1e-12)


@pytest.mark.parametrize("angle", [0.5, np.pi - 1e-4, np.pi, 1.5 * np.pi])
def test_axis_angle_comes_back_with_an_angle_in_0_pi(angle):
    rotvec = np.array([0.0, 0.6, 0.8]) * angle
    back = matrix_to_axis_angle(axis_angle_to_matrix(rotvec))
    assert np.linalg.norm(back) <= np.pi + 1e-9
    np.testing.assert_allclose(axis_angle_to_matrix(back), axis_angle_to_matrix(rotvec), atol=1e-9)
