"""Frames in shared memory: a ring of slots that the stages pass around by number.

Each slot holds one RGB frame (up to `max_pixels` pixels, any shape that fits) followed by `max_persons`
crops of 224 x 224 x 3 uint8. Slots are handed out through a queue of free slot numbers:

    decode   slot = store.acquire(block=offline)   (None when none is free: live mode drops the frame)
             store.frame(frame)[:] = rgb            frame.slot, frame.height, frame.width set first
    detect   store.crops(frame)[i] = crop           persons' crops
    infer    copies the crops out, store.release(frame)
    anyone who drops a message that still holds a slot releases it (pipeline.supervisor does).

The supervisor creates the store (one shared-memory segment for the whole ring) and unlinks it at the
end, whatever happened; children attach with FrameStore.attach(spec) and only close.
"""
from __future__ import annotations

import logging
import queue
from dataclasses import dataclass
from multiprocessing import shared_memory
from typing import Any, Optional

import numpy as np

from .messages import CROP_SIZE, Frame

log = logging.getLogger(__name__)

CROP_BYTES = CROP_SIZE * CROP_SIZE * 3


@dataclass
class FrameStoreSpec:
    """Everything a child process needs to attach (picklable; the queue travels at process start)."""

    name: str
    slots: int
    max_pixels: int
    max_persons: int
    free: Any  # multiprocessing queue of free slot numbers

    @property
    def frame_bytes(self) -> int:
        return self.max_pixels * 3

    @property
    def slot_bytes(self) -> int:
        return self.frame_bytes + self.max_persons * CROP_BYTES


def _attach_untracked(name: str) -> shared_memory.SharedMemory:
    """Open an existing segment without registering it with the resource tracker.

    The supervisor registered it when creating it, and the tracker (shared by all our processes) unlinks
    it if the supervisor dies without doing so. A child registering it again and unregistering at exit
    would drop that safety net (Python < 3.13 has no track=False).
    """
    try:
        return shared_memory.SharedMemory(name=name, create=False, track=False)
    except TypeError:
        pass
    from multiprocessing import resource_tracker

    register = resource_tracker.register
    resource_tracker.register = lambda n, rtype: None if rtype == "shared_memory" else register(n, rtype)
    try:
        return shared_memory.SharedMemory(name=name, create=False)
    finally:
        resource_tracker.register = register


class FrameStore:
    def __init__(self, spec: FrameStoreSpec, shm: shared_memory.SharedMemory, owner: bool):
        self.spec, self._shm, self._owner = spec, shm, owner
        self._buf = np.ndarray((spec.slots, spec.slot_bytes), dtype=np.uint8, buffer=shm.buf)

    # --- life cycle ------------------------------------------------------------------------------
    @classmethod
    def create(cls, ctx, slots: int, max_pixels: int, max_persons: int) -> "FrameStore":
        """Make the segment and fill the free queue (in the supervisor). ctx: a multiprocessing context."""
        free = ctx.Queue(maxsize=slots)
        size = slots * (max_pixels * 3 + max_persons * CROP_BYTES)
        shm = shared_memory.SharedMemory(create=True, size=size)
        spec = FrameStoreSpec(shm.name, slots, max_pixels, max_persons, free)
        for i in range(slots):
            free.put(i)
        return cls(spec, shm, owner=True)

    @classmethod
    def attach(cls, spec: FrameStoreSpec) -> "FrameStore":
        """Open the segment in a child process."""
        return cls(spec, _attach_untracked(spec.name), owner=False)

    def close(self) -> None:
        self._buf = None
        try:
            self._shm.close()
        except BufferError:  # a view is still alive somewhere; the OS frees the mapping at exit
            pass

    def unlink(self) -> None:
        """Remove the segment (supervisor only); safe to call more than once."""
        if self._owner:
            # the free-slot numbers still queued are nobody's now: do not let the process wait at exit
            # for its feeder thread to push them into a pipe no one reads (a ring of thousands of slots
            # fills the pipe, and the run finished but never exited)
            self.spec.free.cancel_join_thread()
            try:
                self._shm.unlink()
            except FileNotFoundError:
                pass

    # --- slots -----------------------------------------------------------------------------------
    def acquire(self, block: bool = True, timeout: Optional[float] = None) -> Optional[int]:
        """A free slot number; None if none is free (non-blocking) or the timeout passed."""
        try:
            return self.spec.free.get(block=block, timeout=timeout)
        except queue.Empty:
            return None

    def release(self, frame_or_slot) -> None:
        """Give a slot back. Accepts a Frame (whose slot is then set to -1) or a slot number."""
        if isinstance(frame_or_slot, Frame):
            slot = frame_or_slot.slot
            frame_or_slot.slot = -1
        else:
            slot = int(frame_or_slot)
        if slot >= 0:
            self.spec.free.put(slot)

    # --- pixels ----------------------------------------------------------------------------------
    def fits(self, height: int, width: int) -> bool:
        return height * width <= self.spec.max_pixels

    def frame(self, frame: Frame) -> np.ndarray:
        """View (H, W, 3) uint8 of the frame's pixels."""
        if frame.slot < 0:
            raise ValueError(f"frame {frame.index} holds no slot (released or never stored)")
        n = frame.height * frame.width * 3
        if n > self.spec.frame_bytes:
            raise ValueError(f"frame {frame.width}x{frame.height} exceeds the slot's {self.spec.max_pixels} pixels")
        return self._buf[frame.slot, :n].reshape(frame.height, frame.width, 3)

    def crops(self, frame: Frame) -> np.ndarray:
        """View (max_persons, 224, 224, 3) uint8 of the frame's crops."""
        if frame.slot < 0:
            raise ValueError(f"frame {frame.index} holds no slot (released or never stored)")
        start = self.spec.frame_bytes
        return self._buf[frame.slot, start:].reshape(self.spec.max_persons, CROP_SIZE, CROP_SIZE, 3)
