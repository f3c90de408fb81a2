"""`export_recording`: a recording to one file per track and format (npz, bvh, gltf, obj) and an index,
tracks.json, that says per track its frame range, rate, gaps, how it ended, and what was written.

Frames stream through: a person's values go to its track's scratch files as they are read, and a track's
files are written when it ends (the stream lists it as lost) or the recording does. Every file is written
into the scratch folder first and moved into the output directory only when the whole export succeeded:
a failed export (a full disk, a damaged track) leaves one line of error and no file half written. The humanoid skeleton
(`fastmetro.humanoid`) turns each person-frame into local bone rotations and a root position for the
npz, BVH and glTF files.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import numpy as np

from .hands import append_hands, frame_hands
from .tracks import DEFAULT_FPS, RateEstimate, ReadStatus, RecordingError, Track, TrackStore, read_frames
from .writers import HUMANOID_FORMATS, humanoid_module, write_track

FORMATS = ("npz", "bvh", "gltf", "obj", "fbx", "blend")
BLENDER_FORMATS = ("fbx", "blend")  # written by Blender (bpy), tools/export/blender.py
VERTEX_OPTIONS = ("none", "float32", "float16")
# Frame rates an export believes: outside this range the timestamps are wrong (a BVH "Frame Time" of
# 0.00000000, or hours per frame), and the recording's rate, else 30, is used instead (tracks.json says so).
FPS_RANGE = (0.01, 10000.0)


class ExportError(ValueError):
    """Something the user can fix: a format, a directory, a file. The message is one line."""


@dataclass
class ExportOptions:
    formats: tuple = ("npz",)
    vertices: str = "none"  # npz: "none", "float32" or "float16"
    gltf_mesh: bool = False  # glb: the mesh itself as per-frame meshes, as well as the skeleton
    frames: Optional[tuple] = None  # (first, last) frame indices, inclusive; None = all
    stream: Optional[str] = None  # the recording's stream to export; None = the first with frames
    body: bool = False  # glb, fbx: each track's skinned body (tools/export/skin.py); a .blend always has it
    video: Optional[str] = None  # blend: the source video, the camera's background
    rig: str = "unity"  # bvh, gltf, fbx, blend: bone names and rest pose (tools/export/rigs.py)
    world: Optional[bool] = None  # the world frame and foot locking: None = when the recording can be calibrated
    camera: Optional[str] = None  # a camera.json to place the persons with (instead of calibrating)


@dataclass
class ExportSummary:
    directory: Path
    frames: int = 0
    person_frames: int = 0
    tracks: list = field(default_factory=list)  # tracks.json's entries
    files: int = 0
    note: Optional[str] = None  # where an incomplete recording stopped
    warnings: list = field(default_factory=list)  # one line each: what the files do not hold, and why
    seconds: float = 0.0


def parse_formats(values: Union[str, Sequence[str]]) -> tuple:
    """'npz,bvh' or ['npz', 'bvh'] -> ('npz', 'bvh'); an unknown name is an `ExportError`."""
    items = [values] if isinstance(values, str) else list(values)
    out: list[str] = []
    for item in items:
        for name in str(item).split(","):
            name = name.strip().lower()
            if name == "glb":
                name = "gltf"
            if not name:
                continue
            if name not in FORMATS:
                raise ExportError(f"unknown export format {name!r}: choose from {', '.join(FORMATS)}")
            if name not in out:
                out.append(name)
    if not out:
        raise ExportError(f"no export format given: choose from {', '.join(FORMATS)}")
    return tuple(out)


def check_blender(formats) -> None:
    """The formats Blender writes need a Python with bpy: an `ExportError` (one line) when there is none."""
    for name in sorted(set(formats) & set(BLENDER_FORMATS)):
        from .blender import BlenderMissing, blender_python

        try:
            blender_python(name)
        except BlenderMissing as e:
            raise ExportError(str(e)) from None


def output_dir(path: Union[str, os.PathLike]) -> Path:
    """Create the directory if needed and make sure files can be written in it (one-line error if not)."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as e:
        raise ExportError(f"cannot write to {path}: {e.strerror or e}") from None
    return path


def export_recording(recording: Union[str, os.PathLike], out_dir: Union[str, os.PathLike],
                     options: Optional[ExportOptions] = None,
                     progress: Optional[Callable[[int, int, int], None]] = None) -> ExportSummary:
    """Export every track of `recording` into `out_dir`. progress(frames, person_frames, tracks_written)
    is called after each frame."""
    options = options or ExportOptions()
    formats = parse_formats(options.formats)
    options = dataclasses.replace(options, formats=formats)
    if options.vertices not in VERTEX_OPTIONS:
        raise ExportError(f"vertices must be one of {', '.join(VERTEX_OPTIONS)}, got {options.vertices!r}")
    recording = Path(recording)
    if not recording.is_file():
        raise ExportError(f"recording {recording} not found")
    if "gltf" in formats:
        if importlib.util.find_spec("pygltflib") is None:
            raise ExportError("gltf needs pygltflib: pip install 'fastmetro-stream[export]'")
    check_blender(formats)
    from .rigs import RIGS

    if options.rig not in RIGS:
        raise ExportError(f"unknown rig {options.rig!r}: choose from {', '.join(RIGS)}")
    if options.video is not None and not Path(options.video).is_file():
        raise ExportError(f"video {options.video} not found")
    humanoid = humanoid_module()
    if humanoid is None and set(formats) & set(HUMANOID_FORMATS):
        raise ExportError(f"{', '.join(HUMANOID_FORMATS)} need the humanoid skeleton (fastmetro.humanoid), "
                          "missing from this build")
    if "obj" in formats:
        from draw.obj import write_obj
    out = output_dir(out_dir)
    started = time.perf_counter()
    world = _world(recording, options)
    summary = ExportSummary(out)
    status = ReadStatus()
    rate = RateEstimate()
    try:
        scratch = Path(tempfile.mkdtemp(prefix=".export-", dir=out))
    except OSError as e:
        raise ExportError(f"cannot write to {out}: {e.strerror or e}") from None
    staged = scratch / "out"  # the export's files until all of them are written
    open_tracks: dict[int, Track] = {}
    uses: dict[int, int] = {}
    faces = joint_names = None
    policy = _hand_policy(humanoid)  # the finger bones (fastmetro.humanoid_hand_policy), per track
    hand_frames = 0
    camera: dict = {}
    blend = None
    if "blend" in formats:
        from .blend import BlendScene

        blend = BlendScene(scratch / "blend")

    def close(track: Track, end: str) -> None:
        track.end = end
        fps, fps_note = _believable_fps(track.fps(_believable_fps(rate.fps)[0]))
        info = track.info(fps)
        if fps_note:
            info["note"] = fps_note
        if world is not None:
            info["world"] = world.finish_track(track, humanoid)
        try:
            info["files"] = write_track(track, staged, formats, options, humanoid, faces, joint_names, info, blend)
        except ValueError as e:  # a writer refusing this track's values: one line, nothing written (staged)
            raise ExportError(f"cannot write {track.name}: {e}; nothing was written") from None
        track.store.remove()
        if policy is not None:
            policy.forget(track.track_id)
        summary.files += len(info["files"])
        summary.tracks.append(info)
        if info.get("refused"):
            summary.warnings.append(f"{track.name}: {info['refused']}")

    try:
        staged.mkdir()
        for frame in read_frames(recording, options.stream, status):
            rate.add(frame.index, frame.pts)
            if frame.focal:
                camera.update(focal=float(frame.focal), width=int(frame.width), height=int(frame.height))
            if frame.topology is not None:
                faces = frame.topology.faces
                joint_names = (frame.topology.joint_names, frame.topology.h36m_joint_names)
            inside = options.frames is None or options.frames[0] <= frame.index <= options.frames[1]
            persons = frame.persons if inside else []
            # the skeleton is solved from the mesh: persons in frames sent without vertices get none
            solvable = [i for i, p in enumerate(persons) if p.vertices is not None] if humanoid else []
            pose = humanoid.solve_persons([persons[i] for i in solvable]) if solvable else None
            finite = [] if pose is None else np.isfinite(pose.rotations).all((1, 2)) & np.isfinite(pose.root).all(1)
            pose_row = {i: k for k, i in enumerate(solvable) if finite[k]}  # a degenerate mesh gets no skeleton
            fingers = frame_hands(policy, humanoid, pose, persons, pose_row, frame) if policy is not None else {}
            for i, p in enumerate(persons):
                track = open_tracks.get(p.track_id)
                if track is None:
                    uses[p.track_id] = uses.get(p.track_id, 0) + 1
                    name = f"track_{p.track_id:04d}" + (f"-{uses[p.track_id]}" if uses[p.track_id] > 1 else "")
                    track = open_tracks[p.track_id] = Track(p.track_id, name, TrackStore(scratch / name))
                coasting = p.state == "coasting" or bool(p.predicted)
                track.add_frame(frame.index, frame.pts, coasting)
                _append(track.store, frame, p, coasting, options, pose, pose_row.get(i), fingers.get(pose_row.get(i)))
                # hands the files cannot hold as finger bones: a person-frame without a skeleton
                hand_frames += bool(getattr(p, "hands", None)) and pose_row.get(i) not in fingers
                if "obj" in formats and p.vertices is not None and faces is not None:
                    folder = staged / "obj" / track.name
                    folder.mkdir(parents=True, exist_ok=True)
                    write_obj(folder / f"frame_{frame.index:06d}.obj", p.vertices, faces, p.cam_t)
                    summary.files += 1
            summary.frames += 1
            summary.person_frames += len(persons)
            for tid in frame.lost:
                if tid in open_tracks:
                    close(open_tracks.pop(tid), f"lost at frame {frame.index}")
            if progress is not None:
                progress(summary.frames, summary.person_frames, len(summary.tracks))
        if summary.frames == 0:
            if options.stream is not None and status.streams and options.stream not in status.streams:
                raise RecordingError(f"{recording} holds no stream {options.stream!r}; its streams: "
                                     f"{', '.join(sorted(status.streams))}")
            raise RecordingError(f"no frames read: {status.damage}" if status.damage else f"{recording} holds no frames")
        summary.note = status.note()
        end = "the recording ended" if summary.note is None else "the recording stopped"
        for tid in list(open_tracks):
            close(open_tracks.pop(tid), end)
        summary.seconds = time.perf_counter() - started
        summary.tracks.sort(key=lambda t: (t["first_frame"], t["name"]))
        if hand_frames:
            summary.warnings.append(f"{hand_frames} person-frames carry hands but no skeleton (sent without "
                                    f"vertices): the files hold no finger bones there (tracks.json: hands_dropped)")
        index = {"recording": str(recording), "frames": summary.frames, "person_frames": summary.person_frames,
                 "fps": _believable_fps(rate.fps)[0], "complete": summary.note is None, "note": summary.note,
                 "skipped_records": status.skipped, "formats": list(formats),
                 "humanoid": humanoid is not None, "hands_dropped": hand_frames, "tracks": summary.tracks}
        index["world"] = None if world is None else world.to_json()
        if world is not None:
            world.save(staged)
            # the scene's camera where the calibration puts it, at the focal the tracks were placed with
            if camera:
                camera.update(focal=float(world.focal), world_from_camera=world.camera.world_from_camera().tolist())
        if blend is not None:
            fps = _believable_fps(rate.fps)[0] if rate.fps else (summary.tracks[0]["fps"] if summary.tracks else DEFAULT_FPS)
            if blend.write(staged / f"{recording.stem}.blend", fps, camera or None, options.video):
                summary.files += 1
        (staged / "tracks.json").write_text(json.dumps(index, indent=1))
        _move_into(staged, out)
    except OSError as e:  # a full disk, a file over the size limit, a folder gone
        where = f" ({e.filename})" if getattr(e, "filename", None) else ""
        raise ExportError(f"cannot write the export to {out}: {e.strerror or e}{where}; nothing was written") from None
    finally:
        for track in open_tracks.values():
            track.store.remove()
        shutil.rmtree(scratch, ignore_errors=True)
    return summary


def _hand_policy(humanoid):
    """The Hand bones' seen / held / relaxed policy, where there is a skeleton solver (numpy only, as it)."""
    if humanoid is None:
        return None
    from fastmetro.humanoid_hand_policy import HandPolicy

    return HandPolicy()


def _believable_fps(fps: Optional[float]) -> tuple[Optional[float], Optional[str]]:
    """fps when it lies in FPS_RANGE (or is None), else the default and a note saying why."""
    if fps is None or FPS_RANGE[0] <= fps <= FPS_RANGE[1]:
        return fps, None
    return DEFAULT_FPS, (f"the timestamps give {fps:.6g} frames per second, outside {FPS_RANGE[0]:g} to "
                         f"{FPS_RANGE[1]:g}: written at {DEFAULT_FPS:g}")


def _world(recording: Path, options: ExportOptions):
    """The export's world (tools/export/world.py), or None; an ExportError when it is asked for and cannot be."""
    from .world import WorldError, WorldExport

    try:
        return WorldExport.prepare(recording, options.stream, options.world, options.camera)
    except (WorldError, ValueError) as e:
        raise ExportError(f"--world: {e}" if isinstance(e, WorldError) else str(e)) from None


def _move_into(staged: Path, out: Path) -> None:
    """Move every file under `staged` to the same place under `out` (renames within one file system: a
    file is either its old self or the new one, never half written)."""
    for path in sorted(staged.rglob("*")):
        if path.is_file():
            target = out / path.relative_to(staged)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, target)


def _append(store: TrackStore, frame, p, coasting: bool, options: ExportOptions, pose, i: Optional[int],
            fingers: Optional[tuple] = None) -> None:
    """One person-frame into its track's scratch files (exactly the values the recording holds)."""
    store.append("frame_index", np.int64(frame.index))
    store.append("timestamp", np.float64(np.nan if frame.pts is None else frame.pts))
    store.append("wall", np.float64(frame.wall))
    store.append("state", np.asarray(p.state, "<U8"))
    store.append("predicted", np.bool_(p.predicted))
    store.append("coasting", np.bool_(coasting))
    store.append("box", np.asarray(p.box, np.float32))
    store.append("score", np.float64(p.score))
    store.append("center", np.asarray(p.center, np.float32))
    store.append("size", np.float64(p.size))
    store.append("focal", np.float64(np.nan if frame.focal is None else frame.focal))
    for key in ("cam", "cam_t", "joints3d", "joints2d", "joints_h36m"):
        store.append(key, np.asarray(getattr(p, key), np.float32))
    for key in ("rotmat", "betas"):
        value = getattr(p, key)
        if value is not None:
            store.append(key, np.asarray(value, np.float32))
            store.append(f"{key}_frame", np.int64(frame.index))
    if p.vertices is not None and (options.vertices != "none" or options.gltf_mesh or options.body
                                   or "blend" in options.formats):
        store.append("vertices", np.asarray(p.vertices, np.float32))
        store.append("vertices_frame", np.int64(frame.index))
    if i is not None:
        store.append("humanoid_frame", np.int64(frame.index))
        rotations = pose.rotations[i] if fingers is None else fingers[0][: pose.rotations.shape[1]]  # Hand: blended
        store.append("humanoid_rotations", np.asarray(rotations, np.float32))
        store.append("humanoid_offsets", np.asarray(pose.offsets[i], np.float32))
        store.append("humanoid_root", np.asarray(pose.root[i], np.float32))
        if fingers is not None:
            append_hands(store, frame.index, fingers, pose.rotations.shape[1])
