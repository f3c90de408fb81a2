"""Real decode and infer stages whose work is a known sleep, for the service-time figures
(tests/test_stage_timing.py; importable by the spawned stage processes)."""
from __future__ import annotations

import time

import numpy as np

from pipeline.messages import Detections, Frame, Person, now
from pipeline.stage import SourceStage, StageContext
from stages.decode import DecodeConfig, DecodeStage
from stages.infer import InferConfig, InferStage
from stage_helpers import Forward


class SleepyPictures:
    """A source for the decode stage: `n` 16 x 16 pictures, 10 per second of pts; reading and decoding
    each takes `decode_s` (a sleep), so with realtime pacing the stage sleeps the rest of its 0.1 s."""

    kind, live, period, rate, start, finite = "sleepy", False, None, 10.0, 0.0, True

    def __init__(self, n: int, decode_s: float):
        self.n, self.decode_s = n, decode_s

    def open(self):
        pass

    def close(self):
        pass

    def pictures(self):
        for i in range(self.n):
            time.sleep(self.decode_s)
            yield i / 10.0, (lambda max_pixels, i=i: np.full((16, 16, 3), i % 256, np.uint8))


class SleepyDecode(DecodeStage):
    """The real decode stage (pacing, slots, timing) reading SleepyPictures."""

    def __init__(self, n: int, decode_s: float, realtime: bool = True):
        super().__init__(DecodeConfig(realtime=realtime), source="sleepy", source_id="test", mode="offline")
        self.n, self.decode_s = n, decode_s

    def check(self):
        pass

    def setup(self):
        pass

    def frames(self):
        yield from self._passes(SleepyPictures(self.n, self.decode_s))


class PersonSource(SourceStage):
    """n frames, each with `persons` detected persons whose crops are in the slot: what infer takes."""

    name = "detect"

    def __init__(self, n: int, persons: int, delay_s: float = 0.0):
        super().__init__()
        self.n, self.persons, self.delay_s = n, persons, delay_s

    def frames(self):
        for i in range(self.n):
            slot = self.store.acquire(block=True)
            f = Frame("test", i, i / 30, slot, 16, 16, {"decode": now()}, 0)
            persons = [Person(k, "tracked", (0.0, 0.0, 8.0, 16.0), 0.9, (4.0, 8.0), 16.0, crop_index=k)
                       for k in range(self.persons)]
            yield Detections(frame=f, persons=persons)
            time.sleep(self.delay_s)


class SleepEngine:
    """In place of fastmetro.engine.Engine: a forward pass that sleeps `forward_s`, then plausible outputs
    (a camera in front of the crop, a small mesh)."""

    def __init__(self, forward_s: float):
        self.forward_s, self.pretrained, self.device = forward_s, True, "cpu"

    def __call__(self, crops):
        time.sleep(self.forward_s)
        n = len(crops)
        return {"cam": np.tile(np.array([[1.0, 0.0, 0.0]], np.float32), (n, 1)),
                "joints3d": np.zeros((n, 14, 3), np.float32), "joints_h36m": np.zeros((n, 17, 3), np.float32),
                "vertices": np.zeros((n, 431, 3), np.float32)}


class SleepyInfer(InferStage):
    """The real infer stage (batching, timing, results placed) with SleepEngine as its network."""

    def __init__(self, forward_s: float, mode: str, max_batch: int = 16):
        super().__init__(InferConfig(max_batch=max_batch), StageContext(mode=mode))
        self.forward_s = forward_s

    def setup(self):
        self.engine = SleepEngine(self.forward_s)


class PixelForward(Forward):
    """stage_helpers.Forward (passes frames on after a sleep, checking their pixels), declared as a stage
    that reads pixels: live, the runtime hands it the newest frame and paces the one before it."""

    needs_pixels = True
