"""Vectorised temporal filters for the smooth stage (numpy only, no pipeline types).

`KalmanBank` runs n independent 1-D Kalman filters (one per coordinate) that share the transition F, the
process noise Q, the measurement model H = [1, 0, ...] and the measurement noise R. Because everything that
drives the covariance is shared, the covariance P is the same for all n coordinates: one small (k x k)
matrix per bank (k = 2 for constant velocity, 3 for constant acceleration), updated once per step, and the
state (k, n) is updated with a handful of vectorised numpy operations. The result is exactly that of
filterpy's `KalmanFilter` run once per coordinate (tests/test_smooth_filters.py checks it to 1e-9).

`rts_backward` is the Rauch-Tung-Striebel backward pass over a window of recorded steps (filterpy's
`KalmanFilter.rts_smoother`, vectorised the same way). `OneEuroBank` is the One Euro filter (Casiez et al.,
CHI 2012) over n coordinates with the same predict/update/value interface.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Optional, Sequence

import numpy as np

ORDERS = {"constant_velocity": 2, "constant_acceleration": 3}


@lru_cache(maxsize=256)
def _model(order: int, dt: float, var: float) -> tuple[np.ndarray, np.ndarray]:
    """(F, Q) of a 1-D kinematic model of `order` states (position, velocity[, acceleration])."""
    from filterpy.common import Q_discrete_white_noise  # here: importing filterpy (scipy) takes seconds

    F = np.eye(order)
    for i in range(order):
        for j in range(i + 1, order):
            F[i, j] = dt ** (j - i) / float(np.prod(np.arange(1, j - i + 1)))
    Q = np.asarray(Q_discrete_white_noise(dim=order, dt=dt, var=var), dtype=np.float64)
    F.setflags(write=False)
    Q.setflags(write=False)
    return F, Q


def kinematic_model(order: int, dt: float, process_std: float) -> tuple[np.ndarray, np.ndarray]:
    """Transition F and process noise Q for one step of dt seconds.

    Q is filterpy's `Q_discrete_white_noise(dim=order, dt, var=process_std**2)` (piecewise white noise):
    for constant velocity `process_std` is the standard deviation of the acceleration (units/s^2), for
    constant acceleration that of the acceleration's change per step (units/s^2).
    """
    if order not in (2, 3):
        raise ValueError(f"order must be 2 (constant velocity) or 3 (constant acceleration), not {order}")
    if not (dt > 0 and np.isfinite(dt)):
        raise ValueError(f"time step must be a positive number of seconds, not {dt}")
    return _model(order, float(dt), float(process_std) ** 2)


@dataclass
class Step:
    """What the RTS backward pass needs of one forward step (x, P after the update; F, P before it)."""

    x: np.ndarray  # (k, n) posterior state
    P: np.ndarray  # (k, k) posterior covariance
    F: Optional[np.ndarray]  # (k, k) transition that led to this step (None at birth)
    P_prior: Optional[np.ndarray]  # (k, k) predicted covariance of this step (None at birth)


class KalmanBank:
    """n independent 1-D Kalman filters sharing F, Q, H, R, hence one covariance P.

    State x: (k, n), row 0 the positions, row 1 the velocities (row 2 the accelerations). At birth
    x = [z0, 0, (0)] and P = diag(r^2, initial_speed^2[, initial_accel^2]).
    """

    def __init__(
        self,
        z0: np.ndarray,
        order: int,
        process_std: float,
        measurement_std: float,
        initial_speed: float,
        initial_accel: Optional[float] = None,
        dtype=np.float64,
    ) -> None:
        z0 = np.asarray(z0, dtype=dtype).reshape(-1)
        if order not in (2, 3):
            raise ValueError(f"order must be 2 or 3, not {order}")
        self.order = order
        self.process_std = float(process_std)
        self.R = float(measurement_std) ** 2
        self.x = np.zeros((order, z0.size), dtype=dtype)
        self.x[0] = z0
        diag = [self.R, float(initial_speed) ** 2]
        if order == 3:
            diag.append(float(initial_accel if initial_accel is not None else initial_speed) ** 2)
        self.P = np.diag(diag)
        self.F: Optional[np.ndarray] = None  # transition of the last predict
        self.P_prior: Optional[np.ndarray] = None  # covariance after the last predict

    @property
    def n(self) -> int:
        return self.x.shape[1]

    @property
    def value(self) -> np.ndarray:
        """Current position estimate (n,) (a view: copy it to keep it)."""
        return self.x[0]

    def predict(self, dt: float) -> None:
        F, Q = kinematic_model(self.order, dt, self.process_std)
        x = self.x
        # x <- F x, in place: F is upper triangular, so row i only reads rows j > i, still unchanged.
        for i in range(self.order - 1):
            for j in range(i + 1, self.order):
                x[i] += F[i, j] * x[j]
        self.P = F @ self.P @ F.T + Q
        self.F, self.P_prior = F, self.P

    def update(self, z: np.ndarray) -> None:
        z = np.asarray(z).reshape(-1)
        if z.shape[0] != self.n:
            raise ValueError(f"measurement has {z.shape[0]} values, the filter tracks {self.n}")
        P = self.P
        S = P[0, 0] + self.R
        K = P[:, 0] / S  # (k,) gain, the same for every coordinate
        y = z - self.x[0]
        for i in range(self.order):
            self.x[i] += K[i] * y
        # Joseph form, as filterpy: P = (I - KH) P (I - KH)' + K R K'
        I_KH = np.eye(self.order)
        I_KH[:, 0] -= K
        self.P = I_KH @ P @ I_KH.T + np.outer(K, K) * self.R

    def step_record(self) -> Step:
        """A copy of what the RTS pass needs of the step just taken (call after predict/update)."""
        return Step(self.x.copy(), self.P.copy(), self.F, self.P_prior)


def rts_backward(steps: Sequence[Step]) -> list[np.ndarray]:
    """Rauch-Tung-Striebel backward pass over consecutive forward steps -> smoothed states (k, n) each.

    The last step's state is returned as it is (nothing after it is known); step t is smoothed with
    C = P_t F_{t+1}' (P_prior_{t+1})^-1,  x_t += C (xs_{t+1} - F_{t+1} x_t),  as filterpy's rts_smoother.
    """
    m = len(steps)
    if m == 0:
        return []
    xs: list[np.ndarray] = [None] * m  # type: ignore[list-item]
    xs[-1] = steps[-1].x
    Ps = steps[-1].P
    for t in range(m - 2, -1, -1):
        nxt, cur = steps[t + 1], steps[t]
        if nxt.F is None or nxt.P_prior is None:
            raise ValueError("rts_backward: a step after the first has no transition (was the track reset?)")
        C = cur.P @ nxt.F.T @ np.linalg.inv(nxt.P_prior)
        x = cur.x.copy()
        x += C @ (xs[t + 1] - nxt.F @ cur.x)
        xs[t] = x
        Ps = cur.P + C @ (Ps - nxt.P_prior) @ C.T
    return xs


def _alpha(dt: float, cutoff):
    tau = 1.0 / (2.0 * np.pi * cutoff)
    return 1.0 / (1.0 + tau / dt)


class OneEuroBank:
    """The One Euro filter over n coordinates (Casiez, Roussel, Vogel, CHI 2012).

    cutoff = min_cutoff + beta * |speed| per coordinate, speed low-passed at d_cutoff. `scale` divides
    the values before filtering (the group's measurement noise) so that beta is unit-free: beta is in
    1 / (noise standard deviations per second). predict(dt) holds the last value (the filter has no
    motion model) and adds dt to the time of the next update.
    """

    def __init__(self, z0: np.ndarray, min_cutoff: float, beta: float, d_cutoff: float, scale: float = 1.0,
                 dtype=np.float64) -> None:
        self.scale = float(scale)
        self.x = np.asarray(z0, dtype=dtype).reshape(-1).copy()
        self.dx = np.zeros_like(self.x)
        self.min_cutoff, self.beta, self.d_cutoff = float(min_cutoff), float(beta), float(d_cutoff)
        self._dt = 0.0

    @property
    def n(self) -> int:
        return self.x.shape[0]

    @property
    def value(self) -> np.ndarray:
        return self.x

    def predict(self, dt: float) -> None:
        if not (dt > 0 and np.isfinite(dt)):
            raise ValueError(f"time step must be a positive number of seconds, not {dt}")
        self._dt += float(dt)

    def update(self, z: np.ndarray) -> None:
        z = np.asarray(z).reshape(-1)
        if z.shape[0] != self.n:
            raise ValueError(f"measurement has {z.shape[0]} values, the filter tracks {self.n}")
        dt, self._dt = self._dt, 0.0
        if dt <= 0:
            raise ValueError("OneEuroBank.update needs a predict(dt) first")
        speed = (z - self.x) / dt
        self.dx += _alpha(dt, self.d_cutoff) * (speed - self.dx)
        a = _alpha(dt, self.min_cutoff + (self.beta / self.scale) * np.abs(self.dx))
        self.x += a * (z - self.x)
