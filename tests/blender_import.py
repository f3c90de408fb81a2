"""Run inside Blender: import one exported BVH or GLB and report what Blender made of it, as JSON.

    blender -b --factory-startup --python-exit-code 1 --python tests/blender_import.py -- \
        FILE OUT.json FPS FRAME [FRAME ...]

FRAME: offsets from the first keyframe of the imported action. Reports the armature's bone names, the
action's frame range, the keyframe count of each bone's channels, and the world position (Blender's
frame: z up) of every bone head at each asked frame. The test that runs this compares them.
"""
import json
import sys

import bpy

argv = sys.argv[sys.argv.index("--") + 1:]
path, out, fps = argv[0], argv[1], float(argv[2])
frames = [int(f) for f in argv[3:]]

scene = bpy.context.scene
for obj in list(bpy.data.objects):
    bpy.data.objects.remove(obj, do_unlink=True)
scene.render.fps = max(1, round(fps))
scene.render.fps_base = scene.render.fps / fps
if path.lower().endswith(".bvh"):
    # Debian's Blender 3.4 runs on Python 3.11, which removed open()'s "U" mode that its BVH importer still
    # asks for; give the importer an open() that drops it (nothing else about the import changes).
    from io_anim_bvh import import_bvh

    import_bvh.open = lambda file, mode="r", *a, **kw: open(file, mode.replace("U", ""), *a, **kw)
    bpy.ops.import_anim.bvh(filepath=path, axis_forward="-Z", axis_up="Y", update_scene_fps=False,
                            update_scene_duration=True, rotate_mode="NATIVE")
else:
    # Same story: its glTF importer uses np.bool, which NumPy 1.24 (Debian's) removed; it meant bool.
    import numpy

    if "bool" not in numpy.__dict__:
        numpy.bool = bool
    bpy.ops.import_scene.gltf(filepath=path)

arms = [o for o in scene.objects if o.type == "ARMATURE"]
if len(arms) != 1:
    raise SystemExit(f"expected one armature, Blender made {len(arms)}")
arm = arms[0]
action = arm.animation_data.action if arm.animation_data else None
if action is None:
    raise SystemExit("the armature has no action")
start, end = (float(v) for v in action.frame_range)
keys = {}
for fc in action.fcurves:
    keys[fc.data_path] = max(keys.get(fc.data_path, 0), len(fc.keyframe_points))
report = {"bones": [b.name for b in arm.data.bones], "frame_range": [start, end], "keys": keys,
          "fps": scene.render.fps / scene.render.fps_base, "objects": len(scene.objects), "positions": {}}
for k in frames:
    scene.frame_set(int(round(start)) + k)
    bpy.context.view_layer.update()
    report["positions"][str(k)] = {pb.name: list(arm.matrix_world @ pb.head) for pb in arm.pose.bones}
with open(out, "w") as f:
    json.dump(report, f)
