"""Ctrl-C while a URL is still opening (a server that accepts and never answers, a long
decode.open_timeout_s) stops the run at once instead of waiting for the open to time out."""
from __future__ import annotations

import signal
import socket
import threading
import time

from pipeline.supervisor import Supervisor
from stage_helpers import Sink, read_sink, runtime_config
from stages.decode import DecodeConfig, DecodeStage


def test_ctrl_c_while_a_url_opens_stops_at_once(tmp_path):
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)  # accepts, never answers: the open waits its whole open_timeout_s
    try:
        url = f"http://127.0.0.1:{srv.getsockname()[1]}/stream"
        src = DecodeStage(DecodeConfig(open_timeout_s=60, reconnect_attempts=0), source=url, mode="live")
        out = tmp_path / "sink.jsonl"
        sup = Supervisor(runtime_config(mode="live", stop_timeout_s=60), [src, Sink(str(out))])
        sent = {}

        def ctrl_c():
            time.sleep(6.0)  # started; the open has been waiting for a few seconds
            sent["t"] = time.monotonic()
            sup._on_signal(signal.SIGINT, None)

        threading.Thread(target=ctrl_c, daemon=True).start()
        summary = sup.run()
        took = time.monotonic() - sent["t"]
    finally:
        srv.close()
    assert took < 5.0, f"took {took:.1f} s to stop after Ctrl-C"
    assert summary.exit_code == 0 and summary.reason == "stopped", (summary.reason, summary.error)
    assert read_sink(out)[1] == [["end", 0, "stopped"]]
