"""An HTTP video source killed mid-stream: when it comes back within decode.reconnect_attempts the stage
reconnects (counted, logged) and frames go on with index and pts still increasing; when it does not, the
run ends with a reason naming the source after the bounded retries. (Ctrl-C while reconnecting:
test_live_source_stop.py.)"""
from __future__ import annotations

import logging
import multiprocessing
import signal
import threading
import time

import av
import numpy as np
import pytest

from conftest import free_port, popen_python
from pipeline.shm import FrameStore
from pipeline.supervisor import Supervisor
from stage_helpers import Sink, read_sink, runtime_config
from stages.decode import DecodeConfig, DecodeStage

SERVER = """
import http.server, socketserver, sys, time
data = open({path!r}, "rb").read()

class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"  # no length: the stream goes on until the connection closes

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "video/mp2t")
        self.end_headers()
        step = 188 * 20
        for i in range(0, len(data), step):  # about 4x real time
            self.wfile.write(data[i:i + step])
            self.wfile.flush()
            time.sleep({pause})

    def log_message(self, *a):
        pass

class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    allow_reuse_address = True
    daemon_threads = True

srv = Server(("127.0.0.1", {port}), Handler)
print("ready", flush=True)
srv.serve_forever()
"""


@pytest.fixture(scope="module")
def stream_file(tmp_path_factory):
    """10 s of MPEG-TS (250 frames at 25 fps, a bar moving across), the kind of stream served live."""
    path = tmp_path_factory.mktemp("http") / "live.ts"
    with av.open(str(path), mode="w") as out:
        s = out.add_stream("mpeg4", rate=25)
        s.width, s.height, s.pix_fmt = 160, 120, "yuv420p"
        for i in range(250):
            img = np.zeros((120, 160, 3), np.uint8)
            img[:, (i * 3) % 160] = 255
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    return path


def serve(path, port: int):
    bytes_per_s = path.stat().st_size / 10.0 * 4  # 4x real time
    proc = popen_python(SERVER.format(path=str(path), port=port, pause=188 * 20 / bytes_per_s))
    assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
    return proc


def test_a_source_that_comes_back_is_reconnected_and_frames_go_on(stream_file, caplog):
    port = free_port()
    url = f"http://127.0.0.1:{port}/stream"
    caplog.set_level(logging.WARNING)
    server = {"proc": serve(stream_file, port)}
    store = FrameStore.create(multiprocessing.get_context("spawn"), 4, 160 * 120, 1)
    stage = DecodeStage(DecodeConfig(reconnect_attempts=20, reconnect_delay_s=0.3, read_timeout_s=2),
                        source=url, mode="live")
    stage.store = store
    got: list = []
    marks: dict = {}

    def kill_and_restart():
        deadline = time.monotonic() + 30
        while len(got) < 40 and time.monotonic() < deadline:
            time.sleep(0.01)
        server["proc"].send_signal(signal.SIGKILL)
        server["proc"].wait()
        marks["killed"] = len(got)
        time.sleep(1.0)  # away for a second: reconnects fail meanwhile
        server["proc"] = serve(stream_file, port)
        marks["restarted"] = time.monotonic()

    helper = threading.Thread(target=kill_and_restart, daemon=True)
    try:
        stage.setup()
        helper.start()
        deadline = time.monotonic() + 60
        for f in stage.frames():
            got.append((f.index, f.pts, time.monotonic()))
            store.release(f)
            after = [g for g in got if g[2] > marks.get("restarted", float("inf"))]
            if len(after) >= 30 or time.monotonic() > deadline:
                stage.stop()
        helper.join(10)
    finally:
        server["proc"].kill()
        server["proc"].wait()
        store.close()
        store.unlink()
    assert "killed" in marks and "restarted" in marks
    after = [g for g in got if g[2] > marks["restarted"]]
    assert len(after) >= 30, f"{len(after)} frames after the source came back"
    indices, pts = [g[0] for g in got], [g[1] for g in got]
    assert indices == sorted(set(indices)), "indices must increase"
    assert all(b > a for a, b in zip(pts, pts[1:])), "pts must increase across the reconnect"
    k = marks["killed"]
    jump = max(b - a for a, b in zip(pts[k - 5:], pts[k - 4:]))
    assert jump >= 0.5, f"pts went on by {jump:.2f} s over a second away"
    assert stage.counters.get("reconnects", 0) >= 1
    assert f"{url} lost" in caplog.text and "reconnecting" in caplog.text


def test_a_source_that_does_not_come_back_ends_the_run_naming_it(stream_file, tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}/stream"
    proc = serve(stream_file, port)
    out = tmp_path / "sink.jsonl"
    src = DecodeStage(DecodeConfig(reconnect_attempts=3, reconnect_delay_s=0.3, read_timeout_s=2),
                      source=url, mode="live")
    sup = Supervisor(runtime_config(mode="live"), [src, Sink(str(out))])

    def kill():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (not out.exists() or len(out.read_text().splitlines()) < 20):
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)

    threading.Thread(target=kill, daemon=True).start()
    try:
        t0 = time.monotonic()
        summary = sup.run()
        took = time.monotonic() - t0
    finally:
        proc.kill()
        proc.wait()
    frames, _ = read_sink(out)
    assert len(frames) >= 20
    assert summary.exit_code == 1
    assert summary.reason == "error in decode"
    assert summary.error.startswith("decode: ") and url in summary.error, summary.error
    assert "did not come back after 3 reconnect attempts" in summary.error, summary.error
    assert took < 40, f"{took:.0f} s to give up"
