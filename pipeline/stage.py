"""What a stage is, for the runtime.

A stage is a small class that lives inside its own process. The runtime calls, in that process:

    stage.setup()                 once: load models, open sockets (never in __init__, which runs in
                                  the parent and must stay cheap and picklable)
    stage.process(msg) -> list    for every input message: zero or more output messages
    stage.finish() -> list        at end of stream: flush whatever the stage still holds
    stage.next_deadline() -> float | None
                                  time.monotonic() by which the stage wants tick() called even if no
                                  input arrives (a batching stage holding a partial batch); None = never
    stage.tick() -> list          called when that deadline has passed: emit what is due
    stage.close()                 always, after an error too: release what setup() took

A StageError raised from any of these stops the run with its message only (no traceback): raise it
for what the user can fix, and let bugs raise anything else.

Before any of that, the runtime calls stage.check() in the parent: cheap checks of the user's input.

A source stage (decode) has no input; it implements `frames()` instead of `process()`, a
generator of output messages that stops at end of stream or when `stop()` is called.
Stages report their own counters (e.g. corrupt frames) through `self.counters`, a dict of ints
that the runtime adds to the run's metrics; the counters named in `drop_counters` count frames the
stage dropped and go into the run's drops.

Service time: the runtime times each process()/tick() call and counts that as the stage's work on its
items. A stage whose calls hold more than its work (a source's pacing sleep, a batching stage that only
collects most of the time) says so with `reports_service = True` and records the work itself,
`self.timing("service", seconds)` once per item (a batch: once per batch); other keys
(`self.timing("forward per crop", s)`) are shown beside it. docs/metrics.md says what each figure is.

Live runs hand a worker stage every message that waited for it at once, the stale frames of each source
already dropped: `process_many(msgs)` (by default process() of each in turn); a batching stage runs them
as one batch there instead of waiting for more.

Pixels: a stage that reads a frame's pixels from the shared-memory ring says so (`needs_pixels = True`).
Before the run the runtime sets `releases_pixels` on the last such stage, and that stage gives the
frame's slot back once it has read (or copied) what it needs; no other stage releases a slot.

A stage is built from its own settings section and a `StageContext`, the few run-wide facts resolved
once by the application (mode, source, stream id, mesh data directories).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Iterable, Iterator, Literal, Optional, TypeVar

T = TypeVar("T")


class StageError(RuntimeError):
    """A failure the user can fix (a missing file, a busy port, weights that cannot be fetched), whose
    message names what is wrong and what to do. The runtime reports its message, not a traceback."""


def check_output_file(path: Any, setting: str) -> None:
    """StageError unless a file can be written at `path` (for a stage's check(), before any model loads):
    a directory, or a place that takes no new file, is named with its setting. Leaves nothing behind."""
    from pathlib import Path

    if Path(path).is_dir():
        raise StageError(f"{setting} {path} is a directory; give a file name in it")
    existed = Path(path).exists()
    try:  # opened for appending and let go
        open(path, "ab").close()
    except OSError as e:
        raise StageError(f"{setting} {path} cannot be written ({e.strerror or e})") from None
    if not existed:
        Path(path).unlink(missing_ok=True)


@dataclass(frozen=True)
class StageContext:
    """The run-wide facts every stage may read, resolved once by the application (never "auto")."""

    mode: Literal["live", "offline"] = "offline"
    source: Optional[str] = None  # what decode reads; None = the shipped sample
    source_id: str = "default"  # the stream's name on the wire
    # a run of several sources: every stream id, in order (each source's frames carry theirs in
    # Frame.source, and it ends with a SourceEnd); empty for one source (`source`, `source_id`)
    source_ids: tuple[str, ...] = ()
    assets_dir: Optional[str] = None  # the mesh data files' directory (None: FASTMETRO_ASSETS, the cache)
    # the MANO (hand) mesh data files' directory, where the hands' network reads them (None:
    # FASTMETRO_MANO_ASSETS, FASTMETRO_ASSETS, the cache), so every stage that draws or sends hands finds
    # the same files
    hand_assets_dir: Optional[str] = None

    @classmethod
    def of(cls, config: Any) -> "StageContext":
        """The context of a stage built without one: from a root config's top-level fields when given
        one (an unresolved "auto" mode counts as offline), else the defaults."""
        if isinstance(config, StageContext):
            return config
        make = getattr(config, "stage_context", None)
        if callable(make):
            return make()
        mode = getattr(config, "mode", "offline")
        return cls(mode="live" if mode == "live" else "offline", source=getattr(config, "source", None),
                   source_id=getattr(config, "source_id", None) or "default")


def config_section(config: Any, key: str, cls: type[T]) -> T:
    """A stage's settings: `config.<key>` of the root Config, or the section itself given bare
    (tests, direct use); None gives the defaults. A wrong type is a TypeError naming the section."""
    if config is None:
        return cls()
    if isinstance(config, cls):
        return config
    section = getattr(config, key, None)
    if isinstance(section, dict):
        return cls(**section)
    if not isinstance(section, cls):
        raise TypeError(f"config.{key} must be a {cls.__name__}, not {type(section).__name__}")
    return section


class Stage:
    name: ClassVar[str] = "stage"
    needs_pixels: ClassVar[bool] = False  # reads frames' pixels from the ring (see the module docstring)
    drop_counters: ClassVar[tuple[str, ...]] = ()  # counters of frames this stage dropped
    reports_service: ClassVar[bool] = False  # records its own "service" timings (see the module docstring)
    releases_pixels: bool = False  # set by the runtime on the last stage that needs pixels

    def __init__(self) -> None:
        self.counters: dict[str, int] = {}
        self.timings: dict[str, list[float]] = {}

    def count(self, key: str, n: int = 1) -> None:
        self.counters[key] = self.counters.get(key, 0) + n

    def timing(self, key: str, seconds: float) -> None:
        """One sample of a duration the stage measured itself ("service": its work on one item)."""
        self.__dict__.setdefault("timings", {}).setdefault(key, []).append(seconds)

    def check(self) -> None:
        """Cheap checks of what the user gave (a source path, say), in the parent before any process
        starts: raise StageError so a mistake is named at once, not after every model has loaded."""

    def setup(self) -> None:
        pass

    def process(self, msg: Any) -> Iterable[Any]:
        raise NotImplementedError

    def process_many(self, msgs: list) -> Iterable[Any]:
        """Live mode: every message that was waiting, in order (see the module docstring)."""
        out: list = []
        for msg in msgs:
            out.extend(self.process(msg))
        return out

    def finish(self) -> Iterable[Any]:
        return ()

    def next_deadline(self) -> Optional[float]:
        return None

    def tick(self) -> Iterable[Any]:
        return ()

    def close(self) -> None:
        pass


class SourceStage(Stage):
    source_id: str = "default"  # names the stream in the end-of-stream message

    def frames(self) -> Iterator[Any]:
        raise NotImplementedError

    def stop(self) -> None:
        """Ask frames() to end soon (called from a signal handler or another thread)."""


def run_stage(stage: Stage, messages: Iterable[Any], store: Any = None, setup: bool = True) -> list:
    """Run one stage in this process on a list of messages, as the runtime would (without its queues and
    ticks): `store` (a FrameStore) given to it, setup(), process() of each message, finish() at the end,
    close() always. Returns everything it emitted, in order. For tests and notebooks."""
    if store is not None:
        stage.store = store
    out: list = []
    try:
        if setup:
            stage.setup()
        for msg in messages:
            out.extend(stage.process(msg))
        out.extend(stage.finish())
    finally:
        stage.close()
    return out
