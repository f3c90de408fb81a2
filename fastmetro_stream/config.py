"""The one configuration schema of a run.

Each stage defines its own section beside its code (DecodeConfig in stages/decode.py, ...); this module
composes them with the run-wide settings, and works out what the runtime and the stages are told: the
RunSettings of the supervisor (ring size, ...) and the StageContext every stage gets. Every setting has a default that works, so an empty config
runs the shipped sample. Sources of settings, later ones winning: the defaults, a YAML file
(configs/*.yaml), then `--set key.path=value` overrides from the command line (values in YAML syntax).
An unknown key or a bad value is a ConfigError that names it.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterable, Literal, Optional, Sequence, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pipeline.stage import StageContext
from pipeline.supervisor import RunSettings
from stages.decode import DecodeConfig
from stages.decode_multi import SourceSettings
from stages.detect import DetectConfig
from stages.infer import InferConfig
from stages.overlay import OverlayConfig
from stages.publish import PublishConfig
from stages.smooth import SmoothConfig
from stages.world import WorldConfig
from stages.sources import is_live_source


class ConfigError(ValueError):
    """A configuration that cannot run; the message names the setting."""


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # What to read: a video file, a directory of images, a camera (/dev/video0 or 0), an rtsp:// or
    # http(s):// URL. None: the sample video that ships with the project.
    source: Optional[str] = None
    # The stream's name on the wire (topics, recordings); several pipelines can publish side by side.
    source_id: str = "default"
    # Several sources in one run, instead of `source` (docs/scale.md): a list of entries
    #   - {id: cam0, source: /dev/video0}            # id: its stream id on the wire (unique, no '/')
    #   - {id: door, source: rtsp://..., realtime: true, max_frames: 100}
    # each with, optionally, its own decode settings: realtime, loop, start_frame, max_frames,
    # camera_width, camera_height, camera_fps, camera_format, rtsp_transport, image_fps (else `decode`'s).
    # Each source is decoded in its own thread and published as its own stream; the models are shared.
    sources: Optional[list[SourceSettings]] = None
    # live: the freshest frame wins, stages drop the oldest queued item when behind (counted).
    # offline: nothing is dropped, decoding slows down instead. auto: live for cameras, URLs and
    # realtime-paced files, offline for files and image folders.
    mode: Literal["auto", "live", "offline"] = "auto"
    # Messages waiting between two stages. Small keeps latency low; a few absorb jitter.
    queue_size: int = Field(4, ge=1, le=1024)
    # Frames in flight in shared memory (decode -> infer). Must exceed the frames detect and infer can
    # hold at once; 16 is ~100 MB at 1080p. With an overlay video frames stay in the ring until
    # drawn, and it grows to fit (ring_slots_needed).
    ring_slots: int = Field(16, ge=2, le=1024)
    # Show a progress line while running (frames, fps, persons, drops).
    progress: bool = True
    # Ctrl-C drains what is in flight; seconds it may go without any stage taking an item before every
    # stage is stopped at once (the stop timeout follows progress: a slow drain that moves finishes).
    stop_timeout_s: float = Field(10.0, gt=0, le=3600)

    decode: DecodeConfig = Field(default_factory=DecodeConfig)
    detect: DetectConfig = Field(default_factory=DetectConfig)
    infer: InferConfig = Field(default_factory=InferConfig)
    smooth: SmoothConfig = Field(default_factory=SmoothConfig)
    # The camera over the floor (docs/world.md): calibrated from the persons, fixed from a file, or off.
    world: WorldConfig = Field(default_factory=WorldConfig)
    publish: PublishConfig = Field(default_factory=PublishConfig)
    # The overlay video (`--overlay FILE`): its own stage, before publish, built when overlay.path is set.
    overlay: OverlayConfig = Field(default_factory=OverlayConfig)

    @model_validator(mode="after")
    def _several_sources(self) -> "Config":
        if self.sources is None:
            return self
        if self.source is not None:
            raise ValueError("give either `source` (one source) or `sources` (several), not both")
        if self.source_id != "default":
            raise ValueError("`source_id` names the stream of `source`; with `sources` each entry has its own id")
        if not self.sources:
            raise ValueError("`sources` is empty: give at least one entry {id: ..., source: ...}")
        ids = [s.id for s in self.sources]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            raise ValueError(f"sources: stream id {dup[0]!r} is given twice; each source needs its own id")
        if self.publish.stream is not None:
            raise ValueError("publish.stream renames the one stream of `source`; with `sources` each entry's "
                             "id is its stream id")
        return self

    def stream_ids(self) -> list[str]:
        """The run's stream ids: each source's id, or `source_id` for the one source."""
        return [s.id for s in self.sources] if self.sources else [self.source_id]

    def ring_slots_needed(self) -> int:
        """Slots the ring gets: `ring_slots`, raised when frames keep their slot until the overlay stage
        has drawn them (`overlay.path`) to what the stages can hold at once, so that an offline run cannot
        starve: every queue up to the overlay full, one item in each of the five stages up to it, a detect
        batch, a full infer batch and, offline with the RTS smoother, its window (rts_lag + rts_window +
        max_coast frames) for each source (several sources: at least 4 slots each in any case)."""
        sources = len(self.sources or ())
        if self.overlay.path is None:
            return max(self.ring_slots, 4 * sources)
        n = 4 * self.queue_size + 5 + self.detect.batch_frames + self.infer.max_batch + 2
        return max(self.ring_slots, 4 * sources, n + max(1, sources) * self.smooth.holds_frames(self.mode))

    def resolved(self) -> "Config":
        """A copy with mode 'auto' decided from the source."""
        if self.mode != "auto":
            return self
        live = self.decode.realtime or (self.source is not None and is_live_source(self.source)) or any(
            s.is_live(self.decode) for s in self.sources or ())
        return self.model_copy(update={"mode": "live" if live else "offline"})

    def stage_context(self) -> StageContext:
        """The run-wide facts every stage is given (mode resolved here, once)."""
        mode = self.resolved().mode
        return StageContext(mode=mode, source=self.source, source_id=self.source_id,
                            source_ids=tuple(s.id for s in self.sources or ()),
                            assets_dir=None if self.infer.assets_dir is None else str(self.infer.assets_dir),
                            hand_assets_dir=None if self.infer.hand_assets_dir is None else str(self.infer.hand_assets_dir))

    def run_settings(self) -> RunSettings:
        """What the runtime is told: mode, queues, the frame ring's size (slots, frame pixels, crops)."""
        return RunSettings(mode=self.resolved().mode, queue_size=self.queue_size, ring_slots=self.ring_slots_needed(),
                           max_pixels=self.decode.max_pixels, max_persons=self.detect.max_persons,
                           stop_timeout_s=self.stop_timeout_s)


class _NoAliasLoader(yaml.SafeLoader):
    """The safe loader without anchors and aliases: settings never need them, and a few hundred bytes of
    nested aliases ("billion laughs") expand to gigabytes. An alias is a ConfigError at once."""

    def compose_node(self, parent, index):  # type: ignore[override]
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.YAMLError(f"YAML aliases (*{event.anchor}) are not accepted in settings{event.start_mark}")
        return super().compose_node(parent, index)


def _yaml(text: str) -> Any:
    return yaml.load(text, Loader=_NoAliasLoader)  # noqa: S506 (a SafeLoader subclass)


def _set_dotted(tree: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    for k in keys[:-1]:
        nxt = node.setdefault(k, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"--set {dotted}: {k!r} is a value, not a section")
        node = nxt
    node[keys[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected key=value, e.g. --set detect.detector=hog")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"--set {text!r}: empty key")
    try:
        value = _yaml(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key, value


def _explain(e: ValidationError) -> str:
    lines = []
    for err in e.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(root)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown setting"
        got = err.get("input")
        shown = "" if err["type"] == "extra_forbidden" or isinstance(got, dict) else f" (got {got!r})"
        lines.append(f"  {where}: {msg}{shown}")
    return "invalid configuration:\n" + "\n".join(lines)


def shipped_configs() -> dict[str, Path]:
    """The configs that ship with the project (configs/ of a checkout, or the installed package's copy)."""
    here = Path(__file__).resolve().parent
    for d in (here / "configs", here.parent / "configs"):
        if d.is_dir():
            return {p.stem: p for p in sorted(d.glob("*.yaml"))}
    return {}


_SOURCE_ID = re.compile(r"[A-Za-z0-9_.-]+")


def parse_sources(args: Sequence[str]) -> dict[str, Any]:
    """The keyword values of `--source` given n times: none, `source` (and `source_id` for ID=SOURCE) for
    one, `sources` for several (ids cam0, cam1, ... by position unless given as ID=SOURCE; an ID is made of
    letters, digits, '_', '.' and '-'). A path that exists is a source even when it holds '='."""
    entries = []
    for i, text in enumerate(args):
        head, eq, tail = text.partition("=")
        if eq and _SOURCE_ID.fullmatch(head) and tail and not Path(text).exists():
            entries.append({"id": head, "source": tail})
        elif not text.strip():
            raise ConfigError(f"--source {text!r}: empty")
        else:
            entries.append({"id": None, "source": text})
    if not entries:
        return {}
    if len(entries) == 1:
        e = entries[0]
        return {"source": e["source"], **({"source_id": e["id"]} if e["id"] else {})}
    for i, e in enumerate(entries):
        e["id"] = e["id"] or f"cam{i}"
    return {"sources": entries}


def load_config(
    path: Union[str, Path, None] = None, overrides: Iterable[str] = (), **values: Any
) -> Config:
    """Defaults <- YAML file <- keyword values (top-level, e.g. source=...) <- dotted overrides. `path` may
    also name a shipped config ("live_camera", "configs/live_camera.yaml") where no such file is here."""
    tree: dict = {}
    if path is not None:
        p = Path(path)
        if not p.is_file() and p.stem in shipped_configs() and p.suffix in ("", ".yaml"):
            p = shipped_configs()[p.stem]
        if not p.is_file():
            raise ConfigError(f"config file {p} not found (shipped: {', '.join(shipped_configs()) or 'none'})")
        try:
            loaded = _yaml(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {p} is not valid YAML: {e}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {p} must hold a mapping of settings")
        tree = loaded
    if values.get("source") is not None:  # the source(s) given replace the file's
        tree.pop("sources", None)
    if values.get("sources") is not None:
        tree.pop("source", None)
        tree.pop("source_id", None)
    for k, v in values.items():
        if v is not None:
            tree[k] = v
    for text in overrides:
        _set_dotted(tree, *parse_override(text))
    try:
        return Config.model_validate(tree)
    except ValidationError as e:
        raise ConfigError(_explain(e)) from None
