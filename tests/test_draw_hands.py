"""Drawing hands: mesh_items gives each hand its own item with the MANO triangles (a left hand's reversed),
the rasteriser draws them with the bodies, and a mirrored left hand draws as the mirror image of a right."""
from __future__ import annotations

import numpy as np
import pytest

import fastmetro
from draw.raster import MeshItem, MeshRenderer, mesh_items
from fastmetro.hand_crops import mirror_faces, mirror_points
from pipeline.subscriber import HandData, PersonData

W, H = 160, 120


@pytest.fixture(scope="module")
def hand_faces(mano_dir):
    return fastmetro.assets.load_hand_faces(mano_dir)


def a_hand(rng, side):
    v = rng.normal(scale=0.03, size=(778, 3)).astype(np.float32)
    return HandData(side=side, cam=np.array([5, 0, 0], np.float32), cam_t=np.array([0.2, 0.0, 2.0], np.float32),
                    joints3d=v[:21], vertices=v, center=np.array([100.0, 60.0]), size=30.0)


def person(rng, hands):
    z = np.zeros(3, np.float32)
    return PersonData(track_id=7, state="tracked", box=np.array([0, 0, 10, 10.0]), score=1.0, predicted=False,
                      center=np.zeros(2), size=10.0, cam=z, cam_t=np.array([0, 0, 3], np.float32),
                      joints3d=np.zeros((14, 3)), joints2d=np.zeros((14, 2)), joints_h36m=np.zeros((17, 3)),
                      vertices=np.zeros((6890, 3), np.float32), hands=hands)


def test_mesh_items_give_each_hand_its_item_and_triangles(hand_faces):
    rng = np.random.default_rng(0)
    p = person(rng, {"left": a_hand(rng, "left"), "right": a_hand(rng, "right")})
    assert [it.part for it in mesh_items([p], {})] == ["body"]  # no hand faces known: bodies only
    items = mesh_items([p], {}, hand_faces=hand_faces)
    assert [(it.part, it.track_id) for it in items] == [("body", 7), ("left", 7), ("right", 7)]
    assert items[0].faces is None and items[1].box is None
    assert np.array_equal(items[2].faces, hand_faces) and np.array_equal(items[1].faces, hand_faces[:, ::-1])
    assert items[1].vertices is p.hands["left"].vertices and np.array_equal(items[1].cam_t, p.hands["left"].cam_t)
    p.hands["right"].vertices = None  # a frame sent without vertices: that hand is not drawn
    assert [it.part for it in mesh_items([p], {}, hand_faces=hand_faces)] == ["body", "left"]


def test_a_mirrored_left_hand_draws_as_the_mirror_image_of_the_right(hand_faces):
    rng = np.random.default_rng(1)
    v = rng.normal(scale=0.04, size=(778, 3))
    body_faces = np.array([[0, 1, 2]])
    r = MeshRenderer(body_faces, alpha=1.0, method="zbuffer")
    black = np.zeros((H, W, 3), np.uint8)
    t = np.array([0.0, 0.0, 1.0])
    right = r.draw(black, [MeshItem(v, t, 1, faces=hand_faces, part="right")], focal=200.0)
    left = r.draw(black, [MeshItem(mirror_points(v), t, 1, faces=mirror_faces(hand_faces), part="left")], focal=200.0)
    covered = right.any(axis=2)
    assert covered.sum() > 500  # the hand was drawn
    # the same triangles face the camera (the light comes from the left, so shades differ)
    assert (covered == left[:, ::-1].any(axis=2)).mean() > 0.995


def test_overlay_persons_carry_their_hands(mano_dir):
    from pipeline.messages import HandMesh, Person, PersonMesh
    from pipeline.subscriber import person_data

    z = np.zeros(3, np.float32)
    h = HandMesh("left", z, z + 1, np.zeros((21, 3)), np.zeros((778, 3)), (3.0, 4.0), 20.0)
    pm = PersonMesh(Person(1, "tracked", (0, 0, 1, 1), 1.0, (0, 0), 1.0), z, z, np.zeros((14, 3)),
                    np.zeros((17, 3)), np.zeros((14, 2)), np.zeros((6890, 3)), hands={"left": h})
    d = person_data(pm)
    assert d.hands["left"].vertices is h.vertices and tuple(d.hands["left"].center) == (3.0, 4.0)
