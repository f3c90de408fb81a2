"""One track's files, from its scratch store: npz (everything the recording held for the track), BVH and
glTF (the humanoid skeleton with the person's own bone lengths). Each reads the store's memory maps in
chunks where it can (npz, BVH); a .glb is assembled in memory by pygltflib (see gltf.py)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from .bvh import held_frames, write_bvh
from .hands import hand_fields, unseen_ranges
from .tracks import Track, TrackStore

HUMANOID_FORMATS = ("bvh", "gltf", "fbx", "blend")
FORMAT_SUFFIX = {"npz": ".npz", "bvh": ".bvh", "gltf": ".glb", "fbx": ".fbx"}
CHUNK = 2048
# Fields copied into the npz as they are (one row per frame the track was seen).
PER_FRAME = ("frame_index", "timestamp", "wall", "state", "predicted", "coasting", "box", "score", "center",
             "size", "focal", "cam", "cam_t", "joints3d", "joints2d", "joints_h36m")
OPTIONAL = ("rotmat", "rotmat_frame", "betas", "betas_frame")
HUMANOID = ("humanoid_frame", "humanoid_rotations", "humanoid_offsets", "humanoid_root")
# A BVH is fixed-rate: a track's gaps are filled by repeating its last pose. The file is bounded by the frames
# actually seen: at most MAX_HELD_PER_SEEN rows per seen frame, unless the whole span is under MAX_HELD_FRAMES
# (10 minutes at 30 fps); a longer span (a frame index jumping by millions) gets no BVH, with a note.
MAX_HELD_PER_SEEN = 100
MAX_HELD_FRAMES = 18_000


def bvh_span_ok(frames: np.ndarray) -> bool:
    """Whether a BVH of these seen frames (sorted indices) stays bounded by them."""
    span = int(frames[-1]) - int(frames[0]) + 1
    return span <= max(MAX_HELD_FRAMES, MAX_HELD_PER_SEEN * len(frames))


def humanoid_module():
    """`fastmetro.humanoid` (the skeleton solver), or None where this build has none."""
    try:
        from fastmetro import humanoid
    except ImportError:
        return None
    return humanoid


class _Held:
    """A fixed-rate view of per-seen-frame rows: row k is the latest seen frame at or before frame
    first + k (a gap repeats the last seen pose). Slices read only their rows."""

    def __init__(self, rows: np.ndarray, index: np.ndarray) -> None:
        self.rows, self.index = rows, index
        self.shape = (len(index), *rows.shape[1:])

    def __getitem__(self, s: slice) -> np.ndarray:
        return np.asarray(self.rows[self.index[s]])


def _chunked_mean(a: np.ndarray) -> np.ndarray:
    total = np.zeros(a.shape[1:], np.float64)
    for start in range(0, len(a), CHUNK):
        total += np.asarray(a[start:start + CHUNK], np.float64).sum(0)
    return (total / max(len(a), 1)).astype(np.float32)


def _as_dtype(store: TrackStore, name: str, dtype) -> np.ndarray:
    """The field converted to dtype through a scratch file, chunk by chunk (no copy in memory)."""
    src = store.array(name)
    if src.dtype == np.dtype(dtype) or len(src) == 0:
        return src
    dst = np.memmap(store.dir / f"{name}.{np.dtype(dtype).str[1:]}.raw", dtype=dtype, mode="w+", shape=src.shape)
    for start in range(0, len(src), CHUNK):
        dst[start:start + CHUNK] = src[start:start + CHUNK]
    dst.flush()
    return dst


def skeleton_offsets(store: TrackStore) -> np.ndarray:
    """The track's one skeleton for BVH and glTF: each bone's offset averaged over the frames."""
    return _chunked_mean(store.array("humanoid_offsets"))


def skeleton_positions(store: TrackStore, offsets: np.ndarray, humanoid) -> np.ndarray:
    """World positions (n, B, 3) of every bone as the BVH and glTF files hold them (the track's skeleton),
    by forward kinematics, chunk by chunk into a scratch file."""
    rotations, root = store.array("humanoid_rotations"), store.array("humanoid_root")
    out = np.memmap(store.dir / "humanoid_positions.raw", dtype=np.float32, mode="w+",
                    shape=(len(rotations), len(offsets), 3))
    for start in range(0, len(rotations), CHUNK):
        rot = np.asarray(rotations[start:start + CHUNK], np.float64)
        pose = humanoid.HumanoidPose(rot, np.broadcast_to(offsets, rot.shape[:-1] + (3,)),
                                     np.asarray(root[start:start + CHUNK], np.float64))
        out[start:start + CHUNK] = humanoid.forward_kinematics(pose)[0]
    out.flush()
    return out


def _with_fingers(store: TrackStore, body: np.ndarray, hands: np.ndarray, name: str) -> np.ndarray:
    """(p, 22, C) body rows and (p, 30, C) finger rows as one (p, 52, C) scratch file, chunk by chunk."""
    out = np.memmap(store.dir / f"{name}.raw", dtype=np.float32, mode="w+",
                    shape=(len(body), body.shape[1] + hands.shape[1], body.shape[2]))
    for start in range(0, len(body), CHUNK):
        out[start:start + CHUNK, : body.shape[1]] = body[start:start + CHUNK]
        out[start:start + CHUNK, body.shape[1]:] = hands[start:start + CHUNK]
    return out  # read back through this mapping: no flush to disk needed


def _finger_positions(store: TrackStore, offsets: np.ndarray, fingers: dict, humanoid) -> np.ndarray:
    """World positions (n, 30, 3) of the finger bones as the BVH and glTF files hold them."""
    body, hands = store.array("humanoid_rotations"), fingers["hand_rotations"]
    full = np.concatenate([offsets, fingers["skeleton_finger_offsets"]])
    root = store.array("humanoid_root")
    out = np.memmap(store.dir / "finger_positions.raw", dtype=np.float32, mode="w+", shape=(len(body), 30, 3))
    for start in range(0, len(body), CHUNK):
        rot = np.concatenate([body[start:start + CHUNK], hands[start:start + CHUNK]], axis=1).astype(np.float64)
        pose = humanoid.HumanoidPose(rot, np.broadcast_to(full, rot.shape[:-1] + (3,)),
                                     np.asarray(root[start:start + CHUNK], np.float64))
        out[start:start + CHUNK] = humanoid.forward_kinematics(pose)[0][:, len(offsets):]
    return out


def write_track(track: Track, out: Path, formats, options, humanoid, faces: Optional[np.ndarray],
                joint_names, info: dict, blend=None) -> list[str]:
    """Write the track's files in `formats` (obj is written while reading); returns their names."""
    store, fps = track.store, info["fps"]
    written = []
    has_pose = humanoid is not None and "humanoid_rotations" in store
    fingers = hh = None
    if has_pose and "hand_rotations" in store:  # the track has shown a hand (numpy only, as the body solver)
        from fastmetro import humanoid_hands as hh

        fingers = hand_fields(store, hh)
    if fingers is not None:
        info["hands_unseen"] = unseen_ranges(np.asarray(store.array("humanoid_frame")), fingers["hand_seen"])
    if "npz" in formats:
        arrays = {k: store.array(k) for k in PER_FRAME}
        arrays.update({k: store.array(k) for k in OPTIONAL if k in store})
        arrays.update(track.extra)
        arrays["track_id"] = np.int64(track.track_id)
        arrays["fps"] = np.float64(fps)
        arrays["gaps"] = np.asarray(track.gaps, np.int64).reshape(-1, 2)
        if joint_names is not None:
            arrays["joint_names"] = np.asarray(joint_names[0])
            arrays["h36m_joint_names"] = np.asarray(joint_names[1])
        if options.vertices != "none" and "vertices" in store:
            arrays["vertices"] = _as_dtype(store, "vertices", options.vertices)
            arrays["vertices_frame"] = store.array("vertices_frame")
            if faces is not None:
                arrays["faces"] = np.asarray(faces, np.int32)
        if has_pose:
            arrays.update({k: store.array(k) for k in HUMANOID})
            arrays["skeleton_offsets"] = skeleton_offsets(store)
            arrays["humanoid_positions"] = skeleton_positions(store, arrays["skeleton_offsets"], humanoid)
            arrays["bones"] = np.asarray(humanoid.BONES)
            arrays["parents"] = np.asarray(humanoid.PARENTS, np.int64)
            if fingers is not None:
                arrays.update(fingers)
                arrays["finger_positions"] = _finger_positions(store, arrays["skeleton_offsets"], fingers, humanoid)
        np.savez(out / f"{track.name}.npz", **arrays)
        written.append(f"{track.name}.npz")
    if not set(formats) & set(HUMANOID_FORMATS):
        return written
    if not has_pose:
        info["note"] = "no frame of this track carries vertices, so no skeleton: no BVH, glTF, FBX or Blender file"
        return written
    names, parents = list(humanoid.BONES), np.asarray(humanoid.PARENTS)
    offsets = skeleton_offsets(store)
    frames = np.asarray(store.array("humanoid_frame"))  # the frames with a skeleton (with vertices)
    info["animation_frames"] = [int(frames[0]), int(frames[-1])]
    rotations, root = store.array("humanoid_rotations"), store.array("humanoid_root")
    rig = getattr(options, "rig", "unity")
    body = None
    if (options.body or blend is not None) and "vertices" in store and faces is not None \
            and np.size(faces) and int(np.max(faces)) + 1 == store.array("vertices").shape[1]:
        from .skin import track_body

        body, error = track_body(store, np.asarray(faces), humanoid, offsets)
        info["body_error_mm"] = {k: round(v * 1000, 2) if k != "frames" else v for k, v in error.items()}
    if fingers is not None:  # the finger joints under each hand
        names, parents = list(hh.ALL_BONES), np.asarray(hh.ALL_PARENTS)
        offsets = np.concatenate([offsets, fingers["skeleton_finger_offsets"]])
        rotations = _with_fingers(store, rotations, fingers["hand_rotations"], "rotations52")
    if rig != "unity":  # the preset's names, bone order and rest pose (tools/export/rigs.py)
        from .rigs import apply, apply_to_body

        bones, bone_parents = names, parents
        names, parents, order, rig_offsets, rotations = apply(rig, bones, parents, offsets, np.asarray(rotations))
        if body is not None:
            body = apply_to_body(body, rig, bones, bone_parents, offsets, np.asarray(root[0]), order)
        offsets = rig_offsets
        info["rig"] = rig
    if (options.body or blend is not None) and body is None:
        info["note"] = "no body: the recording's faces do not cover its vertices" if "vertices" in store \
            else "no body: no frame of this track carries vertices"
    if "bvh" in formats and not bvh_span_ok(frames):
        info["refused"] = (f"no BVH: seen in {len(frames)} frames from {int(frames[0])} to {int(frames[-1])}, a "
                           f"fixed-rate file would repeat its poses over {int(frames[-1]) - int(frames[0]) + 1} "
                           f"frames (at most {MAX_HELD_PER_SEEN} per frame seen, or {MAX_HELD_FRAMES})")
        info["note"] = "; ".join(filter(None, [info.get("note"), info["refused"]]))
    elif "bvh" in formats:
        index = held_frames(frames)
        write_bvh(out / f"{track.name}.bvh", names, parents, offsets, _Held(rotations, index), _Held(root, index), fps)
        written.append(f"{track.name}.bvh")
    if "gltf" in formats:
        from .gltf import MeshFrames, write_glb

        mesh = None
        if options.gltf_mesh and "vertices" in store and faces is not None:
            # the frames with vertices are exactly the frames with a skeleton
            keys = np.searchsorted(frames, np.asarray(store.array("vertices_frame")))
            seen = np.searchsorted(np.asarray(store.array("frame_index")), np.asarray(store.array("vertices_frame")))
            cam_t = np.asarray(store.array("cam_t"))[seen]
            verts = (np.asarray(store.array("vertices")) + cam_t[:, None, :]) * np.float32([1, -1, -1])
            mesh = MeshFrames(np.asarray(faces), keys, verts)
        extras = {k: info[k] for k in ("track_id", "first_frame", "last_frame", "fps", "gaps", "end",
                                       "animation_frames")}
        extras["coasting_frames"] = np.asarray(store.array("frame_index"))[np.asarray(store.array("coasting"))].tolist()
        write_glb(out / f"{track.name}.glb", names, parents, offsets, np.asarray(rotations), np.asarray(root),
                  (frames - frames[0]) / fps, mesh=mesh, name=track.name, extras=extras,
                  body=body if options.body else None)
        written.append(f"{track.name}.glb")
    if "fbx" in formats:
        from .fbx import write_fbx

        write_fbx(out / f"{track.name}.fbx", track.name, track.track_id, names, parents, offsets, frames,
                  np.asarray(rotations), np.asarray(root), fps, body if options.body else None, store.dir)
        written.append(f"{track.name}.fbx")
    if blend is not None:
        blend.add(track.name, track.track_id, names, parents, offsets, frames, np.asarray(rotations),
                  np.asarray(root), body)
    return written
