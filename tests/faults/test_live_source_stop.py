"""Live sources that are not there: Ctrl-C stops a run at once while the source waits to reconnect,
and a URL that does not answer within decode.open_timeout_s says so in words."""
from __future__ import annotations

import signal
import socket
import threading
import time

import pytest

from conftest import free_port
from pipeline.supervisor import Supervisor
from stage_helpers import Sink, read_sink, runtime_config
from stages.decode import DecodeConfig, DecodeStage, SourceError
from stages.sources import make_source


def test_ctrl_c_while_reconnecting_stops_at_once(tmp_path):
    url = f"http://127.0.0.1:{free_port()}/stream"  # nothing listens: every open fails at once
    src = DecodeStage(DecodeConfig(reconnect_attempts=50, reconnect_delay_s=30), source=url, mode="live")
    out = tmp_path / "sink.jsonl"
    sup = Supervisor(runtime_config(mode="live", stop_timeout_s=60), [src, Sink(str(out))])
    sent = {}

    def ctrl_c():
        time.sleep(6.0)  # started, the first open failed, waiting 30 s to retry
        sent["t"] = time.monotonic()
        sup._on_signal(signal.SIGINT, None)

    threading.Thread(target=ctrl_c, daemon=True).start()
    summary = sup.run()
    took = time.monotonic() - sent["t"]
    assert took < 5.0, f"took {took:.1f} s to stop after Ctrl-C"
    assert summary.exit_code == 0 and summary.reason == "stopped"
    assert read_sink(out)[1] == [["end", 0, "stopped"]]


def test_a_url_that_does_not_answer_times_out_in_words():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)  # accepts the connection, never answers
    try:
        url = f"http://127.0.0.1:{srv.getsockname()[1]}/stream"
        source = make_source(url, DecodeConfig(open_timeout_s=1.0, reconnect_attempts=0), threading.Event(),
                             lambda *a: None)
        with pytest.raises(SourceError) as e:
            source.open()
        assert "open_timeout_s" in str(e.value) and "Immediate exit" not in str(e.value)
    finally:
        srv.close()


STARTUP = """
import sys
from pipeline.supervisor import Supervisor
from stage_helpers import CountingSource, Forward, Sink, runtime_config
if __name__ == "__main__":
    print("starting", flush=True)
    s = Supervisor(runtime_config(stop_timeout_s=30), [CountingSource(None, delay_s=0.01),
                   Forward("a", setup_s=3.0), Sink({sink!r})]).run()
    print("EXIT", s.exit_code, s.reason, flush=True)
    sys.exit(s.exit_code)
"""


def test_ctrl_c_during_start_up_stops_cleanly_without_tracebacks(tmp_path):
    from conftest import popen_python

    proc = popen_python(STARTUP.format(sink=str(tmp_path / "sink.jsonl")))
    assert proc.stdout.readline().strip() == "starting"
    time.sleep(0.5)  # the stage processes are starting (importing)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0 and "EXIT 0 stopped" in out, (out, err[-3000:])
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err[-3000:]
