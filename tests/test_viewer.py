"""The live 3D viewer (tools/viewer.py): a subscriber that draws the newest frame's meshes in a browser.

The fast tests drive MeshViewer against a real publisher and read its scene state; the slow one replays a
recording to the viewer, loads its page in headless Chromium (Debian's chromium package, driven by
Playwright) and checks that it connects and draws the meshes in the track colours.
"""
from __future__ import annotations

import base64
import colorsys
import os
import shutil
import threading
import time

import numpy as np
import pytest

pytest.importorskip("viser", reason="the viewer needs viser: pip install viser")

from pipeline import wire  # noqa: E402
from fastmetro_stream.cli import main  # noqa: E402
from pipeline.messages import EndOfStream, Frame, MeshFrame, Person, PersonMesh  # noqa: E402
from draw.colours import track_colour  # noqa: E402
from tools.viewer import MeshViewer  # noqa: E402
from pipeline.publisher import Publisher, PublisherSettings as PublishConfig, replay  # noqa: E402

# A cube [-0.4, 0.4]^3 (8 vertices, 12 triangles): cheap for a browser without a GPU to draw.
CUBE_V = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], np.float32) * 0.4
CUBE_F = np.array([[0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5], [0, 4, 5], [0, 5, 1],
                   [2, 3, 7], [2, 7, 6], [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3]])


def frame(index: int, tracks, with_vertices=True, lost=(), stream="default") -> MeshFrame:
    z = np.zeros
    persons = []
    for k, tid in enumerate(tracks):
        person = Person(tid, "tracked", (0.0, 0.0, 10.0, 10.0), 0.9, (5.0, 5.0), 12.0, k)
        cam_t = np.array([1.1 * (k - (len(tracks) - 1) / 2), 0.0, 4.0], np.float32)
        persons.append(PersonMesh(person, np.array([1, 0, 0], np.float32), cam_t, z((14, 3), np.float32),
                                  z((17, 3), np.float32), z((14, 2), np.float32), CUBE_V.copy()))
    return MeshFrame(Frame(stream, index, index / 30, -1, 480, 640), persons, list(lost), focal=800.0)


class Feed:
    """A real publisher (latest mode) that the tests send topology, frames and end messages through."""

    def __init__(self, stream: str = "default") -> None:
        self.pub = Publisher(PublishConfig(endpoint="tcp://127.0.0.1:*"))
        self.pub.open()
        self.stream = stream
        self.seq = 0

    def topology(self, hand_faces=None) -> None:
        self.pub.send(wire.topic(self.stream, "topology"),
                      wire.encode_topology(self.stream, self.seq, CUBE_F, ["j"] * 14, ["h"] * 17, hand_faces=hand_faces,
                                           hand_joint_names=None if hand_faces is None else ["hj"] * 21))

    def frame(self, mf: MeshFrame, with_vertices: bool = True) -> None:
        self.pub.send(wire.topic(self.stream, "frame"), wire.encode_frame(mf, self.stream, self.seq, with_vertices))
        self.seq += 1

    def end(self) -> None:
        s = self.stream
        self.pub.send(wire.topic(s, "end"), wire.encode_end(EndOfStream(s, self.seq), s, self.seq))


@pytest.fixture
def feed():
    f = Feed()
    yield f
    f.pub.close()


@pytest.fixture
def viewer(feed):
    v = MeshViewer(feed.pub.endpoint, port=0)
    assert feed.pub.wait_subscriber(5.0), "the viewer never subscribed"
    yield v
    v.close()


def settle(v: MeshViewer, until, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not until():
        assert time.monotonic() < deadline, f"viewer state: {v.state}, shown {v.frames_shown}, tracks {v.tracks_shown}"
        v.step(0.05)


def test_waits_for_a_stream_without_failing():
    with MeshViewer("tcp://127.0.0.1:1", port=0) as v:  # nobody publishes there
        assert v.step(0.1) == 0
        assert v.state == "waiting" and "waiting for stream" in v._status.content
        assert v.frames_shown == 0 and v.tracks_shown == []


def test_draws_the_newest_frame_and_removes_persons_who_left(feed, viewer):
    feed.topology()
    feed.frame(frame(0, [1, 2, 3]))
    settle(viewer, lambda: viewer.tracks_shown == [1, 2, 3])
    assert viewer.state == "streaming"
    mesh = viewer._meshes[("default", 2)]
    np.testing.assert_allclose(mesh.vertices, (CUBE_V + [0.0, 0.0, 4.0]) * [1, -1, -1], atol=1e-6)  # y up
    assert tuple(mesh.color) == track_colour(2)
    for i in range(1, 5):  # several frames arrive between two steps: only the newest is drawn
        feed.frame(frame(i, [1, 3]))
    time.sleep(0.3)
    before = viewer.frames_shown
    viewer.step(0.5)
    settle(viewer, lambda: viewer.shown is not None and viewer.shown.index == 4)
    assert viewer.tracks_shown == [1, 3] and viewer.frames_shown - before <= 2
    assert "frame **4**" in viewer._counter.content and "2 persons" in viewer._counter.content


def test_pause_freezes_the_scene_while_the_socket_is_drained(feed, viewer):
    feed.topology()
    feed.frame(frame(0, [1]))
    settle(viewer, lambda: viewer.frames_shown == 1)
    viewer.toggle()
    assert viewer.paused and viewer._button.label == "Play"
    for i in range(1, 4):
        feed.frame(frame(i, [1, 2]))
    settle(viewer, lambda: viewer.frames_received == 4)
    assert viewer.shown.index == 0 and viewer.tracks_shown == [1]  # frozen
    assert "newest frame 3" in viewer._counter.content
    viewer.toggle()  # play: the newest frame at once
    assert not viewer.paused and viewer.shown.index == 3 and viewer.tracks_shown == [1, 2]


def test_frames_without_vertices_reuse_the_tracks_last_ones(feed, viewer):
    feed.topology()
    feed.frame(frame(0, [5]))
    settle(viewer, lambda: viewer.tracks_shown == [5])
    moved = frame(1, [5])
    moved.persons[0].cam_t = np.array([0.5, 0.0, 6.0], np.float32)
    feed.frame(moved, with_vertices=False)  # publish.vertices_every > 1
    settle(viewer, lambda: viewer.shown.index == 1)
    np.testing.assert_allclose(viewer._meshes[("default", 5)].vertices, (CUBE_V + [0.5, 0.0, 6.0]) * [1, -1, -1], atol=1e-6)


def test_end_of_stream_is_shown_and_a_new_stream_is_picked_up(feed, viewer):
    feed.topology()
    feed.frame(frame(0, [1]))
    feed.end()
    settle(viewer, lambda: viewer.state == "ended")
    assert "ended" in viewer._status.content
    feed.frame(frame(0, [7]))  # a restarted publisher
    settle(viewer, lambda: viewer.tracks_shown == [7])
    assert viewer.state == "streaming"


def test_view_command_serves_and_stops(capsys):
    assert main(["view", "--endpoint", "tcp://127.0.0.1:1", "--port", "0", "--duration", "0.3"]) == 0
    assert "viewer: open http://localhost:" in capsys.readouterr().out
    assert main(["view", "--endpoint", "not-an-endpoint", "--port", "0", "--duration", "0.1"]) == 2


# ------------------------------------------------------------------------------------ several streams
@pytest.fixture
def two_feeds():
    feeds = [Feed("camA"), Feed("camB")]
    yield feeds
    for f in feeds:
        f.pub.close()


def with_hands(mf: MeshFrame) -> MeshFrame:
    """Each person gets a right hand (a small cube in place of the MANO mesh)."""
    from pipeline.messages import HandMesh

    z = np.zeros
    for pm in mf.persons:
        pm.hands["right"] = HandMesh("right", np.array([1, 0, 0], np.float32), pm.cam_t + [0.3, 0.0, 0.0],
                                     z((21, 3), np.float32), CUBE_V * 0.1, (5.0, 5.0), 4.0)
    return mf


def test_two_publishers_with_the_same_track_ids_are_two_persons_side_by_side(two_feeds):
    a, b = two_feeds
    with MeshViewer([a.pub.endpoint, b.pub.endpoint], port=0, spacing=5.0) as v:
        assert a.pub.wait_subscriber(5.0) and b.pub.wait_subscriber(5.0)
        a.topology(hand_faces=CUBE_F)
        b.topology(hand_faces=CUBE_F)
        a.frame(with_hands(frame(0, [1, 2], stream="camA")))
        settle(v, lambda: v.persons_shown == [("camA", 1), ("camA", 2)])
        b.frame(with_hands(frame(0, [1], stream="camB")))
        settle(v, lambda: v.persons_shown == [("camA", 1), ("camA", 2), ("camB", 1)])
        assert sorted(v._hand_meshes) == [("camA", 1, "right"), ("camA", 2, "right"), ("camB", 1, "right")]
        # two meshes for the two track 1s: own names, own colours (hands in their body's), own places
        ma, mb = v._meshes[("camA", 1)], v._meshes[("camB", 1)]
        assert ma.name != mb.name and tuple(ma.color) != tuple(mb.color)
        assert tuple(v._hand_meshes[("camB", 1, "right")].color) == tuple(mb.color)
        assert tuple(ma.color) == track_colour(1)  # the first stream keeps the overlay video's colours
        assert v.streams["camA"].index == 0 and v.streams["camB"].index == 1
        # camB's only person sits where camA's single person would, moved by 5 m along +x
        np.testing.assert_allclose(mb.vertices, (CUBE_V + [0.0, 0.0, 4.0]) * [1, -1, -1] + [5.0, 0.0, 0.0], atol=1e-6)
        assert "`camA` 2 persons" in v._status.content and "`camB` 1 persons" in v._status.content
        assert v._labels[("camB", 1)].text == "camB ID 1"
        assert "3 persons in 2 streams" in v._counter.content

        # camA's track 1 leaves: camB's track 1 stays
        a.frame(frame(1, [2], stream="camA"))
        settle(v, lambda: v.persons_shown == [("camA", 2), ("camB", 1)])
        assert sorted(v._hand_meshes) == [("camB", 1, "right")]  # camA's frame came without hands
        # camB ends: its persons go, camA's stay, and the viewer still streams
        b.end()
        settle(v, lambda: v.persons_shown == [("camA", 2)])
        assert v.state == "streaming" and "`camB` ended" in v._status.content
        assert not v._hand_meshes
        a.end()
        settle(v, lambda: v.state == "ended")
        assert v.persons_shown == []


def test_a_stream_that_goes_quiet_has_its_persons_removed(two_feeds):
    a, b = two_feeds
    with MeshViewer([a.pub.endpoint, b.pub.endpoint], port=0, quiet_s=0.5) as v:
        assert a.pub.wait_subscriber(5.0) and b.pub.wait_subscriber(5.0)
        a.topology()
        b.topology()
        a.frame(frame(0, [1], stream="camA"))
        b.frame(frame(0, [1], stream="camB"))
        settle(v, lambda: v.persons_shown == [("camA", 1), ("camB", 1)])
        deadline = time.monotonic() + 5
        while v.persons_shown != [("camB", 1)]:  # camB keeps sending, camA is silent
            assert time.monotonic() < deadline, v.persons_shown
            b.frame(frame(1, [1], stream="camB"))
            v.step(0.1)
        assert v.streams["camA"].quiet and "`camA` quiet" in v._status.content
        a.frame(frame(1, [1], stream="camA"))  # it speaks again: back
        settle(v, lambda: ("camA", 1) in v.persons_shown)


def test_person_colours_are_distinct_per_stream_and_track():
    from tools.viewer import person_colour

    colours = {person_colour(k, t) for k in range(4) for t in range(1, 16)}
    assert len(colours) == 60
    assert person_colour(0, 3) == track_colour(3)


def test_view_command_takes_several_endpoints(capsys):
    assert main(["view", "--endpoint", "tcp://127.0.0.1:1", "--endpoint", "tcp://127.0.0.1:2", "--port", "0",
                 "--duration", "0.3"]) == 0
    assert "subscribed to tcp://127.0.0.1:1, tcp://127.0.0.1:2" in capsys.readouterr().out


# ----------------------------------------------------------------------------------------- browser
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", "--disable-quic"]


def _browser_or_skip():
    why = None
    if not os.path.exists(CHROMIUM):
        why = "headless Chromium not found: apt-get install chromium"
    try:
        from playwright.sync_api import sync_playwright  # noqa: F401
    except ImportError:
        why = "Playwright not installed: pip install playwright"
    if why:
        if os.environ.get("FASTMETRO_REQUIRE_BROWSER"):  # CI installs both: never skip there
            pytest.fail(why)
        pytest.skip(why)


def track_pixels(png: bytes, track_id: int) -> int:
    """Pixels of the screenshot with the hue of the track's colour (shaded by the lights: any brightness)."""
    import cv2

    img = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV).astype(int)  # hue 0..179
    r, g, b = track_colour(track_id)
    hue = colorsys.rgb_to_hsv(r / 255, g / 255, b / 255)[0] * 180
    d = np.abs(hsv[..., 0] - hue)
    d = np.minimum(d, 180 - d)
    return int(((d <= 6) & (hsv[..., 1] >= 60) & (hsv[..., 2] >= 30)).sum())


@pytest.mark.slow
def test_the_page_connects_and_draws_the_meshes_in_headless_chromium(feed, viewer, tmp_path):
    _browser_or_skip()
    from playwright.sync_api import sync_playwright

    stop = threading.Event()

    def serve():
        while not stop.is_set():
            viewer.step(0.05)

    # a recording of 30 frames at 15 fps, replayed in a loop as `fastmetro-stream replay --loop` does
    rec = wire.RecordWriter(tmp_path / "run.msgpack")
    rec.write(0.0, wire.topic("default", "topology"),
              wire.encode_topology("default", 0, CUBE_F, ["j"] * 14, ["h"] * 17))
    for i in range(30):
        rec.write(i / 15, wire.topic("default", "frame"), wire.encode_frame(frame(i, [1, 2, 3]), "default", i))
    rec.close()

    def publish():
        while not stop.is_set():
            replay(feed.pub, tmp_path / "run.msgpack")

    stepper = threading.Thread(target=serve, daemon=True)
    stepper.start()
    publisher = None
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 800, "height": 500})
            cdp = page.context.new_cdp_session(page)

            def shot() -> bytes:
                return base64.b64decode(cdp.send("Page.captureScreenshot", {"format": "png"})["data"])

            page.goto(viewer.url)
            deadline = time.monotonic() + 60
            while viewer.clients == 0:
                assert time.monotonic() < deadline, "the page never connected to the viewer"
                time.sleep(0.1)
            page.wait_for_selector("text=waiting for stream", timeout=60_000)
            empty = shot()
            publisher = threading.Thread(target=publish, daemon=True)
            publisher.start()
            page.wait_for_selector("text=3 persons", timeout=60_000)  # the frame counter, updated live
            time.sleep(2.0)  # a few frames drawn by the software renderer
            drawn = shot()
            (tmp_path / "viewer.png").write_bytes(drawn)
            browser.close()
    finally:
        stop.set()
        stepper.join(5)
        if publisher is not None:
            publisher.join(10)
    assert viewer.frames_shown > 0
    assert len(drawn) > 10_000 and drawn != empty  # a real picture, and it changed
    for tid in (1, 2, 3):
        assert track_pixels(empty, tid) < 200, "a track colour before any mesh was published"
        assert track_pixels(drawn, tid) > 1500, f"the mesh of track {tid} is not on the page ({tmp_path / 'viewer.png'})"
