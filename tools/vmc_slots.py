"""Which person drives which avatar: the VMC sender's slots (destinations) given to persons of the merged
streams, keyed by (stream id, track id), and the `--track [STREAM:]ID` option that names one person.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

from pipeline.subscriber import PersonData


def parse_track(text: str) -> tuple[Optional[str], int]:
    """`--track`: "ID" (that track id in any stream) or "STREAM:ID" (in that stream only; the stream id may
    itself hold colons: the last one splits)."""
    stream, sep, tid = str(text).rpartition(":")
    try:
        track = int(tid)
    except ValueError:
        raise ValueError(f"--track {text!r}: expected a track id or STREAM:ID, e.g. 3 or cam1:3") from None
    if sep and not stream:
        raise ValueError(f"--track {text!r}: the stream id before ':' is empty")
    return (stream if sep else None), track


Key = tuple[str, int]  # a person of the merged streams: (stream id, track id)


def key_text(key: Optional[Key]) -> str:
    return "-" if key is None else f"{key[0]}:{key[1]}"


@dataclass
class SlotAssigner:
    """Gives each selected person a slot (a destination) while its track lasts; frees it when the track is
    lost or its stream ends. Persons are keyed by (stream id, track id): streams of several publishers
    number their tracks on their own, so the same track id in two streams is two persons. Each frame
    belongs to one stream and settles that stream's slots only."""

    slots: int
    select: str = "largest"
    track_id: Optional[int] = None
    track_stream: Optional[str] = None  # select "track": only this stream's track (None: that id in any stream)
    owner: list[Optional[Key]] = field(default_factory=list)  # slot -> (stream, track)

    def __post_init__(self) -> None:
        self.owner = [None] * self.slots

    def update(self, persons: Sequence[PersonData], lost: Sequence[int] = (),
               stream: str = "default") -> list[tuple[int, Optional[Key], Optional[Key]]]:
        """One frame of `stream`: frees the slots of its lost tracks and of its tracks no longer in the frame,
        gives free slots to its best candidates. Returns the changes as (slot, old key, new key)."""
        present = {p.track_id for p in persons if p.state != "lost"}
        changes = []
        for s, key in enumerate(self.owner):
            if key is not None and key[0] == stream and (key[1] in lost or key[1] not in present):
                self.owner[s] = None
                changes.append((s, key, None))
        held = set(self.owner)
        for p in self._ranked([p for p in persons if p.state != "lost" and (stream, p.track_id) not in held], stream):
            if None not in self.owner:
                break
            s = self.owner.index(None)
            self.owner[s] = (stream, p.track_id)
            changes.append((s, None, (stream, p.track_id)))
        return changes

    def release(self, stream: str) -> list[tuple[int, Optional[Key], Optional[Key]]]:
        """The stream ended or went quiet: its slots come free."""
        changes = []
        for s, key in enumerate(self.owner):
            if key is not None and key[0] == stream:
                self.owner[s] = None
                changes.append((s, key, None))
        return changes

    def _ranked(self, persons: list[PersonData], stream: str) -> list[PersonData]:
        if self.select == "track":
            if self.track_stream is not None and stream != self.track_stream:
                return []
            return [p for p in persons if p.track_id == self.track_id]
        if self.select == "first":
            return sorted(persons, key=lambda p: p.track_id)
        return sorted(persons, key=lambda p: -float((p.box[2] - p.box[0]) * (p.box[3] - p.box[1])))

    def slot_of(self, stream: str, track_id: int) -> Optional[int]:
        key = (stream, track_id)
        return self.owner.index(key) if key in self.owner else None
