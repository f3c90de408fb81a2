"""Rotations for the humanoid skeletons (body and fingers): unit quaternions (x, y, z, w) to and from
matrices, products, and the orthonormal frame of two directions that every bone solve is built on.
Numpy only, vectorised over any leading axes.
"""
from __future__ import annotations

import numpy as np

__all__ = ["quat_from_matrix", "quat_to_matrix", "quat_multiply", "quat_conjugate", "quat_rotate", "quat_slerp",
           "frames", "cross"]

def _quat_basis() -> tuple[np.ndarray, np.ndarray]:
    # 4 q q^T (order x, y, z, w) is linear in the matrix entries: Q = m.flat @ W + c
    w, c = np.zeros((9, 4, 4)), np.zeros((4, 4))
    c[0, 0] = c[1, 1] = c[2, 2] = c[3, 3] = 1.0
    for i, signs in enumerate(((1, -1, -1), (-1, 1, -1), (-1, -1, 1), (1, 1, 1))):
        for k, sg in enumerate(signs):
            w[4 * k, i, i] = sg
    for (i, j), terms in {(0, 1): ((0, 1, 1), (1, 0, 1)), (0, 2): ((0, 2, 1), (2, 0, 1)), (1, 2): ((1, 2, 1), (2, 1, 1)),
                          (0, 3): ((2, 1, 1), (1, 2, -1)), (1, 3): ((0, 2, 1), (2, 0, -1)),
                          (2, 3): ((1, 0, 1), (0, 1, -1))}.items():
        for r, col, sg in terms:
            w[3 * r + col, i, j] = w[3 * r + col, j, i] = sg
    return w.reshape(9, 16), c.reshape(16)


_QW, _QC = _quat_basis()


def quat_from_matrix(m: np.ndarray) -> np.ndarray:
    """(..., 3, 3) rotation matrices -> (..., 4) unit quaternions (x, y, z, w), w >= 0."""
    m = np.asarray(m, dtype=np.float64)
    q4 = (m.reshape(m.shape[:-2] + (9,)) @ _QW + _QC).reshape(m.shape[:-2] + (4, 4))
    k = np.argmax(q4[..., [0, 1, 2, 3], [0, 1, 2, 3]], axis=-1)  # the largest component: a well-conditioned row
    q = np.take_along_axis(q4, k[..., None, None], axis=-2)[..., 0, :]
    q = q / np.sqrt((q * q).sum(-1, keepdims=True))
    return q * np.where(q[..., 3:] < 0, -1.0, 1.0)


def quat_to_matrix(q: np.ndarray) -> np.ndarray:
    """(..., 4) quaternions (x, y, z, w) -> (..., 3, 3) rotation matrices."""
    q = np.asarray(q, dtype=np.float64)
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    x, y, z, w = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
    return np.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w),
        2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w),
        2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1).reshape(q.shape[:-1] + (3, 3))


def quat_multiply(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product a * b (apply b, then a), (..., 4) (x, y, z, w)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    ax, ay, az, aw = a[..., 0], a[..., 1], a[..., 2], a[..., 3]
    bx, by, bz, bw = b[..., 0], b[..., 1], b[..., 2], b[..., 3]
    out = np.empty(np.broadcast_shapes(a.shape, b.shape))
    out[..., 0] = aw * bx + ax * bw + ay * bz - az * by
    out[..., 1] = aw * by - ax * bz + ay * bw + az * bx
    out[..., 2] = aw * bz + ax * by - ay * bx + az * bw
    out[..., 3] = aw * bw - ax * bx - ay * by - az * bz
    return out


def quat_conjugate(q: np.ndarray) -> np.ndarray:
    return np.asarray(q, dtype=np.float64) * np.array([-1.0, -1.0, -1.0, 1.0])


def quat_rotate(q: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Rotate vectors v (..., 3) by unit quaternions q (..., 4)."""
    q = np.asarray(q, dtype=np.float64)
    u, w = q[..., :3], q[..., 3:]
    t = 2.0 * cross(u, v)
    return v + w * t + cross(u, t)


def cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return a[..., [1, 2, 0]] * b[..., [2, 0, 1]] - a[..., [2, 0, 1]] * b[..., [1, 2, 0]]



def frames(a: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Orthonormal frames (..., 3, 3), columns (primary, secondary, their cross), from two directions.
    Always orthonormal, so forward kinematics lands on the joints whatever the mesh: a zero primary
    becomes +X, a secondary along the primary (or zero) the axis least along the primary."""
    na = np.sqrt((a * a).sum(-1, keepdims=True))
    e1 = np.where(na > 1e-9, a / np.maximum(na, 1e-300), _AXES[0])
    s = s - (s * e1).sum(-1, keepdims=True) * e1
    ns = np.sqrt((s * s).sum(-1, keepdims=True))
    if not np.all(ns > 1e-9):
        helper = _AXES[np.argmin(np.abs(e1), axis=-1)]
        helper = helper - (helper * e1).sum(-1, keepdims=True) * e1
        s = np.where(ns > 1e-9, s, helper)
        ns = np.sqrt((s * s).sum(-1, keepdims=True))
    e2 = s / ns
    return np.stack([e1, e2, cross(e1, e2)], -1)


_AXES = np.eye(3)


def quat_slerp(a: np.ndarray, b: np.ndarray, t) -> np.ndarray:
    """Spherical interpolation from a (t = 0) to b (t = 1), the short way round; (..., 4), t broadcasts."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    d = (a * b).sum(-1, keepdims=True)
    b = np.where(d < 0, -b, b)
    d = np.abs(d)
    t = np.asarray(t, dtype=np.float64)[..., None] if np.ndim(t) else np.float64(t)
    theta = np.arccos(np.clip(d, -1.0, 1.0))
    s = np.sin(theta)
    near = s < 1e-6
    wa = np.where(near, 1.0 - t, np.sin((1.0 - t) * theta) / np.where(near, 1.0, s))
    wb = np.where(near, t, np.sin(t * theta) / np.where(near, 1.0, s))
    q = wa * a + wb * b
    return q / np.linalg.norm(q, axis=-1, keepdims=True)
