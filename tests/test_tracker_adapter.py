"""The one adapter over Ultralytics' tracker internals (stages/tracking.py: UltralyticsTracker), run against
the installed Ultralytics: what update() returns, the removed tracks it reports, the Kalman predict of a
frame without detection. pyproject pins the range these hold for; a release that moves them fails here."""
from __future__ import annotations

import numpy as np
import pytest

from stages.tracking import UltralyticsTracker

FRAME = np.zeros((480, 640, 3), np.uint8)


def box_at(t: int) -> np.ndarray:
    """A 60 x 160 box moving 4 pixels a frame to the right."""
    x = 100.0 + 4.0 * t
    return np.array([[x, 100.0, x + 60.0, 260.0]], np.float32)


@pytest.mark.parametrize("name", ["bytetrack", "botsort"])
def test_a_track_is_kept_carried_and_reported_when_it_ends(name):
    tr = UltralyticsTracker(name)
    conf = np.array([0.9], np.float32)
    ids = set()
    for t in range(5):
        boxes, tid, scores, ended = tr.update(box_at(t), conf, FRAME)
        assert boxes.shape[1] == 4 and len(tid) == len(scores) and ended == []
        if t:  # a new track is confirmed from the second frame
            assert len(tid) == 1 and np.allclose(boxes[0], box_at(t)[0], atol=3.0)
            ids.add(int(tid[0]))
    assert len(ids) == 1 and tr.live_scores() == [pytest.approx(0.9, abs=1e-6)]
    (track,) = ids

    # a frame without detection: every live track moves on by its velocity (about +4 px in x)
    boxes, tid, scores, ended = tr.predict()
    assert list(tid) == [track] and ended == [] and boxes[0, 0] == pytest.approx(box_at(5)[0, 0], abs=2.0)

    # then nothing is seen: the track is lost and, after the tracker's buffer (30 frames), reported removed
    # (Ultralytics may list it in more than one frame: PersonTracker reports each id downstream once)
    ended_at = []
    for t in range(6, 6 + 40):
        _, tid, _, ended = tr.update(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), FRAME)
        assert len(tid) == 0
        ended_at += [(t, e) for e in ended]
    assert {e for _, e in ended_at} == {track} and ended_at[0][0] >= 5 + 30  # 30 frames after the last carried one

    tr.reset()
    assert tr.live_scores() == []


def test_unknown_tracker_names_say_which_exist():
    with pytest.raises(ValueError, match="bytetrack"):
        UltralyticsTracker("no-such-tracker")
