"""Run on Blender as a Python module: open an exported .blend, report its scene as JSON, and render one frame
with Workbench to a PNG.

    python tests/blender_scene.py FILE.blend OUT.json FRAME OUT.png
"""
import json
import sys

import bpy

argv = sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else sys.argv[1:]
path, out, frame, png = argv[0], argv[1], int(argv[2]), argv[3]
bpy.ops.wm.open_mainfile(filepath=path)
scene = bpy.context.scene
cam = scene.camera
width = scene.render.resolution_x
report = {
    "fps": scene.render.fps / scene.render.fps_base, "frame_range": [scene.frame_start, scene.frame_end],
    "engine": scene.render.engine, "resolution": [width, scene.render.resolution_y],
    "camera": None if cam is None else {
        "focal_px": cam.data.lens / cam.data.sensor_width * width, "location": list(cam.location),
        "backgrounds": [(b.source, b.clip.filepath if b.clip else None) for b in cam.data.background_images]},
    "armatures": {o.name: {"bones": len(o.data.bones), "color": list(o.color),
                           "action_range": list(o.animation_data.action.frame_range)}
                  for o in scene.objects if o.type == "ARMATURE"},
    "bodies": {o.name: {"parent": o.parent.name if o.parent else None, "vertices": len(o.data.vertices),
                        "color": list(o.color), "groups": len(o.vertex_groups)}
               for o in scene.objects if o.type == "MESH"},
}
scene.frame_set(frame)
scene.render.filepath = png
scene.render.image_settings.file_format = "PNG"
bpy.ops.render.render(write_still=True)
with open(out, "w") as f:
    json.dump(report, f)
