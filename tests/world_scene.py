"""Synthetic scenes (fastmetro.world_synth) as the pipeline's messages and as a --record file, for the world
and foot tests."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from fastmetro.world_synth import SynthScene
from pipeline import wire
from pipeline.messages import Frame, MeshFrame, Person, PersonMesh

F32 = np.float32


def mesh_frames(scene: SynthScene, source: str = "default") -> list[MeshFrame]:
    """One MeshFrame per scene frame, placed at the assumed focal (as the infer stage places them); no vertices."""
    w, h = scene.frame_wh
    out = []
    seen: set[int] = set()
    for i, persons in enumerate(scene.frames):
        frame = Frame(source=source, index=i, pts=i / scene.spec.fps, slot=-1, height=h, width=w,
                      times={"decode": 0.0}, dropped=0)
        pms = []
        for k, p in enumerate(persons):
            state = "tracked" if p.track_id in seen else "new"
            seen.add(p.track_id)
            person = Person(track_id=p.track_id, state=state, box=tuple(float(v) for v in p.box), score=p.score,
                            center=(float(p.center[0]), float(p.center[1])), size=float(p.size), crop_index=k)
            pms.append(PersonMesh(person=person, cam=p.cam.astype(F32), cam_t=p.cam_t.astype(F32),
                                  joints3d=p.joints3d.astype(F32), joints_h36m=p.joints_h36m.astype(F32),
                                  joints2d=p.joints2d.astype(F32), vertices=np.zeros((0, 3), F32)))
        out.append(MeshFrame(frame=frame, persons=pms, lost=[], focal=scene.assumed_focal))
    return out


def write_recording(scene: SynthScene, path: Path, faces: np.ndarray, frames=None, stream: str = "default") -> Path:
    """A --record file of the scene (or of `frames`, MeshFrames already processed): a topology, then one frame
    message each (no vertices), then the end."""
    from pipeline.messages import EndOfStream

    frames = frames if frames is not None else mesh_frames(scene, stream)
    writer = wire.RecordWriter(path)
    from fastmetro import H36M_JOINT_NAMES, JOINT_NAMES

    writer.write(0.0, wire.topic(stream, "topology"),
                 wire.encode_topology(stream, 0, faces, JOINT_NAMES, H36M_JOINT_NAMES, vertices_every=0))
    for seq, mf in enumerate(frames):
        writer.write(seq / scene.spec.fps, wire.topic(stream, "frame"),
                     wire.encode_frame(mf, stream, seq, with_vertices=False))
    writer.write(len(frames) / scene.spec.fps, wire.topic(stream, "end"),
                 wire.encode_end(EndOfStream(stream, len(frames)), stream, len(frames)))
    writer.close()
    return Path(path)
