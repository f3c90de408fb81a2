"""Synthetic scenes with a known camera, for testing the world calibration and foot contact: persons walking
on a floor (real gait: a stance foot stays planted), and what the pipeline would publish for them (the
network sees the true image, placement uses the assumed focal), with noise on boxes, scale and orientation.

    scene = make_scene(SceneSpec(pitch_deg=20, height=3.5, focal_ratio=0.7), seed=0)
    for frame in scene.frames:                 # list of SynthPerson per frame
        p.box, p.cam, p.cam_t, p.joints3d, ...   # published fields (camera frame, assumed focal)
        p.world_joints, p.contact                # the truth (world frame, H36M order; left, right)

Numpy only. The body is a 17-joint Human3.6M skeleton scaled by each person's height.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from .camera import crop_to_frame_translation, default_focal, project
from .world import CameraModel, up_from_pitch_roll, world_to_camera

# H36M order: Pelvis, R_Hip, R_Knee, R_Ankle, L_Hip, L_Knee, L_Ankle, Torso, Neck, Nose, Head,
# L_Shoulder, L_Elbow, L_Wrist, R_Shoulder, R_Elbow, R_Wrist
H36M_TO_14 = (3, 2, 1, 4, 5, 6, 16, 15, 14, 11, 12, 13, 8, 10)  # the network's 14 joints from the 17
ANKLE_HEIGHT = 0.08  # metres above the sole
CROP_SCALE = 1.25


@dataclass
class SceneSpec:
    pitch_deg: float = 20.0  # camera looking down
    roll_deg: float = 0.0
    height: float = 3.5  # camera height, metres
    focal_ratio: float = 0.7  # true focal / frame diagonal
    width: int = 1280
    height_px: int = 720
    fps: float = 25.0
    seconds: float = 20.0
    walkers: int = 6  # persons at any time (each walks a straight line, then a new one starts)
    speed: tuple[float, float] = (1.0, 1.6)  # m/s
    body_height: tuple[float, float] = (1.70, 0.07)  # mean, sd (metres)
    distance: tuple[float, float] = (4.0, 20.0)  # range of floor distances from the camera (metres)
    box_noise: float = 0.02  # sd of each box edge, in units of box height
    scale_noise: float = 0.03  # sd of the network's log scale
    rot_noise_deg: float = 3.0  # sd of the network's orientation error
    sitting: int = 0  # extra persons sitting still (outliers)
    stairs: int = 0  # extra persons walking 0.6 m above the floor (outliers)
    bump_at: Optional[float] = None  # seconds: the camera turns by bump_deg (pitch) and bump_roll_deg
    bump_deg: float = 5.0
    bump_roll_deg: float = 2.0


@dataclass
class SynthPerson:
    track_id: int
    box: np.ndarray  # (4,) x1, y1, x2, y2 (frame pixels), clipped to the frame, noisy
    score: float
    center: np.ndarray  # (2,)
    size: float
    cam: np.ndarray  # (3,) s, tx, ty
    cam_t: np.ndarray  # (3,) placed with the assumed focal
    joints3d: np.ndarray  # (14, 3) body-relative, camera axes
    joints_h36m: np.ndarray  # (17, 3) body-relative, camera axes
    joints2d: np.ndarray  # (14, 2) joints3d + cam_t projected with the assumed focal
    world_joints: np.ndarray  # (17, 3) truth, world frame
    contact: np.ndarray  # (2,) bool truth: left, right foot planted
    kind: str = "walk"  # walk | sit | stairs
    cut: bool = False  # the true box left the frame (the published box is clipped)


@dataclass
class SynthScene:
    spec: SceneSpec
    camera: CameraModel  # the true camera (before a bump)
    assumed_focal: float  # the focal the published cam_t use (the frame diagonal)
    frames: list[list[SynthPerson]] = field(default_factory=list)
    cameras: list[CameraModel] = field(default_factory=list)  # the true camera of each frame

    @property
    def frame_wh(self) -> tuple[int, int]:
        return self.spec.width, self.spec.height_px


def _skeleton(pelvis_xz, facing, phase_feet, feet_xz, feet_lift, height, sit=False, base=0.0):
    """17 world joints (H36M) of a person of `height` metres; facing: unit (x, z) walking direction."""
    H = height
    f = np.array([facing[0], 0.0, facing[1]])
    right = _cross(f, np.array([0.0, 1.0, 0.0]))
    right /= np.linalg.norm(right)
    up = np.array([0.0, 1.0, 0.0])
    j = np.zeros((17, 3))
    pel_h = (0.30 if sit else 0.50) * H + base
    pelvis = np.array([pelvis_xz[0], pel_h, pelvis_xz[1]])
    j[0] = pelvis
    hips = {1: pelvis + 0.06 * H * right, 4: pelvis - 0.06 * H * right}
    j[1], j[4] = hips[1], hips[4]
    thigh = shin = 0.26 * H
    for hip_i, knee_i, ank_i, fi in ((1, 2, 3, 1), (4, 5, 6, 0)):
        ank = np.array([feet_xz[fi][0], base + ANKLE_HEIGHT + feet_lift[fi], feet_xz[fi][1]])
        if sit:
            ank = np.array([0, base + ANKLE_HEIGHT, 0]) + np.array([j[hip_i][0], 0, j[hip_i][2]]) + 0.45 * H * 0 + 0.3 * f
            ank[1] = base + ANKLE_HEIGHT
        hip = j[hip_i]
        d = ank - hip
        dist = np.linalg.norm(d)
        if dist > thigh + shin - 1e-3:
            ank = hip + d / dist * (thigh + shin - 1e-3)
            d = ank - hip
            dist = np.linalg.norm(d)
        a = (thigh ** 2 - shin ** 2 + dist ** 2) / (2 * dist)
        hgt = math.sqrt(max(thigh ** 2 - a ** 2, 0.0))
        bend = _cross(d / dist, right)  # perpendicular to the leg in the sagittal plane, knee forward
        if bend @ f < 0:
            bend = -bend
        j[knee_i] = hip + d / dist * a + bend * hgt
        j[ank_i] = ank
    torso_base = pelvis + (0.0 if not sit else 0.0) * up
    j[7] = torso_base + 0.15 * H * up
    j[8] = torso_base + 0.32 * H * up
    j[9] = torso_base + 0.41 * H * up + 0.06 * f
    j[10] = torso_base + 0.45 * H * up
    swing = math.sin(2 * math.pi * phase_feet) * 0.15 * H
    for sh, el, wr, side, sgn in ((11, 12, 13, -1, 1), (14, 15, 16, 1, -1)):
        s = torso_base + 0.31 * H * up + side * 0.11 * H * right
        j[sh] = s
        j[el] = s - 0.17 * H * up + sgn * 0.4 * swing * f
        j[wr] = s - 0.33 * H * up + sgn * swing * f
    return j


def _cross(a, b) -> np.ndarray:
    return np.array([a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]])


def _rot(axis_angle: np.ndarray) -> np.ndarray:
    th = float(np.linalg.norm(axis_angle))
    if th < 1e-12:
        return np.eye(3)
    k = axis_angle / th
    K = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + math.sin(th) * K + (1 - math.cos(th)) * K @ K


def _floor_point(cam: CameraModel, px: np.ndarray) -> Optional[np.ndarray]:
    """The floor point (world x, z) seen at frame pixel px, or None above the horizon."""
    w, h = cam.width, cam.height_px
    ray = np.array([(px[0] - w / 2) / cam.focal, (px[1] - h / 2) / cam.focal, 1.0])
    denom = ray @ cam.up
    if denom >= -1e-6:
        return None
    p = ray * (-cam.height / denom)
    wp = cam.world_from_camera()[:3, :3] @ p + [0, cam.height, 0]
    return np.array([wp[0], wp[2]])


def _route(rng, cam: CameraModel, spec: SceneSpec, base: float = 0.0):
    """A straight walk between two floor points in view, each at a distance within spec.distance."""
    for _ in range(1000):
        pts = []
        for _ in range(2):
            px = np.array([rng.uniform(0.05, 0.95) * cam.width, rng.uniform(0.3, 1.0) * cam.height_px])
            q = _floor_point(cam, px)
            if q is None or not spec.distance[0] <= np.hypot(*q) <= spec.distance[1]:
                break
            pts.append(q)
        if len(pts) == 2 and np.linalg.norm(pts[1] - pts[0]) > 3.0:
            return pts
    raise ValueError("no floor in view at the scene's distances: check pitch, height and distance")


class _Walker:
    def __init__(self, rng, tid, cam, spec, start_t, kind="walk"):
        self.tid, self.kind = tid, kind
        self.base = 0.6 if kind == "stairs" else 0.0
        self.height = float(rng.normal(*spec.body_height)) if kind != "sit" else float(rng.normal(*spec.body_height))
        a, b = _route(rng, cam, spec)
        self.a = a
        self.speed = float(rng.uniform(*spec.speed)) if kind != "sit" else 0.0
        d = b - a
        self.length = float(np.linalg.norm(d))
        self.dir = d / self.length
        self.t0 = start_t
        self.t1 = start_t + (self.length / self.speed if self.speed > 0 else spec.seconds)
        self.step = 0.38 * self.height  # step length
        self.period = 2 * self.step / max(self.speed, 1e-6)  # a gait cycle: two steps
        self.facing = self.dir if kind != "sit" else np.array([-a[0], -a[1]]) / np.hypot(*a)

    def pose(self, t):
        tau = t - self.t0
        if self.kind == "sit":
            return _skeleton(self.a, self.facing, 0.0, [self.a, self.a], [0.0, 0.0], self.height, sit=True), \
                np.array([True, True])
        s = self.speed * tau
        pelvis = self.a + self.dir * s
        feet, lift, contact = [], [], []
        for phi, side in ((0.5, -1.0), (0.0, 1.0)):  # left, right
            p = tau / self.period + phi
            n = math.floor(p)
            q = p - n
            lateral = side * 0.055 * self.height * np.array([self.dir[1], -self.dir[0]]) * -1
            def footprint(cycle):
                t_mid = (cycle - phi + 0.3) * self.period
                return self.a + self.dir * (self.speed * t_mid) + lateral
            if q < 0.6:
                feet.append(footprint(n))
                lift.append(0.0)
                contact.append(True)
            else:
                u = (q - 0.6) / 0.4
                w = 0.5 - 0.5 * math.cos(math.pi * u)
                feet.append((1 - w) * footprint(n) + w * footprint(n + 1))
                lift.append(0.12 * math.sin(math.pi * u))
                contact.append(False)
        bob = 0.01 * math.cos(4 * math.pi * tau / self.period)
        j = _skeleton(pelvis, self.dir, tau / self.period, feet, lift, self.height, base=self.base)
        j[[0, 1, 4, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16], 1] += bob
        return j, np.array(contact)


def _box_points(world_joints: np.ndarray, height: float, facing_right: np.ndarray, base: float) -> np.ndarray:
    """Surface points that bound the person: joints, head top, soles (heels and toes), body width."""
    pts = [world_joints]
    head_top = world_joints[10] + np.array([0, 0.055 * height, 0])
    pts.append(head_top[None])
    for ank in (world_joints[3], world_joints[6]):
        sole = ank.copy()
        sole[1] -= ANKLE_HEIGHT
        pts.append(np.stack([sole + [0.05, 0, 0.05], sole - [0.05, 0, 0.05], sole + [0.05, 0, -0.05],
                             sole + [-0.05, 0, 0.05]]))
    return np.concatenate(pts)


def _weak_fit(rel: np.ndarray, px: np.ndarray, center: np.ndarray, size: float) -> np.ndarray:
    """Least-squares weak-perspective camera (s, tx, ty) with ndc = s (X[:2] + t) for points rel (J, 3)
    seen at frame pixels px (J, 2) in the crop square (center, size)."""
    ndc = (px - center) * 2.0 / size
    X = rel[:, :2]
    Xm, Nm = X.mean(0), ndc.mean(0)
    s = float(((X - Xm) * (ndc - Nm)).sum() / ((X - Xm) ** 2).sum())
    t = Nm / s - Xm
    return np.array([s, t[0], t[1]])


def make_scene(spec: SceneSpec = SceneSpec(), seed: int = 0) -> SynthScene:
    rng = np.random.default_rng(seed)
    w, h = spec.width, spec.height_px
    f_true = spec.focal_ratio * default_focal((w, h))
    cam0 = CameraModel(focal=f_true, up=up_from_pitch_roll(spec.pitch_deg, spec.roll_deg), height=spec.height,
                       width=w, height_px=h, focal_estimated=True, state="fixed")
    cam1 = cam0
    if spec.bump_at is not None:
        cam1 = CameraModel(focal=f_true, up=up_from_pitch_roll(spec.pitch_deg + spec.bump_deg,
                                                               spec.roll_deg + spec.bump_roll_deg),
                           height=spec.height, width=w, height_px=h, focal_estimated=True, state="fixed")
    f_assumed = default_focal((w, h))
    scene = SynthScene(spec=spec, camera=cam0, assumed_focal=f_assumed)
    n_frames = int(round(spec.seconds * spec.fps))
    next_id = 1
    walkers: list[_Walker] = []
    for i in range(spec.walkers):
        walkers.append(_Walker(rng, next_id, cam0, spec, start_t=-rng.uniform(0, 4)))
        next_id += 1
    for kind, count in (("sit", spec.sitting), ("stairs", spec.stairs)):
        for _ in range(count):
            walkers.append(_Walker(rng, next_id, cam0, spec, start_t=0.0, kind=kind))
            next_id += 1
    for fi in range(n_frames):
        t = fi / spec.fps
        cam = cam1 if spec.bump_at is not None and t >= spec.bump_at else cam0
        scene.cameras.append(cam)
        persons = []
        for k, wk in enumerate(list(walkers)):
            if t > wk.t1:  # this walk is over: a new person starts
                walkers[k] = wk = _Walker(rng, next_id, cam0, spec, start_t=t, kind=wk.kind)
                next_id += 1
            if t < wk.t0:
                continue
            wj, contact = wk.pose(t)
            p = _publish(rng, wj, contact, wk, cam, f_assumed, spec)
            if p is not None:
                persons.append(p)
        scene.frames.append(persons)
    return scene


def _publish(rng, wj, contact, wk: _Walker, cam: CameraModel, f_assumed, spec: SceneSpec) -> Optional[SynthPerson]:
    w, h = cam.width, cam.height_px
    pts_w = _box_points(wj, wk.height, None, wk.base)
    pts_c = world_to_camera(pts_w, cam)
    if (pts_c[:, 2] < 0.5).any():
        return None
    px = cam.focal * pts_c[:, :2] / pts_c[:, 2:3] + [w / 2, h / 2]
    x1, y1 = px.min(0)
    x2, y2 = px.max(0)
    bh = y2 - y1
    box = np.array([x1, y1, x2, y2]) + rng.normal(0, spec.box_noise * bh, 4)
    cut = bool(x1 < 0 or y1 < 0 or x2 > w or y2 > h)
    box = np.clip(box, [0, 0, 0, 0], [w, h, w, h])
    if box[2] - box[0] < 8 or box[3] - box[1] < 40:
        return None
    center = np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2])
    size = CROP_SCALE * max(box[2] - box[0], box[3] - box[1])
    # The network: the body in the camera's axes (relative to the pelvis), a small orientation error.
    jc = world_to_camera(wj, cam)
    rel = jc - jc[0]
    R = _rot(rng.normal(0, math.radians(spec.rot_noise_deg), 3))
    rel_net = rel @ R.T
    jpx = cam.focal * jc[:, :2] / jc[:, 2:3] + [w / 2, h / 2]
    cam_wp = _weak_fit(rel_net, jpx, center, size)
    cam_wp[0] *= math.exp(rng.normal(0, spec.scale_noise))
    cam_t = crop_to_frame_translation(cam_wp[None], center[None], np.array([size]), (w, h), f_assumed)[0]
    j14 = rel_net[list(H36M_TO_14)]
    j2d = project(j14[None], cam_t[None], f_assumed, (w, h))[0]
    return SynthPerson(
        track_id=wk.tid, box=box, score=0.9, center=center, size=float(size), cam=cam_wp, cam_t=cam_t,
        joints3d=j14, joints_h36m=rel_net, joints2d=j2d, world_joints=wj, contact=contact, kind=wk.kind, cut=cut,
    )
