"""glTF 2.0 binary (.glb) writer, with pygltflib: a skinned skeleton animation, and optionally the mesh
itself, one mesh per frame, shown only at its own frame.

The skeleton: one node per bone, its frame at rest turned so that its +Y runs along the bone (towards its
first child: importers such as Blender's draw bones along +Y), translation = its offset in the parent's
frame; the animation's rotations are the humanoid's local rotations q carried into those frames
(F_parent^-1 q F_bone), so the rest and every posed position are the humanoid's. A skin over them
with a stick-figure mesh (a thin double pyramid along each bone, bound rigidly to the parent bone) so any
viewer shows the motion; the animation has a rotation channel per bone and a translation channel for the
root, LINEAR, keyframes at the frames the track was seen (a gap is a longer interval, never invented
frames).

The mesh as a vertex animation: per-frame meshes, not morph targets. Every frame's surface is stored once
either way (the mesh has no rig to express it), but morph targets need a weight per target per keyframe,
N x N numbers for N frames, which importers expand into N shape keys each animated over all N keyframes;
per-frame meshes need at most three keyframes of a STEP scale channel each (hidden, shown from its frame
until the next frame with a mesh, hidden), so the file and the import grow
linearly with the frame count and every frame plays back the exact vertices FastMETRO gave. pygltflib
assembles the binary chunk of one file in memory: about 83 KB per frame with the mesh, 1 KB without.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import pygltflib as gl

from fastmetro.humanoid import quat_conjugate, quat_multiply, quat_rotate, quat_to_matrix

# Unit double pyramid along +Y from 0 to 1 (the bone), 6 vertices, 8 triangles, outward winding.
_STICK_V = np.array([[0, 0, 0], [0, 1, 0], [1, 0.15, 0], [0, 0.15, 1], [-1, 0.15, 0], [0, 0.15, -1]], np.float64)
_STICK_F = np.array([[0, 3, 2], [0, 4, 3], [0, 5, 4], [0, 2, 5], [1, 2, 3], [1, 3, 4], [1, 4, 5], [1, 5, 2]])
STICK_RADIUS = 0.03  # metres


@dataclass
class MeshFrames:
    """The mesh as a vertex animation: faces (F, 3) and, for some of the animation's keyframes
    (`keys`, indices into its times), the vertices (K, V, 3) in the file's frame (y up, metres)."""

    faces: np.ndarray
    keys: np.ndarray
    vertices: np.ndarray


class _Blob:
    """The binary chunk: data appended in bufferViews, 4-byte aligned."""

    def __init__(self, doc: gl.GLTF2) -> None:
        self.doc, self.data = doc, bytearray()

    def view(self, payload: bytes, target: Optional[int] = None, stride: Optional[int] = None) -> int:
        self.data.extend(b"\0" * (-len(self.data) % 4))
        self.doc.bufferViews.append(gl.BufferView(buffer=0, byteOffset=len(self.data), byteLength=len(payload),
                                                  target=target, byteStride=stride))
        self.data.extend(payload)
        return len(self.doc.bufferViews) - 1

    def accessor(self, arr: np.ndarray, type_: str, view: Optional[int] = None, offset: int = 0,
                 minmax: bool = False, target: Optional[int] = None, component: int = gl.FLOAT) -> int:
        if view is None:
            view = self.view(arr.tobytes(), target)
        count = arr.shape[0]
        acc = gl.Accessor(bufferView=view, byteOffset=offset, componentType=component, count=count, type=type_)
        if minmax:
            flat = arr.reshape(count, -1)
            acc.min, acc.max = flat.min(0).tolist(), flat.max(0).tolist()
        self.doc.accessors.append(acc)
        return len(self.doc.accessors) - 1


def world_rest(parents: Sequence[int], offsets: np.ndarray) -> np.ndarray:
    """Each bone's rest position (every rest rotation is identity: offsets add up)."""
    out = np.zeros((len(parents), 3))
    for i, p in enumerate(parents):
        out[i] = offsets[i] + (out[p] if p >= 0 else 0.0)
    return out


def bone_frames(parents: Sequence[int], rest: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """(B, 4) for each bone the shortest rotation taking +Y to its direction at rest: towards its first
    child (a leaf: along its own offset; a bone of no length: none)."""
    out = np.tile([0.0, 0.0, 0.0, 1.0], (len(parents), 1))
    for b in range(len(parents)):
        children = [c for c, p in enumerate(parents) if p == b]
        d = rest[children[0]] - rest[b] if children else np.asarray(offsets[b], np.float64)
        n = np.linalg.norm(d)
        if n < 1e-6:
            continue
        d = d / n
        axis = np.cross([0.0, 1.0, 0.0], d)
        s, c = np.linalg.norm(axis), d[1]
        if s < 1e-9:
            out[b] = [0.0, 0.0, 0.0, 1.0] if c > 0 else [1.0, 0.0, 0.0, 0.0]  # already +Y, or half a turn
            continue
        half = np.arctan2(s, c) / 2
        out[b] = np.concatenate([axis / s * np.sin(half), [np.cos(half)]])
    return out


def _sticks(parents: Sequence[int], rest: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stick-figure geometry at rest: positions, triangles, and the joint each vertex is bound to."""
    verts, faces, joints = [], [], []
    for i, p in enumerate(parents):
        if p < 0:
            continue
        a, b = rest[p], rest[i]
        axis = b - a
        length = float(np.linalg.norm(axis))
        if length < 1e-6:
            continue
        y = axis / length
        helper = np.array([1.0, 0, 0]) if abs(y[0]) < 0.9 else np.array([0, 0, 1.0])
        x = np.cross(y, helper)
        x /= np.linalg.norm(x)
        z = np.cross(x, y)
        local = _STICK_V * np.array([STICK_RADIUS, length, STICK_RADIUS])
        faces.append(_STICK_F + 6 * len(verts))
        verts.append(a + local[:, :1] * x + local[:, 1:2] * y + local[:, 2:] * z)
        joints.append(np.full(6, p))
    return np.concatenate(verts), np.concatenate(faces), np.concatenate(joints)


def write_glb(path: Union[str, os.PathLike], names: Sequence[str], parents: Sequence[int], offsets: np.ndarray,
              rotations: np.ndarray, root: np.ndarray, times: np.ndarray, mesh: Optional[MeshFrames] = None,
              name: str = "track", extras: Optional[dict] = None, body=None) -> Path:
    """Write a .glb: skeleton `names`/`parents`/`offsets` (B, 3) at rest, animated by `rotations`
    (T, B, 4) local unit quaternions (x, y, z, w) and `root` (T, 3) root positions at `times` (T,) seconds
    (strictly increasing). y up, metres. `extras` (JSON-able) is stored on the scene. `body`: a
    `skin.SkinnedBody` at the rest pose (the root at root[0]), bound to the same skin."""
    names = [str(n) for n in names]
    parents = [int(p) for p in parents]
    offsets = np.asarray(offsets, np.float64)
    times = np.asarray(times, np.float32)
    t, b = len(times), len(names)
    rotations = np.asarray(rotations, np.float32)
    root = np.asarray(root, np.float32)
    if rotations.shape != (t, b, 4) or root.shape != (t, 3):
        raise ValueError(f"rotations {rotations.shape} and root {root.shape} do not fit {t} times, {b} bones")
    if t == 0 or (t > 1 and not np.all(np.diff(times) > 0)):
        raise ValueError("times must be non-empty and strictly increasing")
    doc = gl.GLTF2(asset=gl.Asset(generator="fastmetro-stream export", version="2.0"))
    doc.scene = 0
    blob = _Blob(doc)

    hips = parents.index(-1)
    rest = world_rest(parents, offsets)
    rest += root[0] - rest[hips]  # the rest pose stands where the track starts
    # each node's frame at rest turned so that its +Y runs along its bone (what importers draw bones along);
    # the skeleton's rest positions and every posed position are unchanged (module docstring)
    frame = bone_frames(parents, rest, offsets)  # (B, 4) world rest rotation of each node
    parent_frame = np.array([frame[p] if p >= 0 else [0.0, 0.0, 0.0, 1.0] for p in parents])
    local_rest = quat_multiply(quat_conjugate(parent_frame), frame).astype(np.float32)  # float32: |w| <= 1 exactly
    local_rest = np.clip(local_rest / np.linalg.norm(local_rest, axis=1, keepdims=True), -1.0, 1.0)
    for i in range(b):
        children = [c for c, p in enumerate(parents) if p == i]
        translation = root[0] if parents[i] < 0 else quat_rotate(quat_conjugate(parent_frame[i]), offsets[i])
        doc.nodes.append(gl.Node(name=names[i], translation=[float(v) for v in translation],
                                 rotation=[float(v) for v in local_rest[i]], children=children))
    rotations = quat_multiply(quat_multiply(np.broadcast_to(quat_conjugate(parent_frame), rotations.shape), rotations),
                      np.broadcast_to(frame, rotations.shape)).astype(np.float32)

    # skin + stick figure: inverse bind matrices, the inverse of each node's world rest transform
    ibm = np.tile(np.eye(4, dtype=np.float32), (b, 1, 1))
    inv = np.swapaxes(quat_to_matrix(frame), -1, -2)
    ibm[:, :3, :3] = np.swapaxes(inv, -1, -2)  # column-major storage: the transposed matrix, row by row
    ibm[:, 3, :3] = -np.einsum("bij,bj->bi", inv, rest)
    skin_acc = blob.accessor(ibm.reshape(b, 16), "MAT4")
    doc.skins.append(gl.Skin(name=f"{name}_skeleton", joints=list(range(b)), skeleton=hips,
                             inverseBindMatrices=skin_acc))
    sv, sf, sj = _sticks(parents, rest)
    prim = gl.Primitive(
        attributes=gl.Attributes(
            POSITION=blob.accessor(sv.astype(np.float32), "VEC3", minmax=True, target=gl.ARRAY_BUFFER),
            JOINTS_0=blob.accessor(np.stack([sj, 0 * sj, 0 * sj, 0 * sj], 1).astype(np.uint16), "VEC4",
                                   target=gl.ARRAY_BUFFER, component=gl.UNSIGNED_SHORT),
            WEIGHTS_0=blob.accessor(np.tile(np.array([1, 0, 0, 0], np.float32), (len(sv), 1)), "VEC4",
                                    target=gl.ARRAY_BUFFER)),
        indices=blob.accessor(sf.reshape(-1).astype(np.uint32), "SCALAR", target=gl.ELEMENT_ARRAY_BUFFER,
                              component=gl.UNSIGNED_INT))
    doc.meshes.append(gl.Mesh(name=f"{name}_sticks", primitives=[prim]))
    doc.nodes.append(gl.Node(name=f"{name}_sticks", mesh=0, skin=0))
    scene_nodes = [hips, len(doc.nodes) - 1]
    if body is not None:
        scene_nodes.append(_skinned_body(doc, blob, body, name))

    # animation
    anim = gl.Animation(name=name)
    t_acc = blob.accessor(times, "SCALAR", minmax=True)

    def channel(node: int, path_: str, out: int, interpolation: str = "LINEAR", inp: int = t_acc) -> None:
        anim.samplers.append(gl.AnimationSampler(input=inp, output=out, interpolation=interpolation))
        anim.channels.append(gl.AnimationChannel(sampler=len(anim.samplers) - 1,
                                                 target=gl.AnimationChannelTarget(node=node, path=path_)))

    channel(hips, "translation", blob.accessor(root, "VEC3"))
    rot_view = blob.view(np.ascontiguousarray(rotations.transpose(1, 0, 2)).tobytes())
    for i in range(b):
        channel(i, "rotation", blob.accessor(rotations[:, i], "VEC4", view=rot_view, offset=i * t * 16))

    if mesh is not None:
        scene_nodes.append(_mesh_frames(doc, blob, mesh, times, name, channel))
    doc.animations.append(anim)
    doc.scenes.append(gl.Scene(name=name, nodes=scene_nodes, extras=extras or {}))
    doc.buffers.append(gl.Buffer(byteLength=len(blob.data)))
    doc.set_binary_blob(bytes(blob.data))
    path = Path(path)
    doc.save_binary(str(path))
    return path


def _skinned_body(doc: gl.GLTF2, blob: _Blob, body, name: str) -> int:
    """The body as a mesh bound to skin 0 (up to four bones per vertex); returns its node."""
    weights = np.asarray(body.weights, np.float32)
    weights /= weights.sum(1, keepdims=True)
    joints = np.where(weights > 0, np.asarray(body.joints), 0)  # an unused influence names joint 0
    prim = gl.Primitive(
        attributes=gl.Attributes(
            POSITION=blob.accessor(np.asarray(body.vertices, np.float32), "VEC3", minmax=True, target=gl.ARRAY_BUFFER),
            JOINTS_0=blob.accessor(joints.astype(np.uint16), "VEC4", target=gl.ARRAY_BUFFER,
                                   component=gl.UNSIGNED_SHORT),
            WEIGHTS_0=blob.accessor(weights, "VEC4", target=gl.ARRAY_BUFFER)),
        indices=blob.accessor(np.asarray(body.faces, np.uint32).reshape(-1), "SCALAR",
                              target=gl.ELEMENT_ARRAY_BUFFER, component=gl.UNSIGNED_INT))
    doc.meshes.append(gl.Mesh(name=f"{name}_body", primitives=[prim]))
    doc.nodes.append(gl.Node(name=f"{name}_body", mesh=len(doc.meshes) - 1, skin=0))
    return len(doc.nodes) - 1


def _mesh_frames(doc: gl.GLTF2, blob: _Blob, mesh: MeshFrames, times: np.ndarray, name: str, channel) -> int:
    """One node per mesh frame under a group node, each scaled to 1 only from its keyframe to the next."""
    keys = np.asarray(mesh.keys, np.int64)
    verts = np.asarray(mesh.vertices, np.float32)
    indices = blob.accessor(np.asarray(mesh.faces, np.uint32).reshape(-1), "SCALAR",
                            target=gl.ELEMENT_ARRAY_BUFFER, component=gl.UNSIGNED_INT)
    pos_view = blob.view(verts.tobytes(), target=gl.ARRAY_BUFFER, stride=12)
    # each frame's visibility: key times and scale values (STEP), in one buffer view
    key_t, key_s, spans = [], [], []
    for k, key in enumerate(keys):
        ts, ss = [], []
        if key > 0:
            ts.append(float(times[0]))
            ss.append(0.0)
        ts.append(float(times[key]))
        ss.append(1.0)
        if k + 1 < len(keys):  # shown until the next frame that has a mesh (frames may come without one)
            ts.append(float(times[keys[k + 1]]))
            ss.append(0.0)
        spans.append((len(key_t), len(ts)))
        key_t.extend(ts)
        key_s.extend(ss)
    t_view = blob.view(np.asarray(key_t, np.float32).tobytes())
    s_view = blob.view(np.repeat(np.asarray(key_s, np.float32), 3).tobytes())
    children = []
    group = len(doc.nodes)
    doc.nodes.append(gl.Node(name=f"{name}_mesh"))
    for k, key in enumerate(keys):
        v = verts[k]
        pos = blob.accessor(v, "VEC3", view=pos_view, offset=k * v.nbytes, minmax=True)
        doc.meshes.append(gl.Mesh(name=f"{name}_mesh_{int(key)}",
                                  primitives=[gl.Primitive(attributes=gl.Attributes(POSITION=pos), indices=indices)]))
        node = len(doc.nodes)
        doc.nodes.append(gl.Node(name=f"{name}_mesh_{int(key)}", mesh=len(doc.meshes) - 1,
                                 scale=[1.0, 1.0, 1.0] if key == 0 else [0.0, 0.0, 0.0]))
        children.append(node)
        start, n = spans[k]
        inp = blob.accessor(np.asarray(key_t[start:start + n], np.float32), "SCALAR", view=t_view, offset=start * 4,
                            minmax=True)
        out = blob.accessor(np.zeros((n, 3), np.float32), "VEC3", view=s_view, offset=start * 12)
        channel(node, "scale", out, "STEP", inp)
    doc.nodes[group].children = children
    return group
