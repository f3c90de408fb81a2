"""The smooth stage: per-track temporal filtering of the meshes (docs/smoothing.md).

infer --MeshFrame--> smooth --MeshFrame--> publish. For every track (keyed by source and track id) a set of
vectorised filters (stages/smooth_filters.py) runs over what a `PersonMesh` carries, in groups that share
their noise settings:

    body        vertices, joints3d, joints_h36m, each minus the root (metres)
    root        the root itself (the H36M pelvis, or the mean of the joints) in model space (metres)
    translation cam_t, the body's camera-space translation (metres)
    cam         the crop's weak-perspective camera s, tx, ty
    joints2d    the joints in frame pixels
    rotation    with the SMPL head: the 24 rotations as 6D (first two matrix columns), re-orthonormalised
                on output (Gram-Schmidt) -- never raw axis-angle
    betas       with the SMPL head: the 10 shape coefficients
    hands       each hand, per track and side (stages/smooth_hands.py); a hand not seen resets its filters

Live mode filters causally and emits at once. Offline mode (Kalman + `offline: rts`) also keeps a bounded
window of forward steps per track and emits each frame after a Rauch-Tung-Striebel backward pass that saw at
least `rts_lag` later frames of the track (all of them at the end of a track); frames still leave in the
order they came, each exactly once.

Lifecycle: a track's filters are created when it first shows up (or when detect marks it "new": a reused id
starts over); a track absent from a frame coasts (predict only) for up to `max_coast` frames, emitted with
`predicted=True` and state "coasting"; then it is dropped and its id goes once into `MeshFrame.lost`. Ids in
the input's `lost` end their track at once.
"""
from __future__ import annotations

import collections
import dataclasses
import math
from typing import Any, Literal, Optional

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from pipeline.messages import EndOfStream, Frame, MeshFrame, Person, PersonMesh, SourceEnd, now
from pipeline.stage import Stage, StageContext, config_section
from stages.feet_contact import FootContactMarker
from stages.world import WorldConfig, WorldPlacer

from .smooth_filters import ORDERS, KalmanBank, OneEuroBank, Step, rts_backward
from .smooth_hands import HandFilters, smooth_hand_runs
from .smooth_values import compose, measure, rot6d_to_rotmat, rotmat_to_6d, signature

__all__ = ["NoiseConfig", "OneEuroConfig", "SmoothConfig", "SmoothStage", "rotmat_to_6d", "rot6d_to_rotmat"]


# ------------------------------------------------------------------------------------------- settings
class NoiseConfig(BaseModel):
    """Noise of one group of values, in that group's units (metres, pixels, ...).

    Only the ratio process / measurement sets how much the filter smooths and how much it lags; the
    absolute values set how far a coasting track's uncertainty grows and how quickly a newborn track
    settles.
    """

    model_config = ConfigDict(extra="forbid")

    # standard deviation of the random acceleration (units/s^2) of the constant-velocity model; with
    # constant acceleration, of the acceleration's change per step
    process: float = Field(10.0, gt=0, le=1e9)
    # standard deviation of the per-frame error of the network's value (units)
    measurement: float = Field(0.01, gt=0, le=1e9)
    # standard deviation of the speed at birth (units/s): the first frames settle the velocity
    initial_speed: float = Field(1.0, gt=0, le=1e9)
    # standard deviation of the acceleration at birth (units/s^2), constant-acceleration model only
    initial_accel: float = Field(10.0, gt=0, le=1e9)


class OneEuroConfig(BaseModel):
    """One Euro filter settings (Casiez et al. 2012); values are divided by each group's measurement
    noise first, so the same settings fit metres, pixels and rotations."""

    model_config = ConfigDict(extra="forbid")

    # cutoff (Hz) at rest: 1 Hz removes most per-frame jitter of a still person (the paper's default)
    min_cutoff: float = Field(1.0, gt=0, le=1e6)
    # cutoff increase per (noise std / s) of speed: at 0.1 a limb moving 1 m/s (100 noise stds of 1 cm
    # per second) gets an 11 Hz cutoff; bench_smooth: 2.1x less jitter at 0.7 frame lag (0.05: 1.2 frames)
    beta: float = Field(0.1, ge=0, le=1e6)
    # cutoff (Hz) of the speed estimate: the paper's default
    d_cutoff: float = Field(1.0, gt=0, le=1e6)


def _noise(process: float, measurement: float, initial_speed: float, initial_accel: float) -> Any:
    return Field(default_factory=lambda: NoiseConfig(
        process=process, measurement=measurement, initial_speed=initial_speed, initial_accel=initial_accel))


class SmoothConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Kalman: the only method with a motion model (coasting predicts) and an offline smoother (RTS)
    method: Literal["kalman", "one_euro", "none"] = "kalman"
    # constant velocity: follows limbs with < 1 frame lag at 30 fps (scripts/bench_smooth.py) and coasts
    # along straight lines; constant acceleration follows sharper moves but overshoots when coasting
    model: Literal["constant_velocity", "constant_acceleration"] = "constant_velocity"
    # the body is filtered relative to this point; the pelvis is the body's own root in SMPL/H36M
    root: Literal["pelvis", "joints_mean"] = "pelvis"
    # body: a single-frame network's joints and vertices jitter by about 1 cm per coordinate (the
    # 3DPW acceleration error of single-frame methods, ~30-40 mm/frame^2, is that of ~1 cm white noise);
    # people's vertices accelerate by ~8 mm/frame^2 (~7 m/s^2) on average. 4 m/s^2 against 1 cm is the
    # balance scripts/bench_smooth.py measures: 2.3x less jitter at 0.2 frame lag (30 fps); higher
    # follows faster moves with more jitter, lower lags (2 m/s^2: 3x less jitter, 0.7 frame lag)
    body: NoiseConfig = _noise(4.0, 0.01, 1.0, 4.0)
    # root in model space (the pelvis): its own knob, the body's values by default; smoothing it harder
    # than the body measured worse in the benchmark (its lag shows on every vertex)
    root_noise: NoiseConfig = _noise(4.0, 0.01, 1.0, 4.0)
    # camera translation: depth comes from the crop scale and jitters by a few cm at a few metres; a
    # walking person accelerates at a few m/s^2 (bench: 4x less jitter, half the position error)
    translation: NoiseConfig = _noise(5.0, 0.05, 1.0, 5.0)
    # weak-perspective camera (s, tx, ty; crop units): s jitters with the detection box by ~1 %
    cam: NoiseConfig = _noise(2.0, 0.01, 0.5, 2.0)
    # 2D joints (pixels): ~3 px of per-frame jitter; the body's process/measurement ratio (400 /s^2)
    joints2d: NoiseConfig = _noise(1200.0, 3.0, 300.0, 1200.0)
    # 6D rotations (unit-free matrix entries): ~0.03 is about 2 degrees; the body's ratio again
    rotation: NoiseConfig = _noise(12.0, 0.03, 3.0, 12.0)
    # shape: constant for a person, the per-frame estimate jitters; almost no process noise
    betas: NoiseConfig = _noise(0.01, 0.1, 0.01, 0.01)
    # frames a missing track coasts (predicted) before it is dropped and reported lost: 5 frames
    # (1/6 s at 30 fps) bridges a missed detection without extrapolating a limb far
    max_coast: int = Field(5, ge=0, le=3000)
    # offline (file) mode: the RTS backward pass; "none" runs the online filter in both modes
    offline: Literal["rts", "none"] = "rts"
    # each offline output has seen at least this many later frames of its track: 15 (0.5 s at 30 fps) is
    # several time constants of the default filter, beyond which later frames change nothing visible
    rts_lag: int = Field(15, ge=0, le=3000)
    # frames emitted per backward pass (1 = classic fixed-lag smoother): memory per track is
    # rts_lag + rts_window steps (~0.33 MB each for a 6,890-vertex mesh); 15 does 2 backward steps per
    # frame where fixed-lag does rts_lag + 1
    rts_window: int = Field(15, ge=1, le=3000)
    # frame rate assumed for the time step when the container gives no PTS (most cameras are 30 fps)
    fps: float = Field(30.0, gt=0, le=1000)
    one_euro: OneEuroConfig = Field(default_factory=OneEuroConfig)

    def holds_frames(self, mode: Optional[str]) -> int:
        """Frames the smoother may hold back in this run mode: offline RTS (Kalman) keeps up to
        rts_lag + rts_window + max_coast; otherwise none (a frame leaves as it arrives; "auto" not yet
        resolved stays causal)."""
        if mode == "offline" and self.method == "kalman" and self.offline == "rts":
            return self.rts_lag + self.rts_window + self.max_coast
        return 0


# ------------------------------------------------------------------------------------------- tracks
@dataclasses.dataclass
class _Pending:
    """One message on its way out: a frame waits until every person slot in it is filled."""

    msg: Any
    missing: int = 0


@dataclasses.dataclass
class _Entry:
    """One forward step of a track waiting for its backward pass (offline)."""

    steps: dict[str, Step]
    template: PersonMesh
    person: Person
    predicted: bool
    pending: _Pending
    slot: int
    hands: dict = dataclasses.field(default_factory=dict)  # side -> (HandMesh, steps): HandFilters.record()


class _Track:
    """The filters of one track and what it needs to coast and to be smoothed offline."""

    def __init__(self, pm: PersonMesh, frame: Frame, cfg: SmoothConfig, record: bool) -> None:
        self.cfg = cfg
        self.signature = signature(pm)
        self.template = pm
        self.last_index, self.last_pts = frame.index, frame.pts
        self.coast = 0
        self.record = record
        self.history: list[_Entry] = []
        z = measure(pm, cfg.root)
        self.banks = {name: self._bank(name, values) for name, values in z.items()}
        self.hands = HandFilters(self._bank)
        self.hands.update(pm)

    def _bank(self, name: str, z0: np.ndarray):
        cfg = self.cfg
        noise: NoiseConfig = getattr(cfg, "root_noise" if name == "root" else name)
        if cfg.method == "one_euro":
            e = cfg.one_euro
            return OneEuroBank(z0, e.min_cutoff, e.beta, e.d_cutoff, scale=noise.measurement)
        return KalmanBank(z0, ORDERS[cfg.model], noise.process, noise.measurement, noise.initial_speed,
                          noise.initial_accel)

    def advance(self, frame: Frame) -> None:
        """Predict every group to this frame's time."""
        dt = None
        if frame.pts is not None and self.last_pts is not None:
            d = frame.pts - self.last_pts
            if math.isfinite(d) and d > 0:
                dt = d
        if dt is None:
            steps = frame.index - self.last_index
            dt = (steps if steps > 0 else 1) / self.cfg.fps
        self.last_index, self.last_pts = frame.index, frame.pts
        for bank in self.banks.values():
            bank.predict(dt)
        self.hands.predict(dt)

    def update(self, pm: PersonMesh) -> None:
        for name, z in measure(pm, self.cfg.root).items():
            self.banks[name].update(z)
        self.hands.update(pm)
        self.template = pm
        self.coast = 0

    def values(self) -> dict[str, np.ndarray]:
        return {name: bank.value for name, bank in self.banks.items()}

    def steps(self) -> dict[str, Step]:
        return {name: bank.step_record() for name, bank in self.banks.items()}


# -------------------------------------------------------------------------------------------- stage
class SmoothStage(Stage):
    """Per-track temporal smoothing. `SmoothStage(config)` with the root Config (section `config.smooth`,
    `config.mode` "live" = online, "offline" = RTS) or with a SmoothConfig (offline unless `mode` says)."""

    name = "smooth"

    def __init__(self, config: Any = None, mode: Optional[str] = None, context: Optional[StageContext] = None,
                 world: Optional[WorldConfig] = None) -> None:
        super().__init__()
        self.cfg = config_section(config, "smooth", SmoothConfig)
        self.mode = mode or (context.mode if context is not None else None) or getattr(config, "mode", None) or "offline"
        if self.mode not in ("live", "offline", "auto"):
            raise ValueError(f"mode must be 'live', 'offline' or 'auto', not {self.mode!r}")
        # "auto" should be resolved by the runtime (live for cameras/URLs, offline for files); if it is
        # not, stay causal: never add latency to what may be a live source.
        self.offline = self.cfg.holds_frames(self.mode) > 0
        # The camera over the floor (stages/world.py), each frame placed in it before it is smoothed: the root
        # Config's `world`, or `world` given beside a bare SmoothConfig; neither: no world.
        if world is None:
            world = config_section(config, "world", WorldConfig) if hasattr(config, "world") else WorldConfig(mode="off")
        self.world = WorldPlacer(world)
        self.feet = FootContactMarker()
        self._tracks: dict[tuple[str, int], _Track] = {}
        self._announced: collections.OrderedDict[tuple[str, int], None] = collections.OrderedDict()
        self._queue: collections.deque[_Pending] = collections.deque()

    def setup(self) -> None:
        """Import the filters' library now, while the other stages load their models, not on the first
        frame (the parent, which only builds this stage, never imports it)."""
        import filterpy.common  # noqa: F401

    # ------------------------------------------------------------------------------------- protocol
    def process(self, msg: Any) -> list:
        if isinstance(msg, (EndOfStream, SourceEnd)):  # that source's tracks end (RTS windows flushed)
            self._end_source(msg.source)
            self._queue.append(_Pending(msg))
            return self._ready()
        if not isinstance(msg, MeshFrame):
            raise TypeError(f"smooth stage expects MeshFrame messages, got {type(msg).__name__}")
        msg = self.world.apply(msg)
        if self.cfg.method == "none":
            return [self.feet.apply(msg)]
        self._frame(msg)
        return self._ready()

    def finish(self) -> list:
        self.world.close()
        for key in list(self._tracks):
            self._end(key)
        out = self._ready()
        if self._queue:  # every held step belongs to a track, and every track has just ended
            raise RuntimeError("smooth: frames still held after every track ended (a bug)")
        return out

    # -------------------------------------------------------------------------------------- details
    def _frame(self, mf: MeshFrame) -> None:
        src = mf.frame.source
        out = MeshFrame(frame=mf.frame, persons=[], lost=[], focal=mf.focal, world=mf.world)
        pending = _Pending(out)
        self._queue.append(pending)
        seen: set[int] = set()
        for pm in mf.persons:
            tid = pm.person.track_id
            if tid in seen:
                raise ValueError(f"smooth: track id {tid} appears twice in frame {mf.frame.index} of "
                                 f"{src!r}; the tracker must give each person its own id")
            seen.add(tid)
            key = (src, tid)
            track = self._tracks.get(key)
            state = pm.person.state
            if track is not None and (state == "new" or signature(pm) != track.signature):
                self._end(key)  # id reused (or the model changed): the old track's state ends here
                self.count("ids_reused")
                track = None
            if track is None:
                track = _Track(pm, mf.frame, self.cfg, self.offline)
                self._tracks[key] = track
                self._announced.pop(key, None)
                self.count("tracks_born")
                state = "new"
            else:
                track.advance(mf.frame)
                track.update(pm)
            out.persons.append(None)  # type: ignore[arg-type]  # filled when resolved
            self._put(track, pending, len(out.persons) - 1, pm,
                      dataclasses.replace(pm.person, state=state), predicted=False)

        lost_out: list[int] = []
        for tid in mf.lost:
            key = (src, tid)
            if key in self._tracks:
                self._end(key)
            if key in self._announced:  # we reported it already, when it stopped coasting
                del self._announced[key]
                continue
            if tid not in lost_out:
                lost_out.append(tid)

        for key in [k for k in self._tracks if k[0] == src and k[1] not in seen]:
            track = self._tracks[key]
            track.advance(mf.frame)
            track.coast += 1
            if track.coast > self.cfg.max_coast:
                self._end(key)
                self._announce(key)
                lost_out.append(key[1])
                self.count("tracks_expired")
                continue
            self.count("coasted")
            track.hands.drop()
            person = dataclasses.replace(track.template.person, state="coasting")
            out.persons.append(None)  # type: ignore[arg-type]
            self._put(track, pending, len(out.persons) - 1, track.template, person, predicted=True)
        out.lost = lost_out

    def _put(self, track: _Track, pending: _Pending, slot: int, template: PersonMesh, person: Person,
             predicted: bool) -> None:
        """Fill the output slot now (online) or record the step for the backward pass (offline)."""
        if not track.record:
            pending.msg.persons[slot] = compose(template, track.values(), person, predicted, track.hands.compose())
            return
        pending.missing += 1
        track.history.append(_Entry(track.steps(), template, person, predicted, pending, slot, track.hands.record()))
        cfg = self.cfg
        if len(track.history) >= cfg.rts_lag + cfg.rts_window:
            self._smooth(track, cfg.rts_window)

    def _smooth(self, track: _Track, count: int) -> None:
        """Backward pass over the track's window; emit its first `count` entries."""
        hist = track.history
        if not hist:
            return
        names = list(hist[0].steps)
        smoothed = {name: rts_backward([e.steps[name] for e in hist]) for name in names}
        hands = smooth_hand_runs([e.hands for e in hist])
        for i in range(min(count, len(hist))):
            e = hist[i]
            values = {name: smoothed[name][i][0] for name in names}
            e.pending.msg.persons[e.slot] = compose(e.template, values, e.person, e.predicted, hands[i])
            e.pending.missing -= 1
        del hist[:count]

    def _end(self, key: tuple[str, int]) -> None:
        track = self._tracks.pop(key, None)
        if track is not None and track.history:
            self._smooth(track, len(track.history))

    def _announce(self, key: tuple[str, int]) -> None:
        self._announced[key] = None
        while len(self._announced) > 4096:  # bounded: ids the tracker never reports lost itself
            self._announced.popitem(last=False)

    def _end_source(self, source: str) -> None:
        for key in [k for k in self._tracks if k[0] == source]:
            self._end(key)

    def _ready(self) -> list:
        """The messages whose persons are all filled, in order per source: one that waits for its smoothing
        holds back the later messages of its own source only (and the run's EndOfStream, which goes last)."""
        out = []
        q = self._queue
        while q and q[0].missing == 0:
            out.append(q.popleft().msg)
        if len(q) > 1:  # the head waits: later messages of other sources may go
            keep: collections.deque[_Pending] = collections.deque()
            waiting: set[str] = set()  # sources with a message still held ahead
            for p in q:
                msg = p.msg
                src = msg.frame.source if isinstance(msg, MeshFrame) else msg.source
                if p.missing or src in waiting or (isinstance(msg, EndOfStream) and keep):
                    keep.append(p)
                    waiting.add(src)
                else:
                    out.append(msg)
            self._queue = keep
        for msg in out:
            if isinstance(msg, MeshFrame):
                if msg.persons and msg.focal:  # joints2d: the projection of the published joints3d + cam_t
                    from fastmetro import camera  # (smoothed apart they disagreed by up to 173 px)

                    j2d = camera.project(np.stack([p.joints3d for p in msg.persons]), np.stack(
                        [p.cam_t for p in msg.persons]), msg.focal, (msg.frame.width, msg.frame.height))
                    msg.persons = [dataclasses.replace(p, joints2d=j.astype(np.float32)) for p, j in zip(msg.persons, j2d)]
                self.feet.apply(msg)  # foot_contact, in the frame's world (stages/feet_contact.py)
                msg.frame.times[self.name] = now()  # when it left this stage (offline: after smoothing)
        return out
