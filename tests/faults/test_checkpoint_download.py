"""A checkpoint download that returns an HTML page (Google Drive does) or is cut short never lands in
the cache: it is refused with a line saying what came back, and a good download is cached. Served by a
real HTTP server on 127.0.0.1."""
from __future__ import annotations

import dataclasses
import http.server
import threading

import pytest
import torch

from fastmetro import checkpoints
from fastmetro.checkpoints import CHECKPOINTS, CheckpointError, fetch_checkpoint

NAME = "fastmetro-s-r50-3dpw"


@pytest.fixture
def server(tmp_path):
    files: dict[str, bytes] = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = files.get(self.path, b"")
            self.send_response(200 if body else 404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", files
    httpd.shutdown()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv(checkpoints.ENV_CHECKPOINTS, raising=False)
    return tmp_path / "cache" / "fastmetro-stream" / "checkpoints" / CHECKPOINTS[NAME].filename


def _serve(monkeypatch, server, body: bytes):
    base, files = server
    files["/ckpt"] = body
    monkeypatch.setitem(CHECKPOINTS, NAME, dataclasses.replace(CHECKPOINTS[NAME], url=base + "/ckpt"))


@pytest.mark.parametrize("body, said", [
    (b"<!DOCTYPE html><html><body>Google Drive can't scan this file for viruses</body></html>", "HTML page"),
    (b"PK\x03\x04" + bytes(1000), "too small"),
])
def test_a_bad_download_is_refused_and_not_cached(server, cache, monkeypatch, body, said):
    _serve(monkeypatch, server, body)
    with pytest.raises(CheckpointError, match=said):
        fetch_checkpoint(NAME)
    assert not cache.exists() and not list(cache.parent.glob("*.part"))


def test_a_good_download_is_cached_and_a_bad_cached_file_replaced(server, cache, monkeypatch, tmp_path):
    good = tmp_path / "good.bin"
    torch.save({"w": torch.zeros(300_000)}, good)  # 1.2 MB, a zip-format PyTorch file
    _serve(monkeypatch, server, good.read_bytes())
    cache.parent.mkdir(parents=True)
    cache.write_bytes(b"<html>quota exceeded</html>")  # what an older version cached
    assert fetch_checkpoint(NAME) == cache
    assert cache.read_bytes() == good.read_bytes()
