"""A batch video's outputs: where they go (OUT/<name>.msgpack, .json, OUT/<name>/), when they are complete
(the manifest matches the video, the settings, the recording and the exports asked for), and the export
step that turns a finished recording into per-track files (tools/export).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence


class VideoFailed(RuntimeError):
    """The pipeline refused this video (its own error line), or its export failed. Not retried: it would fail
    the same way."""


@dataclass(frozen=True)
class Job:
    video: Path
    name: str  # output stem, unique within the batch
    out_dir: Path

    @property
    def recording(self) -> Path:
        return self.out_dir / f"{self.name}.msgpack"

    @property
    def manifest(self) -> Path:
        return self.out_dir / f"{self.name}.json"

    @property
    def exports(self) -> Path:
        return self.out_dir / self.name


def fingerprint(video: Path) -> dict:
    st = video.stat()
    return {"video": str(video), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def settings_key(config_file: Optional[str], overrides: Sequence[str]) -> str:
    """What the settings were: a video run with other settings is not done."""
    text = Path(config_file).read_text() if config_file else ""
    return hashlib.sha256(json.dumps([text, list(overrides)]).encode()).hexdigest()[:16]


def read_manifest(job: Job, settings: Optional[str] = None) -> Optional[dict]:
    """The manifest, when it is of this very video, these settings and the recording beside it."""
    try:
        m = json.loads(job.manifest.read_text())
        ok = (m.get("source") == fingerprint(job.video) and job.recording.is_file()
              and (settings is None or m.get("settings") == settings)
              and job.recording.stat().st_size == m.get("recording_bytes"))
        return m if ok else None
    except (OSError, ValueError, AttributeError):
        return None


def export_key(options) -> dict:
    """What an export was asked for (tools.export.ExportOptions): other options, other files."""
    return {"formats": list(options.formats), "vertices": options.vertices, "gltf_mesh": bool(options.gltf_mesh),
            "frames": None if options.frames is None else list(options.frames), "stream": options.stream}


def files_in(folder: Path) -> int:
    return sum(1 for f in folder.rglob("*") if f.is_file())


def exports_complete(job: Job, manifest: dict, export) -> bool:
    e = manifest.get("exports")
    if not isinstance(e, dict) or e.get("options") != export_key(export):
        return False
    index = job.exports / "tracks.json"
    try:
        return index.stat().st_size == e.get("index_bytes") and files_in(job.exports) == e.get("files")
    except OSError:
        return False


def is_complete(job: Job, settings: Optional[str] = None, export=None) -> bool:
    """The recording and its manifest exist, and the manifest is of this very video, these settings and this
    recording; with `export` (tools.export.ExportOptions) its files exist too, made with these options."""
    m = read_manifest(job, settings)
    return m is not None and (export is None or exports_complete(job, m, export))


def write_manifest(job: Job, manifest: dict) -> None:
    tmp = job.manifest.with_suffix(".json.part")
    tmp.write_text(json.dumps(manifest, indent=1))
    os.replace(tmp, job.manifest)


def export_video(job: Job, manifest: dict, export) -> dict:
    """The recording to per-track files, made in a temporary folder and moved to OUT/<name>/ when complete;
    the manifest then says with which options and what was written. A failure fails the video."""
    from tools.export.exporter import ExportError, export_recording
    from tools.export.tracks import RecordingError

    for stale in job.out_dir.glob(f".{job.name}.*.exporting"):  # left by a try whose worker was killed
        shutil.rmtree(stale, ignore_errors=True)
    tmp = job.out_dir / f".{job.name}.{uuid.uuid4().hex[:8]}.exporting"
    try:
        summary = export_recording(job.recording, tmp, export)
    except (ExportError, RecordingError, OSError) as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise VideoFailed(f"{job.video}: export: {e}") from None
    if job.exports.is_dir():
        shutil.rmtree(job.exports)
    elif job.exports.exists():
        job.exports.unlink()
    os.replace(tmp, job.exports)
    summary_note = {"note": summary.note} if summary.note else {}
    manifest = {**manifest, "exports": {
        "options": export_key(export), "directory": job.exports.name, "tracks": len(summary.tracks),
        "files": files_in(job.exports), "index_bytes": (job.exports / "tracks.json").stat().st_size,
        **summary_note}}
    write_manifest(job, manifest)
    return manifest
