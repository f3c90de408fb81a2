"""Detectors on real images, the settings, and the stage around the per-frame core."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
import ultralytics
from pydantic import ValidationError

from pipeline.messages import CROP_SIZE, Detections, EndOfStream, Frame
from stages.detect import (DetectConfig, DetectorUnavailable, DetectStage, HogDetector, PersonTracker,
                           build_detector, make_crops)

ASSETS = Path(ultralytics.__file__).parent / "assets"
LABELS = json.loads((Path(__file__).parent / "data" / "person_boxes.json").read_text())["images"]


def load_rgb(name: str) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(ASSETS / name)), cv2.COLOR_BGR2RGB)


def iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@pytest.fixture(scope="module")
def hog_results():
    det = HogDetector()
    return {name: det.detect([load_rgb(name)])[0] for name in LABELS}


@pytest.mark.parametrize("name", sorted(LABELS))
def test_hog_finds_the_labelled_people(name, hog_results):
    d = hog_results[name]
    assert d.xyxy.shape[1] == 4 and len(d.conf) == len(d.xyxy)
    assert ((d.conf > 0) & (d.conf < 1)).all()
    for person in LABELS[name]:
        best = max((iou(person["box"], b) for b in d.xyxy), default=0.0)
        if person["hog"]:
            assert best >= 0.5, f"{name}: {person['what']} best IoU {best:.2f}"


def test_person_tracker_on_a_still_image_gives_new_persons_with_crops():
    rgb = load_rgb("bus.jpg")
    tracker = PersonTracker(DetectConfig(detector="hog"))
    persons, lost = tracker.update(rgb)
    assert lost == []
    assert persons and all(p.state == "new" for p in persons)
    assert [p.crop_index for p in persons] == list(range(len(persons)))
    assert len({p.track_id for p in persons}) == len(persons)
    areas = [(p.box[2] - p.box[0]) * (p.box[3] - p.box[1]) for p in persons]
    assert areas == sorted(areas, reverse=True)  # keep: largest first
    for p in persons:
        assert p.size == pytest.approx(1.25 * max(p.box[2] - p.box[0], p.box[3] - p.box[1]))
        assert p.box[3] - p.box[1] >= 40  # min_box_size
    # the same image again: the same ids, now tracked
    again, _ = tracker.update(rgb)
    assert {p.track_id for p in again} <= {p.track_id for p in persons}
    assert again and all(p.state == "tracked" for p in again)


def test_max_persons_keeps_the_largest():
    rgb = load_rgb("bus.jpg")
    many, _ = PersonTracker(DetectConfig(detector="hog")).update(rgb)
    two, _ = PersonTracker(DetectConfig(detector="hog", max_persons=2)).update(rgb)
    assert len(many) > 2 and len(two) == 2
    assert [p.box for p in two] == [p.box for p in many[:2]]


def test_settings_reject_unknown_keys_and_trackers(tmp_path):
    with pytest.raises(ValidationError, match="detectr"):
        DetectConfig(detectr="hog")
    with pytest.raises(ValidationError, match="unknown tracker 'sort'"):
        DetectConfig(tracker="sort")
    with pytest.raises(ValidationError, match="not found"):
        DetectConfig(tracker=str(tmp_path / "mine.yaml"))
    assert DetectConfig(tracker="botsort").tracker == "botsort"
    assert DetectConfig().max_persons == 8


def test_missing_yolo_weights_are_a_clear_error_and_auto_falls_back_to_hog(tmp_path, caplog):
    missing = str(tmp_path / "weights" / "person-detector.pt")
    with pytest.raises(DetectorUnavailable) as err:
        build_detector(DetectConfig(detector="yolo", yolo_model=missing))
    msg = str(err.value)
    assert "person-detector.pt" in msg and "detect.yolo_model" in msg and "detector: hog" in msg
    with caplog.at_level(logging.INFO, logger="stages.detect"):
        det = build_detector(DetectConfig(detector="auto", yolo_model=missing))
    assert det.name == "hog"
    assert "falling back to the HOG" in caplog.text


@pytest.mark.parametrize("tracker", ["bytetrack", "botsort"])
def test_both_ultralytics_trackers_take_hog_boxes(tracker):
    rgb = load_rgb("zidane.jpg")
    t = PersonTracker(DetectConfig(detector="hog", tracker=tracker))
    first, _ = t.update(rgb)
    second, _ = t.update(rgb)
    assert first and {p.track_id for p in second} == {p.track_id for p in first}


class ArrayStore:
    """The two FrameStore views the stage uses, over plain arrays (one slot per frame)."""

    def __init__(self, frames: list[np.ndarray], max_persons: int = 8) -> None:
        self.frames = frames
        self.crop_area = [np.zeros((max_persons, CROP_SIZE, CROP_SIZE, 3), np.uint8) for _ in frames]

    def frame(self, frame: Frame) -> np.ndarray:
        return self.frames[frame.slot]

    def crops(self, frame: Frame) -> np.ndarray:
        return self.crop_area[frame.slot]


def test_stage_writes_crops_into_the_slot_and_passes_empty_frames_and_the_end():
    rgb = load_rgb("bus.jpg")
    empty = np.zeros((480, 640, 3), np.uint8)
    store = ArrayStore([rgb, empty])
    stage = DetectStage(DetectConfig(detector="hog"))
    stage.store = store
    stage.setup()
    try:
        f0 = Frame(source="cam", index=0, pts=0.0, slot=0, height=rgb.shape[0], width=rgb.shape[1])
        (out,) = stage.process(f0)
        assert isinstance(out, Detections) and out.frame is f0 and out.persons
        expected = make_crops(rgb, out.persons)
        for p in out.persons:
            np.testing.assert_array_equal(store.crop_area[0][p.crop_index], expected[p.crop_index])
        f1 = Frame(source="other", index=0, pts=0.0, slot=1, height=480, width=640)
        (out1,) = stage.process(f1)
        assert out1.persons == [] and out1.lost == []
        assert set(stage.trackers) == {"cam", "other"}  # one tracker state per source
        end = EndOfStream(source="cam", frames=1)
        assert stage.process(end) == [end]
        assert "cam" not in stage.trackers
        assert stage.counters["persons"] == len(out.persons)
    finally:
        stage.close()


def test_stage_takes_the_root_config_section():
    class Root:
        detect = DetectConfig(detector="hog", max_persons=3)

    stage = DetectStage(Root())
    assert stage.cfg.max_persons == 3 and stage.mode == "offline"
    import pickle  # the runtime builds stages in the parent and sends them to their process

    assert pickle.loads(pickle.dumps(stage)).cfg == stage.cfg
    with pytest.raises(TypeError, match="config.detect"):
        DetectStage(object())


def test_yolo_path_batches_frames_person_class_only():
    """An untrained YOLO built from Ultralytics' own model YAML (no download): the batching, the class filter
    and the box parsing run for real; the boxes themselves mean nothing."""
    cfg = DetectConfig(detector="auto", yolo_model="yolo11n.yaml", yolo_imgsz=160, confidence=0.0, device="cpu")
    det = build_detector(cfg)
    assert det.name == "yolo" and det.person == 0  # auto picks YOLO when it loads
    bus = load_rgb("bus.jpg")
    frames = [bus, np.ascontiguousarray(bus[:, ::-1])]  # one source: frames of one size
    both = det.detect(frames)
    singles = [det.detect([f])[0] for f in frames]
    assert len(both) == 2
    for b, s, f in zip(both, singles, frames):
        assert b.xyxy.shape[1] == 4 and b.xyxy.dtype == np.float32 and len(b.conf) == len(b.xyxy)
        assert (b.xyxy[:, 2] <= f.shape[1] + 1e-3).all() and (b.xyxy[:, 3] <= f.shape[0] + 1e-3).all()
        np.testing.assert_allclose(b.xyxy, s.xyxy, atol=1e-2)
    persons, _ = PersonTracker(cfg, detector=det).update(frames[0])
    assert len(persons) <= cfg.max_persons


def _stage_run(frames, cfg, mode="offline", deadline_at=None):
    store = ArrayStore(frames)
    stage = DetectStage(cfg, mode=mode)
    stage.store = store
    stage.setup()
    out, returned = [], []
    for i in range(len(frames)):
        got = list(stage.process(Frame(source="cam", index=i, pts=i / 30, slot=i, height=frames[i].shape[0],
                                       width=frames[i].shape[1])))
        returned.append(len(got))
        if deadline_at == i:
            assert stage.next_deadline() is not None
            got += list(stage.tick())
        out += got
    out += list(stage.finish())
    assert stage.next_deadline() is None
    stage.close()
    return out, returned, store


def test_offline_batches_of_frames_give_the_same_detections_in_order():
    bus = load_rgb("bus.jpg")
    frames = [np.ascontiguousarray(np.roll(bus, 4 * t, axis=1)) for t in range(5)]
    one, returned1, store1 = _stage_run(frames, DetectConfig(detector="hog"))
    three, returned3, store3 = _stage_run(frames, DetectConfig(detector="hog", batch_frames=3), deadline_at=3)
    assert returned1 == [1, 1, 1, 1, 1]
    assert returned3 == [0, 0, 3, 0, 0]  # frame 3 then left by tick(), frame 4 by finish()
    assert [d.frame.index for d in three] == [0, 1, 2, 3, 4]
    key = lambda ds: [[(p.track_id, p.state, p.box, p.crop_index) for p in d.persons] + [d.lost] for d in ds]  # noqa: E731
    assert key(one) == key(three)
    for a, b in zip(store1.crop_area, store3.crop_area):
        np.testing.assert_array_equal(a, b)
    live, returned_live, _ = _stage_run(frames[:2], DetectConfig(detector="hog", batch_frames=3), mode="live")
    assert returned_live == [1, 1]  # live mode never holds a frame back
