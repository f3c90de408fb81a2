"""Feet on the floor: per foot and frame a contact flag from the foot's height above the floor and its speed,
and offline foot locking of the humanoid skeleton in the world frame (docs/world.md).

    from fastmetro import feet
    contact = feet.contact_flags(ankles, times)                 # (F, 2) bool, left and right; ankles (F, 2, 3) world
    pose_w = feet.pose_to_world(pose, world_from_camera)        # a humanoid pose (camera's y-up frame) -> the world
    locked = feet.lock_feet(pose_w, contact)                    # LockResult: .pose, .weights, .root_shift

World frame: right-handed, +Y up, metres, the floor at y = 0. A foot's *sole height* is the height of its
sole above the floor, from its ankle (and toes, when known): min(ankle.y - ANKLE_HEIGHT, toes.y -
TOES_HEIGHT), the two constants measured on the SMPL template standing flat.

Contact (`contact_flags`, offline; `ContactDetector`, online and causal): a foot is in contact while it is
near the floor and nearly still. The body's quick common wobble (depth noise moves every joint alike) is
taken off the feet first (`steady`: the root less its smoothed self). Heights are taken above the person's
own floor level (a low percentile of the lower foot's sole height over a sliding window), so a calibration
whose floor is a few centimetres off still finds the steps; speeds are horizontal, the slope of a local
linear fit (over more frames where the positions are noisier, `position_noise`), and the speed thresholds
rise above what a standing foot shows through the noise. Hysteresis: a foot enters contact when its sole
is below `height_on` and its speed below `speed_on`, and leaves when it rises above `height_off` or moves
faster than `speed_off`; offline, contacts and gaps shorter than `min_frames` are dropped and filled. The
defaults (`ContactThresholds`; live: `ONLINE_THRESHOLDS`) are for walking at 25-60 fps.

Foot locking (`lock_feet` for the humanoid skeleton, `lock_joints` for Human3.6M joints; offline, as
motion-capture clean-up tools do): over each contact span the foot's ankle is held at one horizontal place
(the span's median) with its sole on the floor (y = 0); before and after the span the hold blends in and
out over `blend` frames (drawn to the same spot, its height its own plus the correction it got at the
span's edge, so a lifting foot still lifts). The root (Hips) moves by the mean of what the feet held need,
smoothed over time (so the body stands on the floor and does not drift off its stance foot), then a
two-bone IK on each leg (UpperLeg, LowerLeg, ankle) puts each ankle on its target, bending the knee in its
own plane; each foot keeps its orientation in the world; what a leg cannot reach is left to the root's next
shift (a few passes). No foot goes below the floor, in contact or not. Bone lengths do not change.

Live, for avatars (`FloorOffset`): the lowest foot's height taken off the root while a foot is down.
Numpy only.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from . import humanoid as hu

__all__ = [
    "ANKLE_HEIGHT", "TOES_HEIGHT", "ContactThresholds", "ONLINE_THRESHOLDS", "ContactDetector", "FloorOffset", "LockResult",
    "contact_flags", "sole_height", "foot_speed", "position_noise", "pose_to_world", "lock_feet", "lock_joints", "ground_shift", "two_bone_ik", "slide_speed",
    "FOOT_BONES", "LEG_BONES",
]

# Heights above the sole of a foot standing flat, measured on the SMPL template (mesh_downsampling.npz: lowest
# vertex y -1.1207; Human3.6M ankles -1.0149 and -1.0055; toe points, the Toes joint, -1.1078 and -1.1101).
ANKLE_HEIGHT = 0.105  # metres: the ankle joint (H36M ankle, humanoid Foot)
TOES_HEIGHT = 0.012  # metres: the humanoid Toes joint (mid of the big and small toe tips)

FOOT_BONES = (hu.BONES.index("LeftFoot"), hu.BONES.index("RightFoot"))
TOES_BONES = (hu.BONES.index("LeftToes"), hu.BONES.index("RightToes"))
# per side: upper leg (its joint is the hip), lower leg (the knee), foot (the ankle)
LEG_BONES = ((hu.BONES.index("LeftUpperLeg"), hu.BONES.index("LeftLowerLeg"), hu.BONES.index("LeftFoot")),
             (hu.BONES.index("RightUpperLeg"), hu.BONES.index("RightLowerLeg"), hu.BONES.index("RightFoot")))
# Human3.6M ankles (the stream's joints_h36m order): left, right
H36M_ANKLES = (6, 3)


@dataclass(frozen=True)
class ContactThresholds:
    """When a foot counts as in contact. Heights in metres above the person's floor level, speeds in m/s."""

    height_on: float = 0.05  # enter contact: sole below this ...
    speed_on: float = 0.40  # ... and horizontal speed below this
    height_off: float = 0.09  # leave contact: sole above this, or
    speed_off: float = 0.80  # horizontal speed above this
    min_frames: int = 3  # contacts shorter than this are dropped, gaps shorter than this filled (offline)
    speed_window_s: float = 0.1  # half width of the local linear fit giving speed and height (at least) ...
    speed_noise: float = 0.15  # ... widened (offline) until the noise left on the speed is about this, m/s
    max_window_s: float = 0.25  # ... up to this half width
    floor_window_s: float = 0.5  # the floor level: half width of the window ...
    floor_percentile: float = 20.0  # ... and the percentile of the lower foot's sole height in it

    def __post_init__(self):
        if not (0 < self.height_on <= self.height_off and 0 < self.speed_on <= self.speed_off):
            raise ValueError("contact thresholds: need 0 < height_on <= height_off and 0 < speed_on <= speed_off")


# Live (ContactDetector): no frame ahead to average over, so the noise left on the speed is allowed higher
# and the height band is wider (on the synthetic scene of fastmetro.world_synth, live Kalman-smoothed fields:
# 78 % agreement with the true contacts against 72 % with the offline defaults).
ONLINE_THRESHOLDS = ContactThresholds(height_on=0.08, height_off=0.12, speed_noise=0.3)


def sole_height(ankles: np.ndarray, toes: Optional[np.ndarray] = None) -> np.ndarray:
    """(...) height of the sole above y = 0 from ankle points (..., 3) and, when given, toes points (..., 3)."""
    h = np.asarray(ankles, np.float64)[..., 1] - ANKLE_HEIGHT
    if toes is not None:
        h = np.minimum(h, np.asarray(toes, np.float64)[..., 1] - TOES_HEIGHT)
    return h


def _times(times: Optional[np.ndarray], n: int, fps: float) -> np.ndarray:
    if times is None:
        return np.arange(n) / float(fps)
    t = np.asarray(times, np.float64).reshape(n)
    if not np.all(np.isfinite(t)) or np.any(np.diff(t) <= 0):
        raise ValueError("contact: times must be finite and increasing (seconds)")
    return t


def _local_fit(values: np.ndarray, times: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares line through the samples within +-k frames of each frame (fewer at the ends), by
    prefix sums: (its value at the frame, its slope), for values (F, ...) at times (F,)."""
    v = np.asarray(values, np.float64)
    t = np.asarray(times, np.float64)
    n = len(t)
    lo = np.clip(np.arange(n) - k, 0, n - 1)
    hi = np.clip(np.arange(n) + k, 0, n - 1)
    tc = t - t[0]
    ext = (slice(None),) + (None,) * (v.ndim - 1)

    def window(x):
        c = np.concatenate([np.zeros((1,) + x.shape[1:]), np.cumsum(x, 0)])
        return c[hi + 1] - c[lo]

    m, st, st2 = window(np.ones(n)), window(tc), window(tc * tc)
    sv, stv = window(v), window(tc[ext] * v)
    den = (m * st2 - st * st)[ext]
    slope = (m[ext] * stv - st[ext] * sv) / np.where(np.abs(den) > 1e-12, den, np.inf)
    value = (sv - slope * st[ext]) / m[ext] + slope * tc[ext]
    return value, slope


def foot_speed(points: np.ndarray, times: np.ndarray, half_window_s: float = 0.1) -> np.ndarray:
    """(F, ...) horizontal speed (m/s) of points (F, ..., 3) at times (F,): the slope of a least-squares line
    through the samples within +-half_window_s (at least one neighbour each side)."""
    t = np.asarray(times, np.float64)
    if len(t) < 2:
        return np.zeros(np.shape(points)[:-1])
    k = max(1, int(round(half_window_s / float(np.median(np.diff(t))))))
    return np.linalg.norm(_local_fit(np.asarray(points, np.float64)[..., [0, 2]], t, k)[1], axis=-1)


def position_noise(points: np.ndarray) -> float:
    """Robust standard deviation (metres) of frame-to-frame noise on points (F, ..., 3): the median absolute
    second difference (a still or steadily moving point has none) scaled to a Gaussian's sigma."""
    p = np.asarray(points, np.float64)
    if len(p) < 3:
        return 0.0
    d2 = p[2:] - 2 * p[1:-1] + p[:-2]
    return float(1.4826 * np.median(np.abs(d2)) / np.sqrt(6.0))


def _rolling_percentile(x: np.ndarray, half: int, q: float) -> np.ndarray:
    n = len(x)
    if n <= 2 * half + 1:
        return np.full(n, np.percentile(x, q))
    win = np.lib.stride_tricks.sliding_window_view(np.pad(x, half, mode="edge"), 2 * half + 1)
    return np.percentile(win, q, axis=1)


def _hysteresis(enter: np.ndarray, leave: np.ndarray) -> np.ndarray:
    """(F, ...) state: on after an `enter`, off after a `leave`, held in between (off at the start)."""
    event = np.where(enter, 1, np.where(leave, -1, 0))
    idx = np.where(event != 0, np.arange(len(event)).reshape((-1,) + (1,) * (event.ndim - 1)), -1)
    idx = np.maximum.accumulate(idx, axis=0)
    last = np.take_along_axis(event, np.maximum(idx, 0), axis=0)
    return (idx >= 0) & (last == 1)


def _runs(flags: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) of each run of True in a 1-D bool array."""
    d = np.diff(np.concatenate([[0], flags.astype(np.int8), [0]]))
    return list(zip(np.nonzero(d == 1)[0].tolist(), np.nonzero(d == -1)[0].tolist()))


def _clean(flags: np.ndarray, min_frames: int) -> np.ndarray:
    """Fill gaps shorter than min_frames between contacts, then drop contacts shorter than min_frames."""
    out = flags.copy()
    if min_frames <= 1:
        return out
    for a, b in _runs(~out):
        if 0 < a and b < len(out) and b - a < min_frames:
            out[a:b] = True
    for a, b in _runs(out):
        if b - a < min_frames:
            out[a:b] = False
    return out


def steady(points: np.ndarray, root: np.ndarray, times: np.ndarray, sigma_s: float = 0.5) -> np.ndarray:
    """points (F, ..., 3) less the root's (F, 3) quick wobble (the root less its Gaussian-smoothed self):
    a whole body jittered by noisy depth moves every joint alike, the feet standing still included."""
    root = np.asarray(root, np.float64)
    dt = float(np.median(np.diff(times))) if len(times) > 1 else 1.0
    smooth, _ = _gauss_smooth(root, np.ones(len(root)), sigma_s / dt, edge=True)
    ext = (slice(None),) + (None,) * (np.ndim(points) - 2) + (slice(None),)
    return np.asarray(points, np.float64) - (root - smooth)[ext]


def contact_flags(ankles: np.ndarray, times: Optional[np.ndarray] = None, toes: Optional[np.ndarray] = None,
                  root: Optional[np.ndarray] = None, fps: float = 30.0,
                  thresholds: ContactThresholds = ContactThresholds()) -> np.ndarray:
    """(F, 2) contact of the left and right foot at each of F frames (offline: the whole track at once).

    ankles (F, 2, 3) world positions (left, right); times (F,) seconds (None: frames at `fps`); toes
    (F, 2, 3) the humanoid Toes joints when known; root (F, 3) the pelvis, when given its quick wobble is
    taken off the feet first (`steady`: depth noise moves the whole body)."""
    a = np.asarray(ankles, np.float64)
    if a.ndim != 3 or a.shape[1:] != (2, 3):
        raise ValueError(f"contact_flags: ankles must be (F, 2, 3), got {a.shape}")
    n = len(a)
    if n == 0:
        return np.zeros((0, 2), bool)
    t = _times(times, n, fps)
    th = thresholds
    if root is not None:
        wobble = steady(np.zeros((n, 1, 3)), root, t)
        a = a + wobble
        toes = None if toes is None else np.asarray(toes, np.float64) + wobble
    dt = float(np.median(np.diff(t))) if n > 1 else 1.0 / fps
    # the fit's half width: the slope of a line through m = 2k + 1 samples with noise sigma has a standard
    # deviation of sigma sqrt(12 / (m^3 - m)) / dt
    sigma = position_noise(a)
    m = np.cbrt(12.0 * sigma ** 2 / (dt * th.speed_noise) ** 2)
    k = int(np.clip(np.ceil((m - 1) / 2), round(th.speed_window_s / dt), round(th.max_window_s / dt)))
    k = max(k, 1)
    fit = a if toes is None else np.concatenate([a, toes], 1)
    value, slope = _local_fit(fit, t, k) if n > 1 else (fit, np.zeros_like(fit))
    sole = sole_height(value[:, :2], None if toes is None else value[:, 2:])
    floor = _rolling_percentile(sole.min(1), max(1, int(round(th.floor_window_s / dt))), th.floor_percentile)
    rel = sole - floor[:, None]
    speed = np.linalg.norm(slope[:, :2, [0, 2]], axis=-1)
    # the speed a standing foot shows through the noise: the slower foot's median (one foot is nearly always
    # down); the speed thresholds rise above it where the noise is large
    still = float(np.median(speed.min(1)))
    speed_on, speed_off = max(th.speed_on, 2.0 * still), max(th.speed_off, 3.0 * still)
    state = _hysteresis((rel < th.height_on) & (speed < speed_on), (rel > th.height_off) | (speed > speed_off))
    return np.stack([_clean(state[:, f], th.min_frames) for f in range(2)], 1)


def slide_speed(points: np.ndarray, contact: np.ndarray, times: Optional[np.ndarray] = None,
                fps: float = 30.0) -> float:
    """Mean horizontal speed (m/s) of points (F, 2, 3) between consecutive frames that are both in contact
    (F, 2): how much the feet slide while they should stand still."""
    p = np.asarray(points, np.float64)[..., [0, 2]]
    t = _times(times, len(p), fps)
    c = np.asarray(contact, bool)
    both = c[1:] & c[:-1]
    if not both.any():
        return 0.0
    v = np.linalg.norm(np.diff(p, axis=0), axis=-1) / np.diff(t)[:, None]
    return float(v[both].mean())


def _line_end(t: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares line through values v (n, ...) at times t (n,): (its value at t[-1], its slope)."""
    n = len(t)
    tc = t - t.sum() / n
    flat = v.reshape(n, -1)
    mean = flat.sum(0) / n
    slope = (tc @ flat) / max(float(tc @ tc), 1e-12)  # sum of tc (v - mean) = sum of tc v
    return (mean + slope * tc[-1]).reshape(v.shape[1:]), slope.reshape(v.shape[1:])


class ContactDetector:
    """Online contact flags, causal (what a live stream can know at each frame): per person (any hashable key)
    its last second of ankles. The same steps as `contact_flags`, each from the past only: the root's quick
    wobble off the feet (the root less a line through its last 0.5 s), speed and height from a line through
    the last samples (more of them where the noise is larger, up to `max_window_s`), the floor level from
    the last `floor_window_s` seconds, the speed thresholds above the standing foot's noise of the last two
    seconds, and the hysteresis (without the gap filling, which needs the future). Keys not updated for
    `forget_s` seconds are dropped."""

    HISTORY_S = 2.0

    def __init__(self, thresholds: ContactThresholds = ONLINE_THRESHOLDS, forget_s: float = 5.0) -> None:
        self.th = thresholds
        self.forget_s = forget_s
        self._state: dict = {}

    def update(self, key, t: float, ankles: np.ndarray, toes: Optional[np.ndarray] = None,
               root: Optional[np.ndarray] = None) -> np.ndarray:
        """(2,) contact of the left and right foot now; ankles (2, 3) world, toes (2, 3) when known, root (3,)
        the pelvis (when given, its wobble is taken off the feet), t seconds."""
        th = self.th
        t = float(t)
        pts = np.asarray(ankles, np.float64).reshape(2, 3)
        if toes is not None:
            pts = np.concatenate([pts, np.asarray(toes, np.float64).reshape(2, 3)])
        st = self._state.get(key)
        if st is None or t <= st["t"][st["n"] - 1] or t - st["t"][st["n"] - 1] > self.forget_s \
                or st["pts"].shape[1] != len(pts):
            st = self._state[key] = {"t": np.zeros(256), "root": np.full((256, 3), np.nan),
                                     "pts": np.zeros((256, len(pts), 3)), "low": np.zeros(256), "still": np.zeros(256),
                                     "n": 0, "on": np.zeros(2, bool), "noise_at": 0, "sigma": 0.0}
        n = st["n"]
        if n == len(st["t"]):  # full: keep the last HISTORY_S seconds
            keep = int(np.searchsorted(st["t"][:n], t - self.HISTORY_S))
            keep = max(keep, n // 2)
            for name in ("t", "root", "pts", "low", "still"):
                st[name][: n - keep] = st[name][keep:n]
            n -= keep
        st["t"][n] = t
        st["root"][n] = np.nan if root is None else np.asarray(root, np.float64).reshape(3)
        n += 1
        st["n"] = n
        tt = st["t"][:n]
        start = int(np.searchsorted(tt, t - self.HISTORY_S))
        if root is not None:
            first = int(np.searchsorted(tt, t - 0.5))
            roots = st["root"][first:n]
            if len(roots) >= 3 and not np.isnan(roots).any():
                fit, _ = _line_end(tt[first:], roots)
                pts = pts + (fit - roots[-1])
        st["pts"][n - 1] = pts
        low = float(np.min(pts[:2, 1]) - ANKLE_HEIGHT)
        if toes is not None:
            low = min(low, float(np.min(pts[2:, 1])) - TOES_HEIGHT)
        st["low"][n - 1] = low
        dt = (tt[-1] - tt[start]) / (n - 1 - start) if n - 1 > start else 1.0 / 30
        recent = max(n - int(np.ceil(th.max_window_s * 4 / dt)), start)
        hist = st["pts"][recent:n]  # steadied as known at each frame
        if len(hist) >= 5 and st["noise_at"] <= 0:  # the noise changes slowly: measured every 5th frame
            st["sigma"], st["noise_at"] = position_noise(hist), 5
        st["noise_at"] -= 1
        m = np.cbrt(12.0 * st["sigma"] ** 2 / (dt * th.speed_noise) ** 2)
        k = int(np.clip(np.ceil(m), round(th.speed_window_s / dt) + 1, round(2 * th.max_window_s / dt) + 1))
        k = min(max(k, 2), n - start)
        if k >= 2:
            value, slope = _line_end(tt[n - k:], st["pts"][n - k:n])
        else:
            value, slope = pts, np.zeros_like(pts)
        speed = np.hypot(slope[:2, 0], slope[:2, 2])
        sole = sole_height(value[:2], value[2:] if toes is not None else None)
        lows = np.sort(st["low"][int(np.searchsorted(tt, t - th.floor_window_s)):n])
        floor = lows[int(round(th.floor_percentile / 100.0 * (len(lows) - 1)))]
        st["still"][n - 1] = speed.min()
        stills = np.sort(st["still"][start:n])
        still = float(stills[len(stills) // 2])
        speed_on, speed_off = max(th.speed_on, 2.0 * still), max(th.speed_off, 3.0 * still)
        rel = sole - floor
        enter = (rel < th.height_on) & (speed < speed_on)
        leave = (rel > th.height_off) | (speed > speed_off)
        st["on"] = np.where(enter, True, np.where(leave, False, st["on"]))
        if len(self._state) > 1 and (t - st.get("swept", -1e9)) > 1.0:  # now and then: forget the departed
            st["swept"] = t
            for key2 in [k2 for k2, s2 in self._state.items() if t - s2["t"][s2["n"] - 1] > self.forget_s]:
                del self._state[key2]
        return st["on"].copy()

    def forget(self, key) -> None:
        self._state.pop(key, None)


class FloorOffset:
    """Online: how far a person's feet are off the floor (y = 0), per person: while a foot is in contact, the
    lowest foot's sole height (followed with a time constant `tau_s`; 0: at once, which also takes off the
    vertical part of per-frame depth noise), and while the lowest foot is within `near` of the floor as
    known; held otherwise (a jump). Subtracting it from the root's height
    puts the feet on the floor live (vertical only; horizontal locking needs the whole span: offline)."""

    def __init__(self, tau_s: float = 0.0, near: float = 0.05, forget_s: float = 5.0) -> None:
        self.tau_s, self.near, self.forget_s = tau_s, near, forget_s
        self._state: dict = {}

    def update(self, key, t: float, sole: np.ndarray, contact: np.ndarray) -> float:
        """The offset (metres, positive: the feet float) after this frame's sole heights (2,) and contact (2,)."""
        sole, contact = np.asarray(sole, np.float64), np.asarray(contact, bool)
        last = self._state.get(key)
        if last is not None and (t <= last[0] or t - last[0] > self.forget_s):
            last = None
        off = None if last is None else last[1]
        low = float(sole.min())
        # the lowest foot is the one on the floor while a foot is in contact (a lagging flag may still hold a
        # lifting foot) or while it is within `near` of the floor as known (between two flags)
        if contact.any() or (off is not None and low - off < self.near):
            h = low
            a = 1.0 if off is None or self.tau_s <= 0 else 1.0 - np.exp(-(t - last[0]) / self.tau_s)
            off = h if off is None else off + a * (h - off)
        elif off is None:
            off = float(min(sole.min(), 0.0))  # nothing known yet: only never below the floor
        self._state[key] = (float(t), off)
        for k in [k for k, s in self._state.items() if t - s[0] > self.forget_s]:
            del self._state[k]
        return off

    def forget(self, key) -> None:
        self._state.pop(key, None)


# ------------------------------------------------------------------------------------------ world pose
def pose_to_world(pose: hu.HumanoidPose, world_from_camera: np.ndarray) -> hu.HumanoidPose:
    """A humanoid pose in its y-up frame (the camera frame turned 180 degrees about X, fastmetro.humanoid)
    -> the world frame of a calibrated camera (world_from_camera (4, 4)): the root moves, the Hips' local
    rotation takes the camera's tilt, every other local rotation and every offset is unchanged."""
    t = np.asarray(world_from_camera, np.float64)
    m = t[:3, :3] @ hu.CAMERA_TO_YUP
    rot = np.array(pose.rotations, np.float64, copy=True)
    rot[:, 0] = hu.quat_from_matrix(m @ hu.quat_to_matrix(rot[:, 0]))
    root = np.asarray(pose.root, np.float64) @ m.T + t[:3, 3]
    return hu.HumanoidPose(rot, np.asarray(pose.offsets, np.float64), root)


def _world(pose: hu.HumanoidPose) -> tuple[np.ndarray, np.ndarray]:
    """World positions (F, B, 3) and rotation matrices (F, B, 3, 3) of the body's B bones (hu.BONES; bones
    a longer skeleton adds after them are left out)."""
    nb = len(hu.BONES)
    local = hu.quat_to_matrix(np.asarray(pose.rotations)[:, :nb])
    off = np.broadcast_to(np.asarray(pose.offsets)[..., :nb, :], local.shape[:-1])
    world = np.empty_like(local)
    pos = np.empty(local.shape[:-1])
    world[:, 0], pos[:, 0] = local[:, 0], pose.root
    for b in range(1, nb):
        p = hu.PARENTS[b]
        world[:, b] = world[:, p] @ local[:, b]
        pos[:, b] = pos[:, p] + (world[:, p] @ off[:, b, :, None])[..., 0]
    return pos, world


def _unit(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n = np.linalg.norm(v, axis=-1, keepdims=True)
    return v / np.maximum(n, 1e-12), n[..., 0]


def _axis_angle(axis: np.ndarray, angle: np.ndarray) -> np.ndarray:
    """(N, 3, 3) rotations about unit axes (N, 3) by angles (N,) (Rodrigues)."""
    x, y, z = axis[:, 0], axis[:, 1], axis[:, 2]
    zero = np.zeros_like(x)
    k = np.stack([zero, -z, y, z, zero, -x, -y, x, zero], -1).reshape(-1, 3, 3)
    s, c = np.sin(angle)[:, None, None], np.cos(angle)[:, None, None]
    return np.eye(3) + s * k + (1.0 - c) * (k @ k)


def _between(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """(N, 3, 3) the smallest rotation taking the directions u (N, 3) to v (N, 3)."""
    u, _ = _unit(u)
    v, _ = _unit(v)
    axis, s = _unit(np.cross(u, v))
    c = np.clip((u * v).sum(-1), -1.0, 1.0)
    return _axis_angle(axis, np.arctan2(s, c))


def two_bone_ik(hip: np.ndarray, knee: np.ndarray, ankle: np.ndarray, target: np.ndarray,
                bend_axis: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Analytic two-bone IK, vectorised: rotations (N, 3, 3) `swing` (about the hip, for the whole leg) and
    `bend` (about the knee, for the lower leg, applied first) that put the ankle on `target` (as near as the
    leg reaches) keeping both bone lengths. The knee bends in the leg's current plane; a straight leg bends
    about `bend_axis` (N, 3), the axis a bending knee turns the shin about (for the humanoid: the Hips' -X)."""
    hip, knee, ankle, target = (np.asarray(x, np.float64) for x in (hip, knee, ankle, target))
    thigh, shin = knee - hip, ankle - knee
    l1, l2 = np.linalg.norm(thigh, axis=-1), np.linalg.norm(shin, axis=-1)
    reach = np.clip(np.linalg.norm(target - hip, axis=-1), np.abs(l1 - l2) + 1e-6, l1 + l2 - 1e-6)
    # the knee's interior angle as needed (law of cosines), in the leg's plane: the shin's new direction is
    # cos(angle) u + sin(angle) q, u from the knee to the hip, q the shin's current direction across u
    u, _ = _unit(-thigh)
    want = np.arccos(np.clip((l1 * l1 + l2 * l2 - reach * reach) / np.maximum(2 * l1 * l2, 1e-12), -1.0, 1.0))
    s2, _ = _unit(shin)
    q, across = _unit(s2 - (s2 * u).sum(-1, keepdims=True) * u)
    straight = across < np.sin(np.radians(3.0))
    if straight.any():
        fallback, _ = _unit(np.cross(np.asarray(bend_axis, np.float64), u))
        q = np.where(straight[:, None], fallback, q)
    bend = _between(shin, np.cos(want)[:, None] * u + np.sin(want)[:, None] * q)
    new_ankle = knee + (bend @ shin[..., None])[..., 0]
    swing = _between(new_ankle - hip, target - hip)
    return swing, bend


@dataclass
class LockResult:
    """What `lock_feet` did: the locked pose, each foot's lock weight (F, 2) (1 in contact, blending to 0),
    the ankle targets (F, 2, 3) and the root's shift (F, 3)."""

    pose: hu.HumanoidPose
    contact: np.ndarray
    weights: np.ndarray
    targets: np.ndarray
    root_shift: np.ndarray
    positions: np.ndarray = field(repr=False, default=None)  # (F, B, 3) after locking


def _soles_target(world_foot: np.ndarray, toes_offset: np.ndarray) -> np.ndarray:
    """(F, 2) the ankle's height when the foot, turned as it is, rests on the floor: its sole at y = 0."""
    dy = (world_foot @ toes_offset[..., None])[..., 0][..., 1]  # toes' height relative to the ankle
    return np.maximum(ANKLE_HEIGHT, TOES_HEIGHT - dy)


def _gauss_smooth(values: np.ndarray, weights: np.ndarray, sigma: float,
                  edge: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Weighted Gaussian smoothing along axis 0 of values (F, k): (sum g w v) / (sum g w), and sum g w.
    edge: the ends extended linearly (a steady motion stays itself there) instead of cut."""
    if sigma <= 0 or len(values) < 2:
        return values, weights
    r = int(np.ceil(3 * sigma))
    g = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    n = len(values)
    if edge:
        k = min(r, n - 1)
        values = np.concatenate([2 * values[:1] - values[k:0:-1], values, 2 * values[-1:] - values[-2:-k - 2:-1]])
        weights = np.concatenate([weights[k:0:-1], weights, weights[-2:-k - 2:-1]])
    m = len(values)  # "full" convolution cut to the input's own span (numpy's "same" is the longer one's)
    num = np.stack([np.convolve(values[:, i] * weights, g)[r:r + m] for i in range(values.shape[1])], 1)
    den = np.convolve(weights, g)[r:r + m]
    if edge:
        num, den = num[k:k + n], den[k:k + n]
    return num / np.where(den > 1e-9, den, 1.0)[:, None], den


def _root_shift(need: np.ndarray, weights: np.ndarray, sigma: float, mean: bool = True) -> np.ndarray:
    """(F, 3) how the root moves: the weighted mean (or sum: what legs could not reach) of what the held feet
    need (F, 2, 3), smoothed over sigma frames; interpolated across frames with no foot held near them."""
    n = len(need)
    wsum = weights.sum(1)
    shift = (weights[..., None] * need).sum(1) / (np.maximum(wsum, 1e-9)[:, None] if mean else 1.0)
    shift, den = _gauss_smooth(shift, np.minimum(wsum, 1.0), sigma)
    known = den > 1e-3
    if not known.any():
        return np.zeros((n, 3))
    if not known.all():  # a jump, a stretch without contact: carry the shift across
        frames = np.arange(n)
        shift = np.stack([np.interp(frames, frames[known], shift[known, i]) for i in range(3)], 1)
    return shift


def _legs_to(rot: np.ndarray, pos: np.ndarray, world: np.ndarray, goal: np.ndarray) -> None:
    """Two-bone IK of both legs (in place on the local rotations `rot`) putting the ankles on goal (F, 2, 3);
    the feet keep their world orientation."""
    hips_x = world[:, 0, :, 0]  # the Hips' +X (the character's left) in the world
    for f, (up, low, foot) in enumerate(LEG_BONES):
        m = np.nonzero(np.linalg.norm(goal[:, f] - pos[:, foot], axis=-1) > 1e-7)[0]
        if not len(m):
            continue
        swing, bend = two_bone_ik(pos[m, up], pos[m, low], pos[m, foot], goal[m, f], -hips_x[m])
        w_up = swing @ world[m, up]
        w_low = swing @ bend @ world[m, low]
        rot[m, up] = hu.quat_from_matrix(np.swapaxes(world[m, hu.PARENTS[up]], -1, -2) @ w_up)
        rot[m, low] = hu.quat_from_matrix(np.swapaxes(w_up, -1, -2) @ w_low)
        rot[m, foot] = hu.quat_from_matrix(np.swapaxes(w_low, -1, -2) @ world[m, foot])  # the foot keeps its turn


def _lock_targets(ankles: np.ndarray, ground: np.ndarray, contact: np.ndarray,
                  blend: int) -> tuple[np.ndarray, np.ndarray]:
    """Lock weights (F, 2) and ankle targets (F, 2, 3) from ankles (F, 2, 3), the ankle height with the sole
    on the floor (F, 2) and contact (F, 2): in a span the span's median spot on the floor, around it
    blending in and out (module docstring)."""
    n = len(ankles)
    weights = np.zeros((n, 2))
    targets = ankles.copy()
    frames = np.arange(n)
    for f in range(2):
        best = np.full(n, np.inf)
        for a, b in _runs(contact[:, f]):
            spot = np.median(ankles[a:b, f], axis=0)
            dist = np.where(frames < a, a - frames, np.where(frames >= b, frames - b + 1, 0))
            w = np.clip(1.0 - dist / (blend + 1.0), 0.0, 1.0)
            take = (dist < best) & (w > 0)
            best = np.where(take, dist, best)
            weights[take, f] = w[take]
            inside = take & (dist == 0)
            targets[inside, f, 0], targets[inside, f, 2] = spot[0], spot[2]
            targets[inside, f, 1] = ground[inside, f]
            # around the span: drawn to the same spot, the height its own plus the correction at the span's edge
            for ramp, edge in ((take & (frames < a), a), (take & (frames >= b), b - 1)):
                targets[ramp, f, 0], targets[ramp, f, 2] = spot[0], spot[2]
                targets[ramp, f, 1] = ankles[ramp, f, 1] + ground[edge, f] - ankles[edge, f, 1]
    return weights, targets


def ground_shift(ankles: np.ndarray, contact: np.ndarray, blend: int = 4, root_sigma: float = 2.0) -> np.ndarray:
    """(F, 3) a translation per frame that puts the contact ankles (F, 2, 3) on the floor at their spots, as
    far as one translation of the whole body can (the mean of the feet's needs, smoothed): foot locking for
    joints without a skeleton (the npz's world_joints_h36m), where no leg can be bent."""
    a = np.asarray(ankles, np.float64)
    c = np.asarray(contact, bool).reshape(len(a), 2)
    weights, targets = _lock_targets(a, np.full(c.shape, ANKLE_HEIGHT), c, blend)
    return _root_shift(targets - a, (weights >= 1.0).astype(np.float64), root_sigma)


H36M_LEGS = ((4, 5, 6), (1, 2, 3))  # Human3.6M hip, knee, ankle: left, right


def lock_joints(joints: np.ndarray, contact: np.ndarray, blend: int = 4, root_sigma: float = 2.0,
                floor: bool = True, passes: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Foot locking of Human3.6M joints (F, 17, 3) in the world frame, without a skeleton: the same targets
    and root shift as `lock_feet` (the ankle's height on the floor being ANKLE_HEIGHT), every joint moved by
    the shift, then each leg's knee and ankle turned by the two-bone IK about its hip (bone lengths kept).
    Returns the locked joints and the lock weights (F, 2)."""
    j = np.array(joints, np.float64, copy=True)
    n = len(j)
    c = np.asarray(contact, bool).reshape(n, 2)
    ankles = j[:, [H36M_ANKLES[0], H36M_ANKLES[1]]]
    ground = np.full((n, 2), ANKLE_HEIGHT)
    weights, targets = _lock_targets(ankles, ground, c, blend)
    held = (weights >= 1.0).astype(np.float64)
    need = targets - ankles
    for k in range(passes):
        j += _root_shift(need, held, root_sigma if k == 0 else min(root_sigma, 1.0), mean=k == 0)[:, None, :]
        ankles = j[:, list(H36M_ANKLES)]
        goal = ankles + weights[..., None] * (targets - ankles)
        if floor:
            goal[..., 1] = np.maximum(goal[..., 1], ground)
        left = j[:, H36M_LEGS[0][0]] - j[:, H36M_LEGS[1][0]]  # the body's left, from the right hip to the left
        for f, (hip, knee, ankle) in enumerate(H36M_LEGS):
            m = np.nonzero(np.linalg.norm(goal[:, f] - j[:, ankle], axis=-1) > 1e-7)[0]
            if not len(m):
                continue
            swing, bend = two_bone_ik(j[m, hip], j[m, knee], j[m, ankle], goal[m, f], -left[m])
            shin = j[m, ankle] - j[m, knee]
            j[m, knee] = j[m, hip] + (swing @ (j[m, knee] - j[m, hip])[..., None])[..., 0]
            j[m, ankle] = j[m, knee] + (swing @ bend @ shin[..., None])[..., 0]
        ankles = j[:, list(H36M_ANKLES)]
        need = goal - ankles
        if np.abs(need).max() < 1e-4:
            break
    return j, weights


def lock_feet(pose: hu.HumanoidPose, contact: np.ndarray, blend: int = 4, root_sigma: float = 2.0,
              floor: bool = True, passes: int = 4) -> LockResult:
    """Foot locking of F frames of one person (module docstring). pose: world frame, offsets (F, B, 3) or
    (B, 3) (one skeleton); contact (F, 2) left, right. blend: frames over which a lock fades in before and
    out after its span; root_sigma: the root shift's smoothing (frames). floor: also lift any foot below the
    floor. Returns the locked pose (same offsets) and what was done."""
    rot = np.array(pose.rotations, np.float64, copy=True)
    n = len(rot)
    c = np.asarray(contact, bool).reshape(n, 2)
    offsets = np.asarray(pose.offsets, np.float64)
    root = np.asarray(pose.root, np.float64).reshape(n, 3)
    pos, world = _world(hu.HumanoidPose(rot, offsets, root))
    toes_off = np.broadcast_to(offsets, rot.shape[:-1] + (3,))[:, list(TOES_BONES)]  # (F, 2, 3)
    ankles = pos[:, list(FOOT_BONES)]
    ground = _soles_target(world[:, list(FOOT_BONES)], toes_off)  # (F, 2) ankle height with the sole on the floor
    weights, targets = _lock_targets(ankles, ground, c, blend)
    total = np.zeros((n, 3))
    need = targets - ankles
    held = (weights >= 1.0).astype(np.float64)
    for k in range(passes):  # a leg that cannot reach its goal leaves the rest to the root's next shift
        # the root follows the feet held in full (a foot blending out of its hold must not drag the body back)
        shift = _root_shift(need, held, root_sigma if k == 0 else min(root_sigma, 1.0), mean=k == 0)
        total += shift
        root = root + shift
        pos, world = _world(hu.HumanoidPose(rot, offsets, root))
        ankles = pos[:, list(FOOT_BONES)]
        goal = ankles + weights[..., None] * (targets - ankles)
        if floor:
            goal[..., 1] = np.maximum(goal[..., 1], ground)
        _legs_to(rot, pos, world, goal)
        pos = _world(hu.HumanoidPose(rot, offsets, root))[0]
        ankles = pos[:, list(FOOT_BONES)]
        need = goal - ankles
        if np.abs(need).max() < 1e-4:
            break
    out = hu.HumanoidPose(rot, offsets, root)
    return LockResult(out, c, weights, targets, total, pos)
