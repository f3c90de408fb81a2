"""`fastmetro-stream batch`: an archive of videos through the pipeline, one Ray task per video.

    fastmetro-stream batch takes/*.mp4 -o out/                      # a local Ray on this machine
    fastmetro-stream batch takes/ -o out/ --ray-address auto        # join a running cluster
    fastmetro-stream batch takes/ -o out/ --export bvh,gltf           # and per-track files in out/<name>/

Each video becomes one task that runs the whole pipeline on it (offline, nothing dropped) and writes
OUT/<name>.msgpack, then OUT/<name>.json (the manifest: what was read, how many frames came out), and with
`--export` the recording's per-track files (tools/export) in OUT/<name>/. A video counts as done only when
its outputs exist and the manifest still matches the video's size and time, the settings, the recording
and the exports asked for, so a re-run skips finished videos and redoes the rest (a video whose recording
is done but whose exports are missing or of other formats is only exported again). The recording and the
export folder are written under temporary names and moved into place when complete: a killed task never
leaves a file that looks complete. A failed export fails its video (the recording is kept).

A task whose worker dies (a killed process, a lost node) is retried by Ray (`--retries`); a video the
pipeline refuses (unreadable, no video stream) fails at once with the pipeline's own error line, and the
other videos go on. Ray is an optional extra: `pip install fastmetro-stream[ray]`; nothing else imports it.
"""
from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from .batch_outputs import (Job, VideoFailed, export_video, exports_complete, fingerprint,  # noqa: F401
                            is_complete, read_manifest, settings_key, write_manifest)

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".ts", ".mts", ".mpg", ".mpeg", ".flv", ".wmv")


class BatchError(ValueError):
    """Something the user can fix before any video runs (no videos, no Ray, an unwritable folder)."""


class RunInterrupted(RuntimeError):
    """The run on this video stopped before its end for a reason that may pass (a stage died). Retried."""


@dataclass
class BatchSummary:
    done: list[str] = field(default_factory=list)  # names run now
    skipped: list[str] = field(default_factory=list)  # complete from an earlier run
    failed: dict[str, str] = field(default_factory=dict)  # name -> error line
    frames: int = 0  # frames recorded by the videos run now
    elapsed_s: float = 0.0

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0


# ------------------------------------------------------------------------------------------- planning
def find_videos(inputs: Sequence[str]) -> list[Path]:
    """Files as given, folders searched (recursively) for video files, in name order; duplicates once."""
    found: list[Path] = []
    for text in inputs:
        p = Path(text)
        if p.is_dir():
            found += sorted(q for q in p.rglob("*") if q.is_file() and q.suffix.lower() in VIDEO_SUFFIXES)
        elif p.is_file():
            found.append(p)
        else:
            raise BatchError(f"{text}: no such file or folder")
    seen, videos = set(), []
    for p in found:
        key = p.resolve()
        if key not in seen:
            seen.add(key)
            videos.append(key)
    if not videos:
        raise BatchError(f"no videos found in {', '.join(inputs)} (looked for {', '.join(VIDEO_SUFFIXES)})")
    return videos


def plan(videos: Sequence[Path], out_dir: Path) -> list[Job]:
    """One job per video; outputs named by the video's stem, or by its path below the videos' common folder
    where stems collide (a/take1.mp4 and b/take1.mp4 -> a_take1, b_take1)."""
    stems = [v.stem for v in videos]
    if len(set(stems)) == len(stems):
        names = stems
    else:
        common = Path(os.path.commonpath([str(v.parent) for v in videos]))
        names = ["_".join(v.relative_to(common).with_suffix("").parts) for v in videos]
    return [Job(v, n, out_dir) for v, n in zip(videos, names)]


# ------------------------------------------------------------------------------------------ one video
def run_video(job: Job, config_file: Optional[str], overrides: Sequence[str], progress=None,
              settings: Optional[str] = None, export=None) -> dict:
    """Run the pipeline on one video into its recording and manifest, and with `export`
    (tools.export.ExportOptions) the recording into per-track files in OUT/<name>/; returns the manifest,
    with "ran": False when the recording was already done and only the export was made.

    settings: the key the manifest keeps (default: of config_file and overrides; the batch passes the key of
    the user's own settings, before it added the device).

    progress: an object with `.add(name, frames)` (a Ray actor handle's method or a plain object), told the
    published frame count about once a second."""
    settings = settings or settings_key(config_file, overrides)
    manifest = read_manifest(job, settings)
    ran = manifest is None
    if ran:
        manifest = _record(job, config_file, overrides, progress, settings)
    if export is not None and not exports_complete(job, manifest, export):
        manifest = export_video(job, manifest, export)
    return {**manifest, "ran": ran}


def _record(job: Job, config_file: Optional[str], overrides: Sequence[str], progress, settings: str) -> dict:
    """The pipeline on the video into its recording and manifest (without exports)."""
    from rich.console import Console

    from fastmetro_stream.api import run
    from fastmetro_stream.config import ConfigError, load_config

    part = job.out_dir / f".{job.name}.{uuid.uuid4().hex[:8]}.part"
    values = list(overrides) + [
        f"publish.record={part}",
        "publish.mode=latest",  # nobody subscribes to a batch task: latest never waits for a consumer
        "publish.endpoint=tcp://127.0.0.1:*",  # tasks share machines: each binds a free port
        "overlay.path=null",
        "progress=false",
    ]
    try:
        config = load_config(config_file, values, source=str(job.video), mode="offline")
    except ConfigError as e:
        raise VideoFailed(f"{job.video}: {e}") from None

    reported = [0, 0.0]

    def on_progress(metrics) -> None:
        if progress is None or time.monotonic() - reported[1] < 1.0:
            return
        published = list(metrics.values())[-1].items_in
        if published > reported[0]:
            progress.add(job.name, published - reported[0])
            reported[0], reported[1] = published, time.monotonic()

    with open(os.devnull, "w") as quiet:
        try:
            summary = run(config, console=Console(file=quiet), on_progress=on_progress)
        except Exception as e:  # found before any stage started: a missing or unreadable file
            part.unlink(missing_ok=True)
            raise VideoFailed(f"{job.video}: {e}") from None
    if progress is not None and summary.frames > reported[0]:
        progress.add(job.name, summary.frames - reported[0])
    if summary.exit_code != 0 or summary.reason != "end of stream":
        part.unlink(missing_ok=True)
        line = (summary.error or summary.reason).strip().splitlines()[-1]
        if summary.error and "killed" not in summary.error:
            raise VideoFailed(f"{job.video}: {line}")
        raise RunInterrupted(f"{job.video}: {line}")
    manifest = {
        "source": fingerprint(job.video),
        "settings": settings,
        "recording": job.recording.name,
        "recording_bytes": part.stat().st_size,
        "frames": summary.frames,
        "person_frames": summary.persons,
        "elapsed_s": round(summary.elapsed_s, 3),
        "untrained": bool(summary.untrained),
    }
    job.manifest.unlink(missing_ok=True)  # an earlier run's manifest never vouches for the new recording
    os.replace(part, job.recording)
    for stale in job.out_dir.glob(f".{job.name}.*.part"):  # left by a try whose worker was killed
        stale.unlink(missing_ok=True)
    write_manifest(job, manifest)
    return manifest


# ----------------------------------------------------------------------------------------- the batch
def _ray():
    try:
        import ray
    except ImportError:
        raise BatchError("batch needs Ray: pip install 'fastmetro-stream[ray]'") from None
    return ray


def run_batch(inputs: Sequence[str], out_dir, *, ray_address: Optional[str] = None,
              config_file: Optional[str] = None, overrides: Sequence[str] = (), retries: int = 2,
              cpus_per_video: float = 2.0, gpus_per_video: Optional[float] = None, force: bool = False,
              export=None, console=None) -> BatchSummary:
    """Every video through the pipeline as a Ray task; one progress bar; failures reported, never skipped.
    export: tools.export.ExportOptions: each video's recording also exported to per-track files in OUT/<name>/."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = console or Console(stderr=True)
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / f".write-test-{uuid.uuid4().hex[:8]}"
        probe.touch()
        probe.unlink()
    except OSError as e:
        raise BatchError(f"output folder {out_dir}: cannot write there ({e.strerror or e})") from None
    jobs = plan(find_videos(inputs), out_dir.resolve())
    from fastmetro import UNTRAINED_MESSAGE
    from fastmetro_stream.config import ConfigError, load_config

    try:  # a wrong setting is named here, once, before any task starts
        config = load_config(config_file, overrides, source=str(jobs[0].video), mode="offline")
    except ConfigError as e:
        raise BatchError(str(e)) from None
    if export is not None:
        from tools.export.exporter import VERTEX_OPTIONS, ExportError, check_blender, parse_formats

        try:
            check_blender(parse_formats(export.formats))  # fbx and blend need Blender: said before Ray starts
        except ExportError as e:
            raise BatchError(f"--export: {e}") from None
        if export.vertices not in VERTEX_OPTIONS:
            raise BatchError(f"--export-vertices: one of {', '.join(VERTEX_OPTIONS)}, got {export.vertices!r}")
    untrained = config.infer.checkpoint is None
    if untrained:
        console.print(f"[bold red]WARNING: {UNTRAINED_MESSAGE}[/bold red]")
    settings = settings_key(config_file, overrides)
    summary = BatchSummary()
    todo = []
    for job in jobs:
        if not force and is_complete(job, settings, export):
            summary.skipped.append(job.name)
        else:
            todo.append(job)
    if summary.skipped:
        console.print(f"batch: {len(summary.skipped)} of {len(jobs)} videos already done in {out_dir} (skipped)")
    if not todo:
        return summary

    ray = _ray()
    started_here = not ray.is_initialized()
    if started_here:
        if ray_address:
            ray.init(address=ray_address, log_to_driver=False)
        else:
            ray.init(include_dashboard=False, log_to_driver=False)
    try:
        if gpus_per_video is None:
            gpus_per_video = 1.0 if ray.cluster_resources().get("GPU", 0) >= 1 else 0.0
        if gpus_per_video == 0:
            overrides = [*overrides, "infer.device=cpu"]

        @ray.remote
        class Counter:
            def __init__(self):
                self.frames = 0

            def add(self, name: str, n: int) -> None:
                self.frames += n

            def total(self) -> int:
                return self.frames

        counter = Counter.remote()
        # max_retries: the worker died (killed, out of memory, node lost); retry_exceptions: a stage died.
        task = ray.remote(num_cpus=cpus_per_video, num_gpus=gpus_per_video, max_retries=retries,
                          retry_exceptions=[RunInterrupted])(_task)
        if force:  # every video runs again: no recording vouches for itself
            for job in todo:
                job.manifest.unlink(missing_ok=True)
        refs = {task.remote(job, config_file, list(overrides), counter, settings, export): job for job in todo}
        t0 = time.monotonic()
        columns = (TextColumn("[bold]batch"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                   TimeElapsedColumn())
        with Progress(*columns, console=console, disable=not console.is_terminal) as bar:
            bar_id = bar.add_task("videos", total=len(todo), info="")
            pending = list(refs)
            while pending:
                ready, pending = ray.wait(pending, num_returns=1, timeout=0.5)
                for ref in ready:
                    job = refs[ref]
                    try:
                        manifest = ray.get(ref)
                        summary.done.append(job.name)
                        if manifest["ran"]:
                            summary.frames += manifest["frames"]
                        made = f" + {manifest['exports']['files']} files in {job.exports}" if "exports" in manifest else ""
                        console.print(f"done   {job.name}: " + (f"{manifest['frames']} frames -> {job.recording}"
                                      if manifest["ran"] else "recording already done, exported") + made,
                                      highlight=False)
                    except Exception as e:  # ray wraps the task's exception
                        line = _error_line(e)
                        summary.failed[job.name] = line
                        console.print(f"[red]failed {job.name}: {line}[/red]", highlight=False)
                    bar.advance(bar_id)
                frames = max(ray.get(counter.total.remote()), summary.frames)  # (live counts lag a little)
                fps = frames / max(time.monotonic() - t0, 1e-9)
                bar.update(bar_id, info=f"done {len(summary.done)}  failed {len(summary.failed)}  "
                                        f"{frames} frames  {fps:.1f} frames/s")
        summary.elapsed_s = time.monotonic() - t0
    finally:
        if started_here:
            ray.shutdown()
    if untrained:
        console.print(f"[bold red]WARNING: {UNTRAINED_MESSAGE}[/bold red]")
    return summary


def _task(job: Job, config_file, overrides, counter, settings, export) -> dict:
    class _Report:  # the run's progress, sent to the batch's counter actor
        def add(self, name, n):
            counter.add.remote(name, n)

    return run_video(job, config_file, overrides, progress=_Report(), settings=settings, export=export)


def _error_line(e: BaseException) -> str:
    """The task's own message, without Ray's wrapping and traceback."""
    cause = getattr(e, "cause", None)
    if isinstance(cause, BaseException):
        e = cause
    text = str(e).strip()
    return text.splitlines()[-1] if text else type(e).__name__


# --------------------------------------------------------------------------------------- the command
def batch_command(args) -> int:
    overrides = list(args.overrides)
    if args.checkpoint:
        overrides.append(f"infer.checkpoint={args.checkpoint}")
    export = None
    try:
        if args.export:
            from tools.export.exporter import ExportError, ExportOptions, parse_formats

            try:
                export = ExportOptions(formats=parse_formats(args.export), vertices=args.export_vertices,
                                       gltf_mesh=args.export_gltf_mesh)
            except ExportError as e:
                raise BatchError(f"--export: {e}") from None
        summary = run_batch(args.videos, args.output, ray_address=args.ray_address, config_file=args.config,
                            overrides=overrides, retries=args.retries, cpus_per_video=args.cpus_per_video,
                            gpus_per_video=args.gpus_per_video, force=args.force, export=export)
    except BatchError as e:
        print(f"error: {e}", flush=True, file=__import__("sys").stderr)
        return 2
    parts = [f"{len(summary.done)} done", f"{len(summary.skipped)} skipped (already done)",
             f"{len(summary.failed)} failed"]
    print(f"batch: {', '.join(parts)}; {summary.frames} frames in {summary.elapsed_s:.1f} s", flush=True)
    for name, line in summary.failed.items():
        print(f"failed: {name}: {line}", flush=True)
    return summary.exit_code


def add_commands(subparsers) -> None:
    p = subparsers.add_parser("batch", help="many videos through the pipeline as Ray tasks (pip install .[ray])")
    p.add_argument("videos", nargs="+", metavar="VIDEO", help="video files, or folders searched for videos")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="one recording (+ manifest) per video here")
    p.add_argument("--ray-address", metavar="ADDR", help="join this Ray cluster (e.g. auto); default: a local Ray")
    p.add_argument("--config", "-c", metavar="FILE", help="YAML settings for every video (see configs/)")
    p.add_argument("--set", dest="overrides", metavar="KEY=VALUE", action="append", default=[],
                   help="override one setting for every video (repeatable)")
    p.add_argument("--checkpoint", help="FastMETRO checkpoint: a name from `weights` or a file path")
    p.add_argument("--retries", type=int, default=2, help="times Ray retries a video whose run died (default 2)")
    p.add_argument("--cpus-per-video", type=float, default=2.0, help="Ray CPUs each video's task asks for")
    p.add_argument("--gpus-per-video", type=float, default=None,
                   help="Ray GPUs (or a fraction) each task asks for; default 1 when the cluster has GPUs, else 0")
    p.add_argument("--force", action="store_true", help="run every video again, even those already done")
    p.add_argument("--export", action="append", metavar="FORMAT[,FORMAT]",
                   help="also export each video's recording to per-track files in OUT/<name>/: npz, bvh, gltf, obj "
                        "(as `fastmetro-stream export`; repeat or comma-separate)")
    p.add_argument("--export-vertices", choices=("none", "float32", "float16"), default="none",
                   help="with --export: mesh vertices in the npz files (default none)")
    p.add_argument("--export-gltf-mesh", action="store_true",
                   help="with --export: the mesh itself in the .glb files, one mesh per frame")
    p.set_defaults(func=batch_command)
