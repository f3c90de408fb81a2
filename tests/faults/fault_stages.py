"""Stages for the fault suite's small pipelines (importable by the spawned stage processes)."""
from __future__ import annotations

from pipeline import wire
from pipeline.messages import Frame
from pipeline.stage import Stage


class ToMesh(Stage):
    """Frame -> a synthetic MeshFrame of the same index (releases the frame's slot): a stand-in for
    detect + infer + smooth, so publish gets real MeshFrames without a model."""

    name = "mesh"

    def process(self, msg):
        if isinstance(msg, Frame):
            self.store.release(msg)
            return [wire.synthetic_mesh_frame(1, index=msg.index)]
        return []


class Stuck(Stage):
    """Notes its pid in pid_dir, then at its first frame blocks SIGTERM and waits 120 s in one call: a stand-in
    for a long forward pass that no signal handler can interrupt."""

    name = "stuck"

    def __init__(self, pid_dir: str):
        super().__init__()
        self.pid_dir = pid_dir

    def setup(self):
        import os
        from pathlib import Path

        Path(self.pid_dir, f"{self.name}.pid").write_text(str(os.getpid()))

    def process(self, msg):
        import signal
        import time
        from pathlib import Path

        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
        Path(self.pid_dir, "stuck.busy").write_text("1")
        time.sleep(120)
        return []
