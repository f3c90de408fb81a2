"""Import one exported BVH or GLB with Blender's stock importer (default options) and save every bone head's
world position (Blender's frame: z up) at every frame of the imported action, for tests/test_export_world.py.
Runs on a Python with Blender as a module (bpy):

    python tests/blender_world.py FILE OUT.npz FPS
"""
import sys

import bpy
import numpy as np

path, out, fps = sys.argv[1], sys.argv[2], float(sys.argv[3])
bpy.ops.wm.read_factory_settings(use_empty=True)
scene = bpy.context.scene
scene.render.fps = max(1, round(fps))
scene.render.fps_base = scene.render.fps / fps
if path.lower().endswith(".bvh"):
    bpy.ops.import_anim.bvh(filepath=path)
else:
    bpy.ops.import_scene.gltf(filepath=path)
arms = [o for o in scene.objects if o.type == "ARMATURE"]
if len(arms) != 1:
    raise SystemExit(f"expected one armature, Blender made {len(arms)}")
arm = arms[0]
start, end = (int(round(v)) for v in arm.animation_data.action.frame_range)
names = [pb.name for pb in arm.pose.bones]
positions = []
for f in range(start, end + 1):
    scene.frame_set(f)
    bpy.context.view_layer.update()
    positions.append([list(arm.matrix_world @ pb.head) for pb in arm.pose.bones])
np.savez(out, names=np.array(names), positions=np.array(positions), start=start, end=end)
