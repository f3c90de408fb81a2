"""Settings are bounded to what works: a value that would crash, hang or flood at run time is refused
when the config is read, naming the setting; a YAML alias bomb is refused at once."""
from __future__ import annotations

import time

import pytest

from fastmetro_stream.config import Config, ConfigError, load_config


@pytest.mark.parametrize("setting", [
    "publish.linger_ms=1e12", "publish.linger_ms=1000000000000", "decode.reconnect_delay_s=1e12",
    "stop_timeout_s=.inf", "stop_timeout_s=.nan", "publish.topology_interval_s=0.000001",
    "publish.topology_interval_s=.inf", "publish.hwm=1000000000", "decode.open_timeout_s=.inf",
    "decode.read_timeout_s=1e12", "infer.max_wait_ms=1e12", "detect.batch_wait_ms=.inf",
    "smooth.body.process=.inf", "smooth.rts_lag=100000000", "detect.max_persons=1000000",
    "decode.max_pixels=1000000000000", "decode.camera_fps=.inf", "detect.crop_scale=.inf",
    "detect.hog_hit_threshold=.nan", "smooth.fps=.inf",
])
def test_a_setting_that_cannot_work_is_refused_by_name(setting):
    key = setting.split("=")[0]
    with pytest.raises(ConfigError) as e:
        load_config(overrides=[setting])
    assert key.split(".")[-1] in str(e.value)


def test_the_defaults_and_shipped_configs_still_load():
    Config()
    for name in ("offline_file", "live_camera", "engine_stream"):
        load_config(f"configs/{name}.yaml")
    load_config(overrides=["publish.topology_interval_s=0", "publish.topology_interval_s=0.5"])


BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{c}: &{c} [{', '.join(['*' + p] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi"))


def test_a_yaml_alias_bomb_is_refused_quickly(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(BOMB + "source: x\n")
    t0 = time.monotonic()
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert time.monotonic() - t0 < 1.0
    assert "alias" in str(e.value) and len(str(e.value)) < 500
    with pytest.raises(ConfigError):
        load_config(overrides=["decode.image_glob=[&a x, *a]"])
