"""Recordings and skeleton motion for the export tests (tests/test_export*.py)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from pipeline import wire
from pipeline.messages import EndOfStream

FPS = 25.0
# Which tracks each frame holds: (track id, state). Track 1 coasts at frames 4-5 and is lost at frame 9;
# track 2 appears at 3, is not seen at 6-7 (a gap), and runs to the end; track 3 appears at 8; id 1 is used
# again from frame 11 (a new track).
LAYOUT = {
    0: [(1, "new")], 1: [(1, "tracked")], 2: [(1, "tracked")], 3: [(1, "tracked"), (2, "new")],
    4: [(1, "coasting"), (2, "tracked")], 5: [(1, "coasting"), (2, "tracked")], 6: [(1, "tracked")],
    7: [(1, "tracked")], 8: [(1, "tracked"), (2, "tracked"), (3, "new")], 9: [(2, "tracked"), (3, "tracked")],
    10: [(2, "tracked"), (3, "tracked")], 11: [(1, "new"), (2, "tracked"), (3, "tracked")],
    12: [(1, "tracked"), (2, "tracked")], 13: [(1, "tracked"), (2, "tracked")],
}
LOST = {9: [1], 13: [3]}  # frame -> ids that ended there (track 1 after frame 8; track 3 after frame 11)


def layout_frame(index: int, smpl: bool = True):
    """The MeshFrame of LAYOUT[index]: random but valid arrays, persons with the layout's ids and states."""
    persons = LAYOUT[index]
    mf = wire.synthetic_mesh_frame(len(persons), index=index, smpl=smpl, rng=np.random.default_rng(100 + index))
    mf.frame.pts = index / FPS
    for pm, (tid, state) in zip(mf.persons, persons):
        pm.person.track_id = tid
        pm.person.state = state
        pm.predicted = state == "coasting"
        if smpl:
            rng = np.random.default_rng(1000 * index + tid)
            q = rng.normal(size=(24, 4))
            from scipy.spatial.transform import Rotation

            pm.rotmat = Rotation.from_quat(q).as_matrix().astype(np.float32)
    mf.lost = LOST.get(index, [])
    mf.focal = 1468.6
    return mf


def write_layout_recording(path: Path, faces: np.ndarray, frames=None, vertices_every: int = 1,
                           end: bool = True, smpl: bool = True) -> list:
    """A recording of the LAYOUT frames; returns the MeshFrames it holds."""
    frames = sorted(LAYOUT) if frames is None else frames
    rec = wire.RecordWriter(path)
    rec.write(0.0, wire.topic("default", "topology"),
              wire.encode_topology("default", 0, faces, [f"j{i}" for i in range(14)], [f"h{i}" for i in range(17)],
                                   vertices_every=vertices_every))
    out = []
    for seq, i in enumerate(frames):
        mf = layout_frame(i, smpl)
        out.append(mf)
        with_v = vertices_every > 0 and seq % vertices_every == 0
        rec.write(100.0 + seq, wire.topic("default", "frame"),
                  wire.encode_frame(mf, "default", seq, with_vertices=with_v))
    if end:
        rec.write(200.0, wire.topic("default", "end"),
                  wire.encode_end(EndOfStream("default", len(frames)), "default", len(frames)))
    rec.close()
    return out


def mesh_faces() -> np.ndarray:
    """Faces over the synthetic frames' 6,890 vertices (any valid triangles do for the export)."""
    i = np.arange(6888)
    return np.stack([i, i + 1, i + 2], 1).astype(np.int32)


# A recording of posed SMPL template meshes (tests/test_export_consumers.py): track 1 is seen at frames 0-9
# except 4-5 (a gap) and runs to the end; track 2 at 2-7, lost at 8.
POSED_SEEN = {1: [0, 1, 2, 3, 6, 7, 8, 9], 2: [2, 3, 4, 5, 6, 7]}
POSED_ROOTS = {1: np.array([0.5, 0.95, -4.0]), 2: np.array([-0.8, 0.9, -5.5])}
POSED_FPS = 30.0


def write_posed_recording(path: Path, assets_dir: Path, size=(720, 1280), focal: float = 1000.0) -> tuple:
    """The template posed with random rotations, per track and frame, recorded as the stream sends it.
    Returns ({(track, frame): the person's joints as the mesh gives them (y-up)}, {(track, frame): the
    vertices, y-up world}, faces)."""
    from fastmetro import humanoid as hu
    from fastmetro.assets import load_mesh_faces
    from humanoid_data import PosedTemplate, random_rotations, to_camera
    from pipeline.messages import Frame, MeshFrame, Person, PersonMesh

    template = PosedTemplate(assets_dir)
    faces = load_mesh_faces(assets_dir).faces
    rng = np.random.default_rng(3)
    joints, vertices = {}, {}
    persons = {i: [] for i in range(10)}
    for tid, frames in POSED_SEEN.items():
        rot = random_rotations(rng, len(frames), max_angle=0.5)
        root = POSED_ROOTS[tid] + np.cumsum(rng.normal(scale=0.03, size=(len(frames), 3)), 0)
        kp, verts, h36m = template.posed(rot, root)
        for k, f in enumerate(frames):
            joints[tid, f] = hu.key_points(verts[k:k + 1], h36m[k:k + 1])[0, : len(hu.BONES)]
            vertices[tid, f] = verts[k]
            cam_t = to_camera(root[k]).astype(np.float32)
            person = Person(tid, "tracked", (100.0, 100.0, 300.0, 500.0), 0.9, (200.0, 300.0), 440.0)
            persons[f].append(PersonMesh(
                person, np.float32([1, 0, 0]), cam_t, np.zeros((14, 3), np.float32),
                (to_camera(h36m[k]) - cam_t).astype(np.float32), np.zeros((14, 2), np.float32),
                (to_camera(verts[k]) - cam_t).astype(np.float32)))
    rec = wire.RecordWriter(path)
    rec.write(0.0, b"default/topology", wire.encode_topology("default", 0, faces, ["j"] * 14, ["h"] * 17))
    for i in range(10):
        mf = MeshFrame(Frame("default", i, i / POSED_FPS, -1, size[0], size[1]), persons[i],
                       lost=[2] if i == 8 else [])
        mf.focal = focal
        rec.write(0.0, b"default/frame", wire.encode_frame(mf, "default", i))
    rec.write(0.0, b"default/end", wire.encode_end(EndOfStream("default", 10), "default", 10))
    rec.close()
    return joints, vertices, faces


REPO = Path(__file__).resolve().parents[1]


def require(what: str, ok: bool, how: str) -> None:
    """Skip without `what` here; fail under FASTMETRO_REQUIRE_EXPORT_TOOLS (CI installs them all: never skip)."""
    if not ok:
        import pytest

        why = f"{what} not available: {how}"
        if os.environ.get("FASTMETRO_REQUIRE_EXPORT_TOOLS"):
            pytest.fail(why)
        pytest.skip(why)


def bpy_python() -> str:
    """A Python with Blender as a module (bpy 4.5 from PyPI, unpatched): FASTMETRO_BLENDER_PYTHON, else the
    checkout's .venv-blender (scripts/setup.sh makes it: bpy pins numpy < 2), else this one if it has bpy."""
    from tools.export.blender import ENV, BlenderMissing, blender_python

    if not os.environ.get(ENV) and (REPO / ".venv-blender" / "bin" / "python").is_file():
        os.environ[ENV] = str(REPO / ".venv-blender" / "bin" / "python")
    try:
        return blender_python("this test")
    except BlenderMissing as e:
        require("bpy", False, str(e))
