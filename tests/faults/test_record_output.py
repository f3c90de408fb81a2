"""--record (or --overlay) to a path that cannot be written is one line before anything starts; a full disk while
recording stops only the recording (the stream goes on, the file stays readable) and says so."""
from __future__ import annotations

import os

import pytest

from pipeline import wire
from pipeline.messages import EndOfStream
from pipeline.stage import StageError
from pipeline.subscriber import Subscriber
from stages.overlay import OverlayConfig, OverlayStage
from stages.publish import PublishConfig, PublishStage


def test_a_directory_as_record_path_is_named_before_the_run(tmp_path):
    stage = PublishStage(PublishConfig(endpoint="tcp://127.0.0.1:*", record=tmp_path))
    with pytest.raises(StageError, match="is a directory"):
        stage.check()


def test_an_unwritable_record_path_is_named_before_the_run(tmp_path):
    target = "/proc/fastmetro-record.msgpack"  # /proc takes no new files, root or not
    stage = PublishStage(PublishConfig(endpoint="tcp://127.0.0.1:*", record=target))
    with pytest.raises(StageError, match="cannot be written"):
        stage.check()
    fresh = tmp_path / "new.msgpack"
    PublishStage(PublishConfig(endpoint="tcp://127.0.0.1:*", record=fresh)).check()
    assert not fresh.exists()  # the check leaves nothing behind


def test_an_overlay_path_that_cannot_be_written_is_named_before_the_run(tmp_path):
    with pytest.raises(StageError, match="overlay.path .* is a directory"):
        OverlayStage(OverlayConfig(path=tmp_path)).check()
    with pytest.raises(StageError, match="overlay.path .* cannot be written"):
        OverlayStage(OverlayConfig(path="/proc/fastmetro-overlay.mp4")).check()
    fresh = tmp_path / "new.mp4"
    OverlayStage(OverlayConfig(path=fresh)).check()
    assert not fresh.exists()


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")
def test_a_full_disk_stops_only_the_recording(assets_dir, caplog):
    stage = PublishStage(PublishConfig(endpoint="tcp://127.0.0.1:*", mode="latest", record="/dev/full"))
    stage.setup()
    try:
        with Subscriber(stage.endpoint) as sub:
            for i in range(5):
                stage.process(wire.synthetic_mesh_frame(1, index=i))
            stage.process(EndOfStream("default", 5))
            assert stage.counters["published"] == 5 and stage.counters["end_sent"] == 1
            assert stage.counters["record_failed"] == 1
    finally:
        stage.close()
    assert "recording stopped" in caplog.text and "stream goes on" in caplog.text
