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
