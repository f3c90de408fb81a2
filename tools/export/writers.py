"""One track's files, from its scratch store: npz (everything the recording held for the track), BVH and
glTF (the humanoid skeleton with the person's own bone lengths). Each reads the store's memory maps in
chunks where it can (npz, BVH); a .glb is assembled in memory by pygltflib (see gltf.py)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from .bvh import held_frames, write_bvh
from .tracks import Track, TrackStore

HUMANOID_FORMATS = ("bvh", "gltf")
FORMAT_SUFFIX = {"npz": ".npz", "bvh": ".bvh", "gltf": ".glb"}
CHUNK = 2048
# Fields copied into the npz as they are (one row per frame the track was seen).
PER_FRAME = ("frame_index", "timestamp", "wall", "state", "predicted", "coasting", "box", "score", "center",
             "size", "focal", "cam", "cam_t", "joints3d", "joints2d", "joints_h36m")
OPTIONAL = ("rotmat", "rotmat_frame", "betas", "betas_frame")
HUMANOID = ("humanoid_frame", "humanoid_rotations", "humanoid_offsets", "humanoid_root")


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


def write_track(track: Track, out: Path, formats, options, humanoid, faces: Optional[np.ndarray],
                joint_names, info: dict) -> list[str]:
    """Write the track's files in `formats` (obj is written while reading); returns their names."""
    store, fps = track.store, info["fps"]
    written = []
    has_pose = humanoid is not None and "humanoid_rotations" in store
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
        np.savez(out / f"{track.name}.npz", **arrays)
        written.append(f"{track.name}.npz")
    if not set(formats) & set(HUMANOID_FORMATS):
        return written
    if not has_pose:
        info["note"] = "no frame of this track carries vertices, so no skeleton: no BVH or glTF file"
        return written
    names, parents = list(humanoid.BONES), np.asarray(humanoid.PARENTS)
    offsets = skeleton_offsets(store)
    frames = np.asarray(store.array("humanoid_frame"))  # the frames with a skeleton (with vertices)
    info["animation_frames"] = [int(frames[0]), int(frames[-1])]
    rotations, root = store.array("humanoid_rotations"), store.array("humanoid_root")
    if "bvh" in formats:
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
                  (frames - frames[0]) / fps, mesh=mesh, name=track.name, extras=extras)
        written.append(f"{track.name}.glb")
    return written
