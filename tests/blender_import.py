"""Import one exported BVH, GLB or FBX with Blender's stock importer (default options, nothing patched) and
report what Blender made of it, as JSON. Runs on Blender as a Python module (`pip install "bpy==4.5.*"`):

    python tests/blender_import.py FILE OUT.json FPS FRAME [FRAME ...]

Before the import the scene's frame rate is set to FPS (what a user does for a BVH: Blender's importer
keeps the scene's rate unless told otherwise). FRAME: offsets from the first keyframe of the imported
action. Reports the armature's bone names and parents, its rest bones (head and tail, to see where they
point), the action's frame range, the keyframe count and frames of each bone's channels, the scene's rate,
and the world position (Blender's frame: z up) of every bone head at each asked frame; where the file holds
a mesh bound to the armature, OUT.npz gets its deformed vertices (world, z up) at those frames. The test
that runs this compares them.
"""
import json
import sys

import bpy
import numpy as np

argv = sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else sys.argv[1:]
path, out, fps = argv[0], argv[1], float(argv[2])
frames = [int(f) for f in argv[3:]]

bpy.ops.wm.read_factory_settings(use_empty=True)
scene = bpy.context.scene
scene.render.fps = max(1, round(fps))
scene.render.fps_base = scene.render.fps / fps
suffix = path.lower().rsplit(".", 1)[-1]
if suffix == "bvh":
    bpy.ops.import_anim.bvh(filepath=path)
elif suffix in ("glb", "gltf"):
    bpy.ops.import_scene.gltf(filepath=path)
elif suffix == "fbx":
    bpy.ops.import_scene.fbx(filepath=path)
else:
    raise SystemExit(f"cannot import {path}")

arms = [o for o in scene.objects if o.type == "ARMATURE"]
if len(arms) != 1:
    raise SystemExit(f"expected one armature, Blender made {len(arms)}")
arm = arms[0]
action = arm.animation_data.action if arm.animation_data else None
if action is None:
    raise SystemExit("the armature has no action")
start, end = (float(v) for v in action.frame_range)
keys, key_frames = {}, {}
for fc in action.fcurves:
    keys[fc.data_path] = max(keys.get(fc.data_path, 0), len(fc.keyframe_points))
    key_frames.setdefault(fc.data_path, [k.co[0] for k in fc.keyframe_points])
skinned = [o for o in scene.objects if o.type == "MESH" and any(m.type == "ARMATURE" for m in o.modifiers)]
report = {"bones": [b.name for b in arm.data.bones],
          "parents": {b.name: (b.parent.name if b.parent else None) for b in arm.data.bones},
          "rest": {b.name: [list(arm.matrix_world @ b.head_local), list(arm.matrix_world @ b.tail_local)]
                   for b in arm.data.bones},
          "frame_range": [start, end], "keys": keys, "key_frames": key_frames,
          "fps": scene.render.fps / scene.render.fps_base, "scene_range": [scene.frame_start, scene.frame_end],
          "objects": sorted(o.name for o in scene.objects), "skinned_meshes": [o.name for o in skinned], "positions": {}}
meshes = {}
for k in frames:
    scene.frame_set(int(round(start)) + k)
    bpy.context.view_layer.update()
    report["positions"][str(k)] = {pb.name: list(arm.matrix_world @ pb.head) for pb in arm.pose.bones}
    depsgraph = bpy.context.evaluated_depsgraph_get()
    for obj in skinned:
        ev = obj.evaluated_get(depsgraph)
        mesh = ev.to_mesh()
        co = np.empty(len(mesh.vertices) * 3, np.float32)
        mesh.vertices.foreach_get("co", co)
        m = np.array(ev.matrix_world)
        co = co.reshape(-1, 3) @ m[:3, :3].T + m[:3, 3]
        meshes[f"{obj.name}@{k}"] = co
        ev.to_mesh_clear()
if meshes:
    np.savez(out.rsplit(".", 1)[0] + ".npz", **meshes)
with open(out, "w") as f:
    json.dump(report, f)
