"""A file beside a live source in one run: a live run drops frames to stay current, which a file must not do
without a word. The run refuses the mix in one line before anything starts, unless the file plays in real
time (`realtime: true`: paced like a camera, its drops counted)."""
from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import REPO, child_env, free_port
from stages.decode import DecodeConfig
from stages.decode_multi import MultiDecodeStage, SourceSettings
from stages.sources import SourceError

SAMPLE = str(REPO / "samples" / "sample.mp4")


def _url() -> str:
    return f"http://127.0.0.1:{free_port()}/stream"


def test_a_file_beside_a_live_source_is_refused_before_the_run():
    st = MultiDecodeStage([SourceSettings(id="file", source=SAMPLE), SourceSettings(id="web", source=_url())],
                          DecodeConfig())
    with pytest.raises(SourceError, match="'file' is a file and 'web' a live source.*realtime: true"):
        st.check()


def test_a_file_in_real_time_beside_a_live_source_is_accepted():
    st = MultiDecodeStage([SourceSettings(id="file", source=SAMPLE, realtime=True),
                           SourceSettings(id="web", source=_url())], DecodeConfig())
    st.check()
    assert st.live


def test_the_run_says_it_in_one_line(tmp_path):
    cmd = [sys.executable, "-m", "fastmetro_stream.cli", "run", "--source", f"file={SAMPLE}", "--source",
           f"web={_url()}", "--set", "detect.detector=hog", "--set", f"publish.endpoint=tcp://127.0.0.1:{free_port()}"]
    p = subprocess.run(cmd, env=child_env(), capture_output=True, text=True, timeout=120, cwd=str(REPO))
    errors = [line for line in (p.stdout + p.stderr).splitlines() if line.startswith("error:")]
    assert p.returncode == 1 and len(errors) == 1, p.stdout + p.stderr
    assert "'file' is a file and 'web' a live source" in errors[0] and "Traceback" not in p.stderr
