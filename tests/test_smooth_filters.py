"""The vectorised filters of the smooth stage against filterpy, run once per coordinate."""
from __future__ import annotations

import numpy as np
import pytest
from filterpy.common import Q_discrete_white_noise
from filterpy.kalman import KalmanFilter

from stages.smooth_filters import KalmanBank, OneEuroBank, kinematic_model, rts_backward


def _filterpy(order, z0, r, v0, a0):
    kf = KalmanFilter(dim_x=order, dim_z=1)
    kf.x = np.zeros((order, 1))
    kf.x[0, 0] = z0
    kf.H = np.zeros((1, order))
    kf.H[0, 0] = 1.0
    kf.R = np.array([[r * r]])
    kf.P = np.diag([r * r, v0 * v0, a0 * a0][:order])
    return kf


def _sequence(rng, steps, n):
    dts = rng.uniform(0.02, 0.06, size=steps)  # irregular frame times, as with real PTS
    zs = np.cumsum(rng.normal(size=(steps, n)), axis=0) * 0.1 + rng.normal(size=(steps, n))
    measured = rng.random(steps) > 0.25  # some steps coast (predict only)
    measured[0] = True
    return dts, zs, measured


@pytest.mark.parametrize("order", [2, 3])
def test_kalman_bank_equals_filterpy_per_coordinate(order):
    rng = np.random.default_rng(order)
    steps, n, q, r, v0, a0 = 40, 7, 2.5, 0.3, 1.5, 4.0
    dts, zs, measured = _sequence(rng, steps, n)

    bank = KalmanBank(zs[0], order, q, r, v0, a0)
    ours = [bank.value.copy()]
    records = [bank.step_record()]
    for t in range(1, steps):
        bank.predict(dts[t])
        if measured[t]:
            bank.update(zs[t])
        ours.append(bank.value.copy())
        records.append(bank.step_record())
    ours = np.array(ours)
    smoothed = np.array([x[0] for x in rts_backward(records)])

    for c in range(n):
        kf = _filterpy(order, zs[0, c], r, v0, a0)
        xs, Ps, Fs, Qs = [kf.x.copy()], [kf.P.copy()], [np.eye(order)], [np.zeros((order, order))]
        for t in range(1, steps):
            kf.F = kinematic_model(order, dts[t], q)[0].copy()
            kf.Q = Q_discrete_white_noise(dim=order, dt=dts[t], var=q * q)
            kf.predict()
            if measured[t]:
                kf.update(zs[t, c])
            xs.append(kf.x.copy())
            Ps.append(kf.P.copy())
            Fs.append(kf.F.copy())
            Qs.append(kf.Q.copy())
        xs, Ps = np.array(xs), np.array(Ps)
        np.testing.assert_allclose(ours[:, c], xs[:, 0, 0], rtol=0, atol=1e-9)
        np.testing.assert_allclose(bank.P, Ps[-1], rtol=0, atol=1e-9)  # shared covariance
        rts_x, _, _, _ = kf.rts_smoother(xs, Ps, Fs, Qs)
        np.testing.assert_allclose(smoothed[:, c], rts_x[:, 0, 0], rtol=0, atol=1e-9)
        # the smoother really changed something (the test would not pass with a no-op backward pass)
        assert np.abs(rts_x[:-1, 0, 0] - xs[:-1, 0, 0]).max() > 1e-3


def test_transition_matches_constant_velocity_and_acceleration():
    F2, _ = kinematic_model(2, 0.5, 1.0)
    np.testing.assert_array_equal(F2, [[1, 0.5], [0, 1]])
    F3, _ = kinematic_model(3, 0.5, 1.0)
    np.testing.assert_allclose(F3, [[1, 0.5, 0.125], [0, 1, 0.5], [0, 0, 1]])
    with pytest.raises(ValueError, match="time step"):
        kinematic_model(2, 0.0, 1.0)


def _one_euro_scalar(zs, dt, min_cutoff, beta, d_cutoff):
    """Textbook scalar One Euro (Casiez et al. 2012, reference pseudo-code)."""
    def alpha(cutoff):
        tau = 1.0 / (2 * np.pi * cutoff)
        return 1.0 / (1.0 + tau / dt)
    x, dx, out = zs[0], 0.0, [zs[0]]
    for z in zs[1:]:
        edx = (z - x) / dt
        dx = dx + alpha(d_cutoff) * (edx - dx)
        a = alpha(min_cutoff + beta * abs(dx))
        x = x + a * (z - x)
        out.append(x)
    return np.array(out)


def test_one_euro_bank_equals_scalar_filter_per_coordinate():
    rng = np.random.default_rng(3)
    zs = np.cumsum(rng.normal(size=(50, 5)), axis=0)
    bank = OneEuroBank(zs[0], min_cutoff=1.2, beta=0.05, d_cutoff=1.0)
    out = [bank.value.copy()]
    for z in zs[1:]:
        bank.predict(1 / 30)
        bank.update(z)
        out.append(bank.value.copy())
    out = np.array(out)
    for c in range(5):
        np.testing.assert_allclose(out[:, c], _one_euro_scalar(zs[:, c], 1 / 30, 1.2, 0.05, 1.0), atol=1e-12)
    assert np.abs(out - zs).max() > 1e-3  # it filtered


def test_kalman_bank_rejects_a_measurement_of_the_wrong_size():
    bank = KalmanBank(np.zeros(4), 2, 1.0, 1.0, 1.0)
    bank.predict(0.033)
    with pytest.raises(ValueError, match="4"):
        bank.update(np.zeros(5))
