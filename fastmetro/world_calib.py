"""Calibrating a static camera from the persons it sees: the world's up direction, the camera's height over
the floor and, where it can be observed, the focal length (numpy only; docs/world.md).

Each standing person gives a foot point on the floor (the bottom of their box) and a head point straight
above it (the top), at a height drawn from a body-height prior (or the mesh's own, when meshes are trusted).
For a camera (pitch, roll, focal) with its height as the unit, the foot point back-projects onto the floor,
the vertical line through it meets the head's ray at the person's height in camera heights, and that height
is the same in every frame of a track; the fit finds the camera under which it is (a least-squares fit of
the head's image row, robust: IRLS with Cauchy weights, tracks whose height or fit stand out dropped), and
the camera height follows from the prior: height = body height / the persons' height in camera heights.

A nearly level camera does not determine the focal (the image of a vertical line does not shorten with
distance differently at another focal): the fit reports `focal_estimated = False` and keeps the focal it
was given, when the focal's standard error is over `max_focal_sd` (relative) or the camera looks down by
less than `min_pitch_deg`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from .world import CameraModel, pitch_roll_deg, up_from_pitch_roll

BODY_HEIGHT = 1.70  # metres: the mean of adult men's and women's standing heights, with shoes
MIN_ASPECT = 1.6  # box height / width below this: not a standing person (sitting, lying, a false box)
BORDER_PX = 2.0
HEIGHT_OUTLIER = 0.1  # a track whose height is off the median by more than this (log) is left out
FOOT_OFFSET = 0.08  # body heights from the box's bottom (the nearer sole) to the point under the head  # a box this close to the frame's edge is cut: its foot or head is not in view


@dataclass
class Observations:
    """What the persons give, one row per person-frame."""

    foot: np.ndarray  # (N, 2) frame pixels: the bottom centre of the box
    head: np.ndarray  # (N, 2) frame pixels: the top centre of the box
    track: np.ndarray  # (N,) track ids
    frame: np.ndarray  # (N,) frame indices
    mesh_up: Optional[np.ndarray] = None  # (N, 3) the body's up (feet to head) in the camera frame, when trusted
    mesh_height: Optional[np.ndarray] = None  # (N,) the body's metric height, when trusted

    def __len__(self) -> int:
        return len(self.track)

    def take(self, idx) -> "Observations":
        return Observations(self.foot[idx], self.head[idx], self.track[idx], self.frame[idx],
                            None if self.mesh_up is None else self.mesh_up[idx],
                            None if self.mesh_height is None else self.mesh_height[idx])

    @staticmethod
    def concat(parts: Sequence["Observations"]) -> "Observations":
        parts = [p for p in parts if len(p)]
        if not parts:
            return empty_observations()
        mesh = all(p.mesh_up is not None for p in parts)
        return Observations(np.concatenate([p.foot for p in parts]), np.concatenate([p.head for p in parts]),
                            np.concatenate([p.track for p in parts]), np.concatenate([p.frame for p in parts]),
                            np.concatenate([p.mesh_up for p in parts]) if mesh else None,
                            np.concatenate([p.mesh_height for p in parts]) if mesh else None)


def empty_observations() -> Observations:
    z2 = np.zeros((0, 2))
    return Observations(z2, z2.copy(), np.zeros(0, np.int64), np.zeros(0, np.int64))


def observations_from_boxes(boxes, tracks, frames, frame_wh: tuple[int, int], joints_h36m=None) -> Observations:
    """Observations from tight boxes (N, 4) x1, y1, x2, y2 with their track ids and frame indices. Boxes cut
    by the frame's edge and boxes too wide to be a standing person are left out. joints_h36m (N, 17, 3),
    body-relative in the camera frame, adds the mesh's up direction and height (use only trusted meshes)."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    tracks = np.asarray(tracks).reshape(-1)
    frames = np.asarray(frames).reshape(-1)
    w, h = frame_wh
    bw, bh = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    keep = ((b[:, 0] > BORDER_PX) & (b[:, 1] > BORDER_PX) & (b[:, 2] < w - BORDER_PX) & (b[:, 3] < h - BORDER_PX)
            & (bh > 0) & (bh >= MIN_ASPECT * np.maximum(bw, 1e-9)) & np.isfinite(b).all(1))
    xc = (b[:, 0] + b[:, 2]) / 2
    foot = np.stack([xc, b[:, 3]], 1)[keep]
    head = np.stack([xc, b[:, 1]], 1)[keep]
    mesh_up = mesh_height = None
    if joints_h36m is not None:
        j = np.asarray(joints_h36m, dtype=np.float64).reshape(-1, 17, 3)[keep]
        ankles = (j[:, 3] + j[:, 6]) / 2
        v = j[:, 10] - ankles
        mesh_height = np.linalg.norm(v, axis=1) + 0.055 * 1.7 + 0.08  # head top over the head joint, soles
        mesh_up = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-9)
    return Observations(foot, head, tracks[keep].astype(np.int64), frames[keep].astype(np.int64), mesh_up, mesh_height)


@dataclass
class _Fit:
    params: np.ndarray  # the problem's parameters (pitch or horizon, roll, log focal)
    r: np.ndarray  # (N,) head row residuals, in box heights
    hk: np.ndarray  # (N,) the track's height (camera heights) of each observation
    hi: np.ndarray  # (N,) each observation's own height
    cost: float


class _Problem:
    def __init__(self, obs: Observations, frame_wh, shrink: float = 5.0):
        self.obs = obs
        self.c = np.array([frame_wh[0] / 2.0, frame_wh[1] / 2.0])
        self.box_h = np.maximum(obs.foot[:, 1] - obs.head[:, 1], 1.0)
        self.tracks, self.tinv = np.unique(obs.track, return_inverse=True)
        self.shrink = shrink
        # Boxes alone fix the horizon's row, not pitch and focal apart: parameters (f tan(pitch) / diagonal,
        # roll, log focal) put that valley along the focal's axis, where the fit walks it in a few steps.
        self.horizon = False
        self.diag = math.hypot(*frame_wh)

    def pitch(self, params) -> float:
        """The parameters' pitch, radians."""
        if self.horizon:
            return math.atan(params[0] * self.diag / math.exp(params[2]))
        return float(params[0])

    def params(self, pitch: float, roll: float, logf: float) -> np.ndarray:
        first = math.tan(pitch) * math.exp(logf) / self.diag if self.horizon else pitch
        return np.array([first, roll, logf])

    def evaluate(self, params, w: np.ndarray, fixed_height: Optional[float] = None) -> _Fit:
        _, roll, logf = params
        pitch = self.pitch(params)
        f = math.exp(logf)
        u = up_from_pitch_roll(math.degrees(pitch), math.degrees(roll))
        o = self.obs
        df = np.concatenate([(o.foot - self.c) / f, np.ones((len(o), 1))], 1)
        dh = np.concatenate([(o.head - self.c) / f, np.ones((len(o), 1))], 1)
        den = df @ u
        valid = den < -1e-4
        lam = np.where(valid, -1.0 / np.where(valid, den, -1.0), 0.0)
        P = df * lam[:, None]
        # The box's bottom is the nearer sole: the point under the head lies FOOT_OFFSET body heights further
        # from the camera (a walker's feet spread along the floor). Two passes: the height, then the offset.
        away = P - (P @ u)[:, None] * u
        away /= np.maximum(np.linalg.norm(away, axis=1, keepdims=True), 1e-9)
        base = P
        for _ in range(2):
            ud, dd, uP, dP = dh @ u, (dh * dh).sum(1), base @ u, (dh * base).sum(1)
            det = np.maximum(dd - ud ** 2, 1e-12)
            hi = (-uP * dd + ud * dP) / det  # height (camera heights) where the head's ray passes the vertical
            hi = np.where(valid & np.isfinite(hi), hi, np.nan)
            # The track's height: a weighted mean of its rows, shrunk towards everyone's (a short track has little say).
            ww = w * valid * np.isfinite(hi)
            hsafe = np.nan_to_num(hi)
            glob = float((ww * hsafe).sum() / max(ww.sum(), 1e-9)) if ww.sum() > 0 else 0.5
            num = np.bincount(self.tinv, ww * hsafe, len(self.tracks)) + self.shrink * glob
            den_t = np.bincount(self.tinv, ww, len(self.tracks)) + self.shrink
            hk = (num / den_t)[self.tinv] if fixed_height is None else np.full(len(o), fixed_height)
            base = P + (FOOT_OFFSET * hk)[:, None] * away
        top = base + hk[:, None] * u
        z = np.maximum(top[:, 2], 1e-6)
        y_pred = f * top[:, 1] / z + self.c[1]
        r = (y_pred - o.head[:, 1]) / self.box_h
        r = np.where(valid & (top[:, 2] > 1e-3), r, 1.0)
        cost = float((w * r * r).sum())
        return _Fit(np.asarray(params, float), r, hk, hi, cost)

    def residual_vector(self, params, w):
        fit = self.evaluate(params, w)
        return np.sqrt(w) * fit.r, fit


def _lm(problem: _Problem, x0, w, free: np.ndarray, iters: int = 30):
    x = np.asarray(x0, float).copy()
    rv, fit = problem.residual_vector(x, w)
    cost = float(rv @ rv)
    mu = 1e-3
    eps = np.array([1e-4, 1e-4, 1e-4])
    J = None
    for _ in range(iters):
        J = np.zeros((len(rv), 3))
        for k in np.flatnonzero(free):
            dx = np.zeros(3)
            dx[k] = eps[k]
            J[:, k] = (problem.residual_vector(x + dx, w)[0] - rv) / eps[k]
        A = J.T @ J
        g = J.T @ rv
        improved = False
        for _ in range(8):
            Ad = A + mu * np.diag(np.diag(A) + 1e-9)
            Ad[~free, :] = 0
            Ad[:, ~free] = 0
            Ad[~free, ~free] = 1
            step = -np.linalg.solve(Ad, np.where(free, g, 0))
            xn = x + step
            if not problem.horizon:
                xn[0] = np.clip(xn[0], math.radians(-60), math.radians(89))
            xn[2] = np.clip(xn[2], math.log(50.0), math.log(1e6))
            rn, fn = problem.residual_vector(xn, w)
            cn = float(rn @ rn)
            if cn < cost:
                x, rv, fit, done = xn, rn, fn, cost - cn < 1e-7 * max(cost, 1e-12)
                cost, mu, improved = cn, mu * 0.3, True
                break
            mu *= 10
        if not improved or done:
            break
    return x, fit, cost, J


def calibrate(
    obs: Observations, frame_wh: tuple[int, int], focal: float, body_height: float = BODY_HEIGHT,
    min_pitch_deg: float = 5.0, max_focal_sd: float = 0.04, min_tracks: int = 3, min_rows: int = 30,
    mesh_weight: float = 0.0, state: str = "calibrated", start: Optional[CameraModel] = None,
    max_rows: int = 4000,
) -> Optional[CameraModel]:
    """The camera that makes every track's height constant (see the module's text), or None when the
    observations are too few (under `min_rows` person-frames or `min_tracks` tracks). `focal` is kept when
    the focal cannot be observed. mesh_weight > 0 takes the camera's tilt from the meshes' own up directions.
    start: a previous fit of the same camera to start from (no grid of starts: faster). Over `max_rows`
    person-frames, an evenly spread sample of them is fitted (frames close in time say nearly the same)."""
    if len(obs) < min_rows or len(np.unique(obs.track)) < min_tracks:
        return None
    seen = len(obs)
    if len(obs) > max_rows:
        obs = obs.take(np.linspace(0, len(obs) - 1, max_rows).round().astype(np.int64))
    w_, h_ = frame_wh
    prob = _Problem(obs, frame_wh)
    n = len(obs)
    w = np.ones(n)
    all_free = np.array([True, True, True])
    free = all_free
    mesh_up = None
    if mesh_weight > 0 and obs.mesh_up is not None:
        # The meshes' own up directions give the camera's tilt directly (a robust mean); the boxes give the rest.
        mesh_up = _robust_mean_direction(obs.mesh_up)
        pd, rd = pitch_roll_deg(mesh_up)
        free = np.array([False, False, True])
    else:
        prob.horizon = True
    # Starts: a coarse grid over pitch and focal, roll level; the best few refined.
    starts = []
    for pd_ in ((-10.0, 0.0, 8.0, 16.0, 25.0, 35.0, 50.0, 65.0) if mesh_up is None else (pd,)):
        for fr in (0.5, 0.8, 1.3, 2.0):
            x = prob.params(math.radians(pd_), 0.0 if mesh_up is None else math.radians(rd),
                            math.log(fr * math.hypot(w_, h_)))
            starts.append((prob.evaluate(x, w).cost, x))
    if start is not None:
        starts = [(0.0, prob.params(math.radians(start.pitch_deg) if mesh_up is None else math.radians(pd),
                                    math.radians(start.roll_deg) if mesh_up is None else math.radians(rd),
                                    math.log(start.extra.get("focal_fit", start.focal))))]
    starts.sort(key=lambda s: s[0])
    best = None
    for _, x0 in starts[:3]:
        x, fit, cost, _ = _lm(prob, x0, w, free)
        if best is None or cost < best[2]:
            best = (x, fit, cost)
    x = best[0]
    # IRLS: Cauchy weights on the rows, and tracks whose height or fit stand out dropped.
    for it in range(6):
        x_prev = x
        x, fit, cost, J = _lm(prob, x, w, free, iters=15)
        w = _robust_weights(prob, fit)
        if it >= 2 and np.abs(x - x_prev).max() < 1e-4:  # settled (1e-4 rad, 0.01 % focal)
            break
        if mesh_up is not None and (w > 0.3).sum() >= min_rows:  # the up of the persons that fit
            mesh_up = _robust_mean_direction(obs.mesh_up[w > 0.3])
            pd, rd = pitch_roll_deg(mesh_up)
            x = prob.params(math.radians(pd), math.radians(rd), x[2])
    x_free = x
    rv, _ = prob.residual_vector(x_free, w)
    focal_sd = _focal_sd(prob, x_free, w, rv, free)
    pitch_free = math.degrees(prob.pitch(x_free))
    estimated = bool(focal_sd < max_focal_sd and abs(pitch_free) >= min_pitch_deg)
    if not estimated:  # keep the given focal; fit pitch and roll alone
        fixed = np.array([True, True, False]) if mesh_up is None else np.array([False, False, False])
        x = np.array([x_free[0], x_free[1], math.log(focal)])  # boxes: the same horizon at the given focal
        for it in range(4):
            x, fit, cost, _ = _lm(prob, x, w, fixed, iters=20)
            w = _robust_weights(prob, fit)
    f_out = math.exp(x[2]) if estimated else float(focal)
    ok = (w > 0.05) & np.isfinite(fit.hi)
    hk_t = np.array([np.median(fit.hk[prob.tinv == k]) for k in range(len(prob.tracks))])
    used_t = np.bincount(prob.tinv, ok, len(prob.tracks)) > 0
    if not used_t.any():
        return None
    rel_h = float(np.median(hk_t[used_t]))
    if obs.mesh_height is not None and mesh_weight > 0:
        cam_h = float(np.median(obs.mesh_height[ok] / fit.hk[ok]))
    else:
        cam_h = body_height / rel_h
    resid = float(np.sqrt((w[ok] * fit.r[ok] ** 2).sum() / max(w[ok].sum(), 1e-9)))
    up = up_from_pitch_roll(math.degrees(prob.pitch(x)), math.degrees(x[1]))
    return CameraModel(
        focal=f_out, up=up, height=cam_h, width=int(w_), height_px=int(h_), focal_estimated=estimated,
        persons=int(used_t.sum()), frames=int(len(np.unique(obs.frame[ok]))), residual=resid, state=state,
        extra={"focal_sd": float(focal_sd), "focal_fit": float(math.exp(x_free[2])), "rows": int(ok.sum()),
               "rows_seen": int(seen)},
    )


def _robust_weights(prob: _Problem, fit: _Fit) -> np.ndarray:
    r = fit.r
    scale = max(1.4826 * float(np.median(np.abs(r))), 0.005)
    w = 1.0 / (1.0 + (r / (2.385 * scale)) ** 2)
    # Tracks: a height far from the others' (sitting, on stairs, a child) or a fit worse than most.
    k = len(prob.tracks)
    hk_t = np.bincount(prob.tinv, fit.hk, k) / np.maximum(np.bincount(prob.tinv, minlength=k), 1)
    med = float(np.median(hk_t))
    bad_h = np.abs(np.log(np.maximum(hk_t, 1e-9) / max(med, 1e-9))) > HEIGHT_OUTLIER
    tr = np.sqrt(np.bincount(prob.tinv, r * r, k) / np.maximum(np.bincount(prob.tinv, minlength=k), 1))
    bad_r = tr > 4.0 * max(float(np.median(tr)), 0.005)
    bad = (bad_h | bad_r)[prob.tinv]
    return np.where(bad, 0.0, w)


def _robust_mean_direction(v: np.ndarray) -> np.ndarray:
    """The mean of unit vectors (N, 3), rows far from it (over 3 median angles) down-weighted, repeated."""
    m = v.mean(0)
    for _ in range(5):
        m = m / np.linalg.norm(m)
        ang = np.arccos(np.clip(v @ m, -1, 1))
        s = max(float(np.median(ang)), 1e-3)
        wt = 1.0 / (1.0 + (ang / (2.385 * s)) ** 2)
        m = (v * wt[:, None]).sum(0)
    return m / np.linalg.norm(m)


def _focal_sd(prob: _Problem, x, w, rv, free=np.array([True, True, True])) -> float:
    """The relative standard error of the focal, from the fit's curvature (Gauss-Newton), with rows of one
    track counted as one look per second of video would not be: the errors are scaled by the rows' spread."""
    eps = 1e-4
    J = np.zeros((len(rv), 3))
    for k in range(3):
        dx = np.zeros(3)
        dx[k] = eps
        J[:, k] = (prob.residual_vector(x + dx, w)[0] - rv) / eps
    J = J[:, free]
    dof = max(int((w > 0.05).sum()) - 3, 1)
    s2 = float(rv @ rv) / dof
    try:
        cov = np.linalg.inv(J.T @ J) * s2
    except np.linalg.LinAlgError:
        return float("inf")
    v = float(cov[-1, -1])
    return math.sqrt(v) if v > 0 and np.isfinite(v) else float("inf")


def row_residuals(model: CameraModel, obs: Observations, body_height: float = BODY_HEIGHT) -> np.ndarray:
    """Each row's head-row error (box heights) under `model`, every person at `body_height`: how well the
    rows fit a camera already calibrated (a moved camera makes them grow)."""
    prob = _Problem(obs, (model.width, model.height_px), shrink=1e12)
    x = prob.params(math.radians(model.pitch_deg), math.radians(model.roll_deg), math.log(model.focal))
    # With an infinite shrink every track's height is the global one; pin it to the model's.
    fit = prob.evaluate(x, np.ones(len(obs)), fixed_height=body_height / model.height)
    return fit.r


class OnlineCalibrator:
    """A running calibration for a live run: rows come in per frame, the camera is refitted on a window of
    recent rows, `calibrating` until two fits in a row agree, then `calibrated` and held (refitted rarely);
    rows that stop fitting the held camera (it was moved or bumped) start a new calibration.

        cal = OnlineCalibrator((w, h), focal)
        model = cal.observe(boxes, tracks, frame_index)   # the camera in use, or None while calibrating
    """

    def __init__(self, frame_wh, focal: float, body_height: float = BODY_HEIGHT, use_mesh: bool = False,
                 window: int = 6000, fit_rows: int = 1500, refit_every: int = 400, hold_refit_every: int = 5000,
                 min_rows: int = 300, min_tracks: int = 4, check_rows: int = 200, moved_factor: float = 2.0,
                 seed: int = 0, background: bool = False) -> None:
        self.frame_wh = tuple(int(v) for v in frame_wh)
        self.focal, self.body_height, self.use_mesh = float(focal), float(body_height), use_mesh
        self.window, self.fit_rows, self.refit_every = window, fit_rows, refit_every
        self.hold_refit_every, self.min_rows, self.min_tracks = hold_refit_every, min_rows, min_tracks
        self.check_rows, self.moved_factor = check_rows, moved_factor
        self.rng = np.random.default_rng(seed)
        self.state = "calibrating"
        self.model: Optional[CameraModel] = None  # the camera in use (held while calibrated)
        self.moves = 0  # times the camera was found moved
        self.fits = 0
        self._parts: list[Observations] = []
        self._rows = 0
        self._since_fit = 0
        self._recent: list[Observations] = []
        self._recent_rows = 0
        self._baseline = float("nan")  # the rows' median |residual| when the camera was accepted
        self._last: Optional[CameraModel] = None
        # background: fits run in a worker thread (a fit takes 0.1-1 s; a live stage must not stall on it)
        # and their result is taken by the first observe() after it is ready.
        self.background = background
        self._pool = None
        self._pending = None  # (future, rows fitted, moves when submitted)

    def observe(self, boxes, tracks, frame_index: int, joints_h36m=None) -> Optional[CameraModel]:
        if self._pending is not None and self._pending[0].done():
            future, fitted, epoch = self._pending
            self._pending = None
            self._take(future.result(), fitted, epoch)
        obs = observations_from_boxes(boxes, tracks, np.full(len(tracks), frame_index), self.frame_wh,
                                      joints_h36m if self.use_mesh else None)
        if len(obs):
            self._parts.append(obs)
            self._rows += len(obs)
            self._since_fit += len(obs)
            while self._parts and self._rows - len(self._parts[0]) >= self.window:
                self._rows -= len(self._parts.pop(0))
            if self.state == "calibrated":
                self._check_moved(obs)
        every = self.refit_every if self.state == "calibrating" else self.hold_refit_every
        if self._since_fit >= every and self._rows >= self.min_rows and self._pending is None:
            self._refit()
        return self.model if self.state == "calibrated" else None

    def _sample(self) -> Observations:
        allobs = Observations.concat(self._parts)
        if len(allobs) > self.fit_rows:
            allobs = allobs.take(np.sort(self.rng.choice(len(allobs), self.fit_rows, replace=False)))
        return allobs

    def _refit(self) -> None:
        self._since_fit = 0
        obs = self._sample()
        args = (obs, self.frame_wh, self.focal, self.body_height)
        kw = dict(min_tracks=self.min_tracks, min_rows=min(self.min_rows, self.fit_rows),
                  mesh_weight=1.0 if self.use_mesh else 0.0, state="calibrated",
                  start=self.model if self.state == "calibrated" else self._last)
        if self.background:
            if self._pool is None:
                from concurrent.futures import ThreadPoolExecutor

                self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="world-fit")
            self._pending = (self._pool.submit(calibrate, *args, **kw), obs, self.moves)
            return
        self._take(calibrate(*args, **kw), obs, self.moves)

    def close(self) -> None:
        """Stop the worker thread (a fit in progress finishes first)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def _take(self, m: Optional[CameraModel], obs: Observations, epoch: int) -> None:
        """A fit's result: the camera found (two fits agreeing), kept (a refit agreeing), or passed over."""
        self.fits += 1
        if m is None or epoch != self.moves:  # too few rows, or fitted on rows of a camera since moved
            return
        if self.state == "calibrating":
            if self._last is not None and _agree(self._last, m):
                self.state = "calibrated"
                self._accept(m, obs)
            self._last = m
        else:  # held: a refit on more rows replaces it only when they agree (a drift, not a move)
            if _agree(self.model, m):
                self._accept(m, obs)

    def _accept(self, m: CameraModel, obs: Observations) -> None:
        self.model = m
        self._baseline = float(np.median(np.abs(row_residuals(m, obs, self.body_height))))
        self._recent, self._recent_rows = [], 0

    def _check_moved(self, obs: Observations) -> None:
        self._recent.append(obs)
        self._recent_rows += len(obs)
        if self._recent_rows < self.check_rows:
            return
        recent = Observations.concat(self._recent)
        self._recent, self._recent_rows = [], 0
        err = float(np.median(np.abs(row_residuals(self.model, recent, self.body_height))))
        if err > self.moved_factor * self._baseline + 0.03:
            # Moved: forget the rows from before (they belong to the old camera) and calibrate again.
            self.moves += 1
            self.state = "calibrating"
            self._parts = [recent]
            self._rows = len(recent)
            self._since_fit = len(recent)
            self._last = None
            self.model = None

    def status(self) -> dict:
        return {"state": self.state, "rows": self._rows, "fits": self.fits, "moves": self.moves}


def _agree(a: CameraModel, b: CameraModel, up_deg: float = 1.0, height: float = 0.04, focal: float = 0.05) -> bool:
    ang = math.degrees(math.acos(float(np.clip(a.up @ b.up, -1.0, 1.0))))
    return (ang <= up_deg and abs(math.log(b.height / a.height)) <= height
            and abs(math.log(b.focal / a.focal)) <= focal and a.focal_estimated == b.focal_estimated)
