"""three.js's GLTFLoader in Debian's Chromium (headless, driven by Playwright): loads GLB files, plays their
animation and reads the bones' world positions (tests/js/gltf_bones.html). A local HTTP server serves the
page and three.js from tests/js, and the files from their own folder under /files/.
"""
from __future__ import annotations

import functools
import http.server
import shutil
import threading
from contextlib import contextmanager
from pathlib import Path

JS = Path(__file__).resolve().parent / "js"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]


def missing() -> str:
    """Why the check cannot run here ('' when it can)."""
    if not Path(CHROMIUM).exists():
        return "headless Chromium not found: apt-get install chromium"
    if not (JS / "node_modules" / "three").is_dir():
        return "three.js not installed: npm ci --prefix tests/js"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright not installed: pip install playwright"
    return ""


class _Handler(http.server.SimpleHTTPRequestHandler):
    files: Path

    def translate_path(self, path: str) -> str:
        if path.startswith("/files/"):
            return str(self.files / path[len("/files/"):].split("?")[0])
        return super().translate_path(path)

    def log_message(self, *args) -> None:
        pass


@contextmanager
def _server(files: Path):
    handler = type("Handler", (_Handler,), {"files": Path(files)})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(JS)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def bone_positions(paths, times) -> dict:
    """{file name: the page's report (bones, duration, positions[k][bone] = [x, y, z] at times[k])} for GLB
    files that share one folder, at `times` seconds of their first animation."""
    from playwright.sync_api import sync_playwright

    paths = [Path(p) for p in paths]
    out = {}
    with _server(paths[0].parent) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(f"{url}/gltf_bones.html")
            page.wait_for_function("window.pageReady === true", timeout=30_000)
            for path in paths:
                out[path.name] = page.evaluate("([u, t]) => window.boneWorldPositions(u, t)",
                                               [f"{url}/files/{path.name}", list(map(float, times))])
            assert not errors, errors
        finally:
            browser.close()
    return out
