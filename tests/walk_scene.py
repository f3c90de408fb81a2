"""Test data for the feet and the world outputs: persons walking on a floor, as humanoid skeletons in the world
frame with the true foot contacts, and (with the SMPL template) their meshes as a calibrated camera sees them.

A walker: straight path at `speed`, steps of `step` metres, each foot in stance 60 % of the gait cycle (flat
on the floor, still), swinging 40 % (lifted up to 10 cm); hips bob 1.5 cm; legs posed by two-bone IK onto the
feet; arms hanging. The skeleton is the SMPL template's (fastmetro.humanoid's stored key points).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fastmetro import feet
from fastmetro import humanoid as hu

STANCE = 0.6  # share of the gait cycle a foot is on the floor


def template_offsets() -> np.ndarray:
    """(B, 3) the SMPL template's bone offsets (rest skeleton)."""
    return hu.solve_points(hu._TEMPLATE_KEY_POINTS[None]).offsets[0]


def _yaw(psi: np.ndarray) -> np.ndarray:
    c, s = np.cos(psi), np.sin(psi)
    z, o = np.zeros_like(c), np.ones_like(c)
    return np.stack([c, z, s, z, o, z, -s, z, c], -1).reshape(-1, 3, 3)


def _rot_z(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])


@dataclass
class Walk:
    times: np.ndarray  # (F,)
    pose: hu.HumanoidPose  # world frame, offsets (F, B, 3)
    contact: np.ndarray  # (F, 2) true stance, left and right
    positions: np.ndarray  # (F, B, 3) bone positions


def walk(frames: int = 150, fps: float = 30.0, start=(0.0, -6.0), heading: float = 0.5, speed: float = 1.1,
         step: float = 0.6, phase: float = 0.0, offsets: np.ndarray | None = None) -> Walk:
    """One walker on the floor (world frame: +Y up, floor y = 0). heading: radians from +Z towards +X."""
    offsets = template_offsets() if offsets is None else offsets
    t = np.arange(frames) / fps
    cycle = 2 * step / speed
    d = np.array([np.sin(heading), 0.0, np.cos(heading)])
    left = np.array([np.cos(heading), 0.0, -np.sin(heading)])  # the character's left (+X turned by the yaw)
    p0 = np.array([start[0], 0.0, start[1]])

    def hip_at(tt):
        return p0 + np.multiply.outer(speed * tt, d)

    # the ankle's height with the foot flat on the floor (its sole at y = 0), per side
    flat = feet._soles_target(np.eye(3)[None, None], offsets[list(feet.TOES_BONES)][None])[0]
    ankles = np.zeros((frames, 2, 3))
    contact = np.zeros((frames, 2), bool)
    for f, side in enumerate((1.0, -1.0)):
        u = t / cycle + phase + 0.5 * f
        k, ph = np.floor(u), u - np.floor(u)
        mid = lambda kk: hip_at((kk + STANCE / 2 - phase - 0.5 * f) * cycle) + side * 0.1 * left  # noqa: E731
        here, nxt = mid(k), mid(k + 1)
        stance = ph < STANCE
        s = np.clip((ph - STANCE) / (1 - STANCE), 0, 1)
        blend = (1 - np.cos(np.pi * s)) / 2
        a = np.where(stance[:, None], here, here + blend[:, None] * (nxt - here))
        a[:, 1] = flat[f] + np.where(stance, 0.0, 0.10 * np.sin(np.pi * s))
        ankles[:, f] = a
        contact[:, f] = stance
    hips = hip_at(t)
    hips[:, 1] = 0.84 + 0.015 * np.cos(4 * np.pi * (t / cycle + phase - STANCE / 2))
    yaw = _yaw(np.full(frames, heading))
    n = len(hu.BONES)
    rot = np.tile([0.0, 0.0, 0.0, 1.0], (frames, n, 1))
    rot[:, 0] = hu.quat_from_matrix(yaw)
    for name, angle in (("LeftUpperArm", -1.25), ("RightUpperArm", 1.25)):  # arms hanging
        rot[:, hu.BONES.index(name)] = hu.quat_from_matrix(_rot_z(angle))
    off = np.tile(offsets, (frames, 1, 1))
    pose = hu.HumanoidPose(rot, off, hips)
    pos, world = feet._world(pose)
    for f, (up, low, foot) in enumerate(feet.LEG_BONES):
        swing, bend = feet.two_bone_ik(pos[:, up], pos[:, low], pos[:, foot], ankles[:, f], -world[:, 0, :, 0])
        w_up = swing @ world[:, up]
        w_low = swing @ bend @ world[:, low]
        rot[:, up] = hu.quat_from_matrix(np.swapaxes(world[:, 0], -1, -2) @ w_up)
        rot[:, low] = hu.quat_from_matrix(np.swapaxes(w_up, -1, -2) @ w_low)
        rot[:, foot] = hu.quat_from_matrix(np.swapaxes(w_low, -1, -2) @ yaw)  # flat on the floor
    pose = hu.HumanoidPose(rot, off, hips)
    positions = feet._world(pose)[0]
    err = np.abs(positions[:, list(feet.FOOT_BONES)] - ankles).max()
    assert err < 1e-6, f"walker: legs do not reach the feet ({err:.3g} m)"
    return Walk(t, pose, contact, positions)


def noisy(w: Walk, rng: np.random.Generator, joint_sigma: float = 0.01, body_sigma: float = 0.03,
          floor_error: float = 0.0, camera=np.zeros(3)) -> np.ndarray:
    """The walk's bone positions (F, B, 3) as a measurement would give them: each joint jittered by
    joint_sigma, the whole body moved along the line from `camera` by a depth error of body_sigma (relative,
    smoothed over 3 frames, as depth from a noisy scale), and the floor off by floor_error metres."""
    p = w.positions.copy()
    p += rng.normal(0, joint_sigma, p.shape)
    ray = p[:, 0] - camera
    e = rng.normal(0, body_sigma, len(p))
    e = np.convolve(e, np.ones(3) / 3, mode="same")
    p += (e[:, None] * ray)[:, None, :]
    p[..., 1] += floor_error
    return p


def noisy_pose(w: Walk, rng: np.random.Generator, angle_sigma_deg: float = 2.0, body_sigma: float = 0.03,
               floor_error: float = 0.0, camera=np.zeros(3)) -> hu.HumanoidPose:
    """The walk's skeleton as a measurement would give it: every local rotation off by a random turn of
    angle_sigma_deg (per axis), the root moved along the line from `camera` by a relative depth error of
    body_sigma (smoothed over 3 frames) and lifted by floor_error metres."""
    rot = hu.quat_to_matrix(w.pose.rotations)
    n, b = rot.shape[:2]
    turn = rng.normal(0, np.radians(angle_sigma_deg), (n * b, 3))
    angle = np.linalg.norm(turn, axis=-1)
    noise = feet._axis_angle(turn / np.maximum(angle, 1e-12)[:, None], angle).reshape(n, b, 3, 3)
    rot = hu.quat_from_matrix(noise @ rot)
    root = w.pose.root.copy()
    e = np.convolve(rng.normal(0, body_sigma, n), np.ones(3) / 3, mode="same")
    root += e[:, None] * (root - camera)
    root[:, 1] += floor_error
    return hu.HumanoidPose(rot, w.pose.offsets, root)


# --------------------------------------------------------------------------- what a camera sees of the walkers
def scene_camera(pitch_deg: float = 20.0, roll_deg: float = 2.0, height: float = 3.0, focal_ratio: float = 0.8,
                 wh=(1280, 720)):
    """A static camera (fastmetro.world.CameraModel) looking down at the floor."""
    from fastmetro.world import CameraModel, up_from_pitch_roll

    return CameraModel(focal=focal_ratio * float(np.hypot(*wh)), up=up_from_pitch_roll(pitch_deg, roll_deg),
                       height=height, width=wh[0], height_px=wh[1], focal_estimated=True, state="fixed")


def walker_frames(template, camera, walks: list, published_focal: float | None = None, depth_noise: float = 0.0,
                  rng: np.random.Generator | None = None, world_info=None) -> list:
    """MeshFrames of the walkers (track i + 1 = walks[i], all of the same length) as the pipeline would publish
    them: body-relative meshes and Human3.6M joints in the camera frame, cam_t the pelvis placed at
    `published_focal` (the true focal when None: depth scales with the focal, docs/crops.md), boxes around the
    meshes as the camera sees them; depth_noise: relative, per frame. world_info: attached to every frame
    (pipeline.messages.WorldInfo) when given."""
    from fastmetro.world import world_to_camera
    from pipeline import wire

    rng = rng or np.random.default_rng(0)
    f_pub = camera.focal if published_focal is None else published_focal
    w, h = camera.width, camera.height_px
    posed = []
    for wk in walks:
        _, verts, joints = template.posed(wk.pose.rotations, root=wk.pose.root)
        posed.append((world_to_camera(verts, camera), world_to_camera(joints, camera)))
    frames = []
    for i in range(len(walks[0].times)):
        mf = wire.synthetic_mesh_frame(len(walks), index=i)
        mf.frame.width, mf.frame.height = w, h
        mf.frame.pts = float(walks[0].times[i])
        mf.focal = f_pub
        mf.world = world_info
        for k, pm in enumerate(mf.persons):
            v, j = posed[k][0][i], posed[k][1][i]
            cam_t = j[0] * (1.0 + depth_noise * rng.normal())
            px = camera.focal * v[:, :2] / v[:, 2:3] + [w / 2, h / 2]
            lo, hi = np.clip(px.min(0), 0, [w, h]), np.clip(px.max(0), 0, [w, h])
            pm.person.track_id = k + 1
            pm.person.box = (float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1]))
            pm.person.center = tuple(float(x) for x in (lo + hi) / 2)
            pm.person.size = float(1.25 * (hi - lo).max())
            pm.vertices = (v - j[0]).astype(np.float32)
            pm.joints_h36m = (j - j[0]).astype(np.float32)
            pm.cam_t = (cam_t * [1.0, 1.0, f_pub / camera.focal]).astype(np.float32)
        frames.append(mf)
    return frames


def write_recording(path, frames, faces=None, stream: str = "default"):
    """MeshFrames as a --record file of `stream` (topology, frames, end)."""
    from pipeline import wire
    from pipeline.messages import EndOfStream

    faces = np.zeros((1, 3), np.int32) if faces is None else faces
    rec = wire.RecordWriter(path)
    rec.write(0.0, wire.topic(stream, "topology"),
              wire.encode_topology(stream, 0, faces, [f"j{i}" for i in range(14)], [f"h{i}" for i in range(17)]))
    for seq, mf in enumerate(frames):
        rec.write(float(mf.frame.pts), wire.topic(stream, "frame"), wire.encode_frame(mf, stream, seq))
    rec.write(1e4, wire.topic(stream, "end"), wire.encode_end(EndOfStream(stream, len(frames)), stream, len(frames)))
    rec.close()
    return path
