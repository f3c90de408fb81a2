#!/usr/bin/env python
"""Export cost per format: seconds per 1,000 person-frames for npz, npz with vertices, BVH, glTF, glTF with
the mesh, glTF with the skinned body, OBJ, FBX (with the body) and the .blend scene, each the whole
`export_recording` of one recording (reading, decoding and solving the humanoid skeleton included), and the
reading alone (decode only) as the floor they share. FBX and .blend start Blender (bpy, in
FASTMETRO_BLENDER_PYTHON or this Python) once per track and once per file; without bpy their rows say so.

    python scripts/bench_export.py [--frames 300] [--persons 2] [--json out.json]

Frames are synthetic (pipeline.wire.synthetic_mesh_frame, random vertices): the solver and the writers do
the same work on them as on real meshes. Times are wall-clock on this machine and vary with its load.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from pipeline import wire  # noqa: E402
from scripts.bench_vmc import with_hands  # noqa: E402
from tools.export import ExportError, ExportOptions, export_recording  # noqa: E402
from tools.export.tracks import read_frames  # noqa: E402

CASES = [  # name, formats, npz vertices, glTF mesh, skinned body
    ("npz", ("npz",), "none", False, False),
    ("npz + vertices f32", ("npz",), "float32", False, False),
    ("npz + vertices f16", ("npz",), "float16", False, False),
    ("bvh", ("bvh",), "none", False, False),
    ("gltf (skeleton)", ("gltf",), "none", False, False),
    ("gltf + mesh", ("gltf",), "none", True, False),
    ("gltf + body", ("gltf",), "none", False, True),
    ("obj", ("obj",), "none", False, False),
    ("fbx (skeleton)", ("fbx",), "none", False, False),
    ("fbx + body", ("fbx",), "none", False, True),
    ("blend", ("blend",), "none", False, False),
]


def make_recording(path: Path, frames: int, persons: int, hands: bool = False) -> None:
    faces = np.stack([np.arange(13776) % 6888, np.arange(13776) % 6888 + 1, np.arange(13776) % 6888 + 2], 1)
    w = wire.RecordWriter(path)
    w.write(0.0, b"bench/topology", wire.encode_topology("bench", 0, faces, ["j"] * 14, ["h"] * 17))
    for i in range(frames):
        mf = wire.synthetic_mesh_frame(persons, index=i)
        w.write(0.0, b"bench/frame", wire.encode_frame(with_hands(mf) if hands else mf, "bench", i))
    w.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--persons", type=int, default=2)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        rec = Path(tmp) / "bench.msgpack"
        make_recording(rec, args.frames, args.persons)
        person_frames = args.frames * args.persons
        for formats in (("npz", "bvh", "gltf"), ("obj",)):  # warm-up: imports, first calls
            export_recording(rec, Path(tmp) / "warm-up", ExportOptions(formats=formats, frames=(0, 1)))
        t0 = time.perf_counter()
        n = sum(len(f.persons) for f in read_frames(rec))
        assert n == person_frames
        results["read (decode only)"] = (time.perf_counter() - t0) * 1000 / person_frames
        for name, formats, vertices, mesh, body in CASES:
            out = Path(tmp) / name.replace(" ", "_")
            t0 = time.perf_counter()
            try:
                export_recording(rec, out, ExportOptions(formats=formats, vertices=vertices, gltf_mesh=mesh,
                                                         body=body))
            except ExportError as e:  # fbx, blend without bpy
                print(f"{name}: {e}", file=sys.stderr)
                continue
            results[name] = (time.perf_counter() - t0) * 1000 / person_frames
            size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
            results[name + " MB"] = size / 1e6
        # the finger bones: the same recording with both hands on every person; the added cost per hand
        rec_hands = Path(tmp) / "bench_hands.msgpack"
        make_recording(rec_hands, args.frames, args.persons, hands=True)
        t0 = time.perf_counter()
        read_hands = sum(len(f.persons) for f in read_frames(rec_hands))
        results["read with hands"] = (time.perf_counter() - t0) * 1000 / read_hands
        for name, formats in (("npz, bvh, gltf", ("npz", "bvh", "gltf")),):
            for hands, source in ((False, rec), (True, rec_hands)):
                t0 = time.perf_counter()
                export_recording(source, Path(tmp) / f"h{hands}", ExportOptions(formats=formats))
                results[f"{name}{' + hands' if hands else ''}"] = (time.perf_counter() - t0) * 1000 / person_frames
        added = (results["npz, bvh, gltf + hands"] - results["npz, bvh, gltf"]
                 - (results["read with hands"] - results["read (decode only)"]))
        results["hands: added ms per hand (decode excluded)"] = added / 2
    base = results["npz"]
    print(f"{args.frames} frames x {args.persons} persons ({person_frames} person-frames), synthetic meshes")
    print(f"{'format':<22}{'s / 1000 person-frames':>24}{'vs npz':>9}{'MB written':>12}")
    for name in ["read (decode only)"] + [c[0] for c in CASES]:
        if name not in results:
            print(f"{name:<22}{'(needs bpy)':>24}")
            continue
        mb = results.get(name + " MB")
        print(f"{name:<22}{results[name]:>24.2f}{results[name] / base:>9.2f}"
              f"{'' if mb is None else f'{mb:.1f}':>12}")
    print(f"\nfinger bones (both hands of every person), s / 1000 person-frames:")
    for name in ("read (decode only)", "read with hands", "npz, bvh, gltf", "npz, bvh, gltf + hands"):
        print(f"{name:<26}{results[name]:>10.2f}")
    added = results["hands: added ms per hand (decode excluded)"]
    print(f"added per hand (solve, policy, files; the hands' decoding excluded): {added:.3f} ms (target < 0.2)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
