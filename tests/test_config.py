"""The config schema: defaults that run, YAML files, dotted overrides, and errors that name the setting."""
from __future__ import annotations

from pathlib import Path

import pytest

from fastmetro_stream.config import Config, ConfigError, load_config

REPO = Path(__file__).resolve().parents[1]


def test_defaults_validate_and_run_the_sample_offline():
    c = load_config()
    assert c.source is None and c.mode == "auto"
    assert c.resolved().mode == "offline"  # the shipped sample is a file


@pytest.mark.parametrize("name", sorted(p.name for p in (REPO / "configs").glob("*.yaml")))
def test_shipped_configs_load(name):
    c = load_config(REPO / "configs" / name)
    assert isinstance(c, Config)


@pytest.mark.parametrize("name", sorted(p.name for p in (REPO / "configs").glob("*.yaml")))
def test_shipped_configs_show_the_hand_settings_with_a_comment(name):
    """A user starting from any shipped config sees where hands are switched on and their files named."""
    import yaml

    infer = yaml.safe_load((REPO / "configs" / name).read_text())["infer"]
    assert {"hands", "hand_checkpoint", "hand_assets_dir"} <= set(infer)
    lines = (REPO / "configs" / name).read_text().splitlines()
    for key in ("hands", "hand_checkpoint", "hand_assets_dir"):
        line = next(ln for ln in lines if ln.strip().startswith(f"{key}:"))
        assert "#" in line, f"{name}: infer.{key} has no comment"


def test_overrides_win_over_the_file_and_are_typed(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("queue_size: 3\ninfer:\n  max_batch: 4\n")
    c = load_config(f, ["infer.max_batch=8", "progress=false", "detect.detector=hog"])
    assert c.queue_size == 3 and c.infer.max_batch == 8 and c.progress is False
    assert c.detect.detector == "hog"


@pytest.mark.parametrize("source,mode", [("/dev/video0", "live"), ("rtsp://cam.local/stream", "live"),
                                         ("http://host/live.m3u8", "live"), ("clip.mp4", "offline")])
def test_auto_mode_follows_the_source(source, mode):
    assert load_config(source=source).resolved().mode == mode


def test_realtime_file_is_live():
    assert load_config(None, ["decode.realtime=true"], source="clip.mp4").resolved().mode == "live"


def test_unknown_key_is_named():
    with pytest.raises(ConfigError) as e:
        load_config(None, ["infer.max_bach=8"])
    assert "infer.max_bach" in str(e.value) and "unknown setting" in str(e.value)


def test_bad_value_is_named_with_what_was_given():
    with pytest.raises(ConfigError) as e:
        load_config(None, ["queue_size=0"])
    assert "queue_size" in str(e.value) and "0" in str(e.value)
    with pytest.raises(ConfigError) as e:
        load_config(None, ["mode=fast"])
    assert "mode" in str(e.value) and "fast" in str(e.value)


def test_malformed_override_and_missing_file():
    with pytest.raises(ConfigError, match="key=value"):
        load_config(None, ["queue_size"])
    with pytest.raises(ConfigError, match="queue_size"):
        load_config(None, ["queue_size.x=1"])
    with pytest.raises(ConfigError, match="is a value, not a section"):
        load_config(None, ["queue_size=2", "queue_size.x=1"])
    with pytest.raises(ConfigError, match="nope.yaml"):
        load_config("nope.yaml")


def test_a_yaml_file_with_a_typo_is_named(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("publish:\n  endpont: tcp://127.0.0.1:1\n")
    with pytest.raises(ConfigError) as e:
        load_config(f)
    assert "publish.endpont" in str(e.value)


def test_the_ring_grows_to_hold_frames_until_published_with_an_overlay(tmp_path):
    plain = load_config(source="clip.mp4").resolved()
    assert plain.ring_slots_needed() == plain.ring_slots == 16
    offline = load_config(None, [f"overlay.path={tmp_path / 'o.mp4'}"], source="clip.mp4").resolved()
    live = load_config(None, [f"overlay.path={tmp_path / 'o.mp4'}"], source="/dev/video0").resolved()
    # queues 4 x 4 + one item per stage 5 + detect batch 1 + infer batch 16 + 2, and offline the RTS window
    assert live.ring_slots_needed() == 40
    assert offline.ring_slots_needed() == 40 + 15 + 15 + 5
    big = load_config(None, [f"overlay.path={tmp_path / 'o.mp4'}", "ring_slots=200"], source="clip.mp4")
    assert big.resolved().ring_slots_needed() == 200
