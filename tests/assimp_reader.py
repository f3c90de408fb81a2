"""A second reader for BVH, glTF and FBX: the Open Asset Import Library (Debian's `assimp-utils`). Its
command-line tool parses the file and dumps the scene it made (`assimp dump FILE OUT.assxml`: the node tree
with each node's local matrix, and the animation channels with their keys); this module reads that dump
and poses the nodes at a time, as any animation player would (keys interpolated, local transforms
multiplied down the tree). The tests compare the node world positions with the npz.
"""
from __future__ import annotations

import shutil
import subprocess
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


def available() -> bool:
    return shutil.which("assimp") is not None


@dataclass
class Channel:
    times: dict = field(default_factory=dict)  # "position" | "rotation" | "scaling" -> (K,) ticks
    values: dict = field(default_factory=dict)  # -> (K, 3) or (K, 4) quaternions (x, y, z, w)


@dataclass
class AssimpScene:
    names: list  # every node, depth first
    parents: list  # parent index, -1 for the root
    matrices: np.ndarray  # (N, 4, 4) local rest transforms
    ticks_per_second: float
    duration: float  # ticks
    channels: dict  # node name -> Channel
    meshes: int = 0
    bones_in_meshes: int = 0

    def start(self) -> float:
        return min(min(t) for c in self.channels.values() for t in c.times.values() if len(t))

    def world_positions(self, seconds: float) -> dict:
        """Every node's world position at `seconds` after the first key."""
        tick = self.start() + seconds * self.ticks_per_second
        world = np.zeros_like(self.matrices)
        for i, name in enumerate(self.names):
            local = self.matrices[i].copy()
            ch = self.channels.get(name)
            if ch is not None:
                t, r, s = local[:3, 3].copy(), local[:3, :3], np.eye(3)
                scale = np.linalg.norm(r, axis=0)
                rot = r / scale
                if "position" in ch.times:
                    t = _lerp(ch.times["position"], ch.values["position"], tick)
                if "rotation" in ch.times:
                    rot = _quat_matrix(_nlerp(ch.times["rotation"], ch.values["rotation"], tick))
                s = np.diag(_lerp(ch.times["scaling"], ch.values["scaling"], tick) if "scaling" in ch.times
                            else scale)
                local = np.eye(4)
                local[:3, :3] = rot @ s
                local[:3, 3] = t
            p = self.parents[i]
            world[i] = local if p < 0 else world[p] @ local
        return {n: world[i, :3, 3].copy() for i, n in enumerate(self.names)}


def _bracket(times: np.ndarray, tick: float) -> tuple[int, int, float]:
    k = int(np.searchsorted(times, tick, side="right")) - 1
    if k < 0:
        return 0, 0, 0.0
    if k >= len(times) - 1:
        return len(times) - 1, len(times) - 1, 0.0
    return k, k + 1, float((tick - times[k]) / (times[k + 1] - times[k]))


def _lerp(times, values, tick):
    a, b, u = _bracket(times, tick)
    return values[a] * (1 - u) + values[b] * u


def _nlerp(times, values, tick):
    a, b, u = _bracket(times, tick)
    qb = values[b] if np.dot(values[a], values[b]) >= 0 else -values[b]
    q = values[a] * (1 - u) + qb * u
    return q / np.linalg.norm(q)


def _quat_matrix(q):
    x, y, z, w = q
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def _numbers(text: str) -> np.ndarray:
    return np.array(text.split(), np.float64)


def read(path: Path, work: Path) -> AssimpScene:
    """Run `assimp dump` on the file and read the scene it made."""
    out = work / (Path(path).name + ".assxml")
    proc = subprocess.run(["assimp", "dump", str(path), str(out)], capture_output=True, text=True, timeout=120)
    if proc.returncode != 0 or not out.is_file():
        raise RuntimeError(f"assimp could not read {path}: {(proc.stdout + proc.stderr)[-800:]}")
    root = ET.parse(out).getroot()
    scene = root.find("Scene")
    names, parents, matrices = [], [], []

    def walk(node, parent):
        names.append(node.get("name"))
        parents.append(parent)
        matrices.append(_numbers(node.find("Matrix4").text).reshape(4, 4))
        me = len(names) - 1
        children = node.find("NodeList")
        for child in (children.findall("Node") if children is not None else []):
            walk(child, me)

    walk(scene.find("Node"), -1)
    channels, tps, duration = {}, 1.0, 0.0
    anims = scene.find("AnimationList")
    if anims is not None:
        anim = anims.find("Animation")
        tps, duration = float(anim.get("tick_cnt")) or 1.0, float(anim.get("duration"))
        for na in anim.find("NodeAnimList").findall("NodeAnim"):
            ch = Channel()
            for kind, tag in (("position", "PositionKey"), ("rotation", "RotationKey"), ("scaling", "ScalingKey")):
                keys = na.findall(f"{tag}List/{tag}")
                if keys:
                    ch.times[kind] = np.array([float(k.get("time")) for k in keys])
                    ch.values[kind] = np.stack([_numbers(k.text) for k in keys])
            channels[na.get("node")] = ch
    meshes = scene.find("MeshList")
    n_mesh = int(meshes.get("num")) if meshes is not None else 0
    n_bones = sum(int(b.get("num")) for b in scene.iter("BoneList")) if meshes is not None else 0
    return AssimpScene(names, parents, np.stack(matrices), tps, duration, channels, n_mesh, n_bones)
