"""Runs inside Blender (bpy, Blender as a Python module): builds the scene of an export job and writes it as
FBX (Blender's own FBX exporter) or as a .blend. Standalone on purpose: it imports only the standard
library, numpy and bpy, so any Python with bpy runs it, and `tools/export/blender.py` starts it:

    python tools/export/bpy_build.py JOB.json

JOB.json: {"format": "fbx" | "blend", "output": path, "fps": float, "frame_start": int, "frame_end": int,
"tracks": [{"npz": path, "name": str, "color": [r, g, b] (0-1)}], "camera": {"focal": px, "width": px,
"height": px} or null, "video": path or null, "video_first_frame": int, "render": {"png": path, "frame": int}
or null}. Each track's npz: names (B,), parents (B,), rest (B, 3) rest joint positions, offsets (B, 3),
frames (T,) whole scene frames of the keys, rotations (T, B, 4) local quaternions (x, y, z, w), root (T, 3)
Hips positions; with a body: vertices (V, 3) at rest, faces (F, 3), joints (V, 4), weights (V, 4). All in
the humanoid frame (y up, metres), turned here into Blender's (z up): (x, y, z) -> (x, -z, y).
"""
import json
import math
import sys

import bpy
import numpy as np
from mathutils import Matrix, Quaternion

C = np.array([[1.0, 0, 0], [0, 0, -1.0], [0, 1.0, 0]])  # y-up -> Blender's z-up
_LEAF = 0.5  # a leaf bone's tail: half its own offset further on (as the BVH End Site)


def quat_matrix(q):
    """(..., 4) (x, y, z, w) -> (..., 3, 3)."""
    x, y, z, w = np.moveaxis(np.asarray(q, np.float64), -1, 0)
    return np.stack([
        np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
        np.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
        np.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1)], -2)


def matrix_quat_wxyz(m):
    """(..., 3, 3) -> (..., 4) (w, x, y, z), w >= 0, by Shepperd's method per element."""
    flat = m.reshape(-1, 3, 3)
    out = np.empty((len(flat), 4))
    for i, r in enumerate(flat):
        q = Matrix(r.tolist()).to_quaternion()
        out[i] = (q.w, q.x, q.y, q.z)
    out[out[:, 0] < 0] *= -1
    return out.reshape(m.shape[:-2] + (4,))


def tails(parents, rest, offsets):
    """Each bone's tail: its first child's joint (the limb it drives), a leaf half its offset further on."""
    out = []
    for b in range(len(parents)):
        children = [c for c in range(len(parents)) if parents[c] == b]
        out.append(rest[children[0]] if children else rest[b] + _LEAF * offsets[b])
    return np.asarray(out)


def build_track(track, collection, rest_key=False):
    """One track's armature, action and body. rest_key: also key the rest pose (T-pose) one frame before the
    animation, outside the scene's range: the FBX exporter writes the bones' transforms at the current frame
    as the file's skeleton, and exporting from that frame makes it the T-pose."""
    z = np.load(track["npz"])
    names = [str(n) for n in z["names"]]
    parents = [int(p) for p in z["parents"]]
    rest, offsets = z["rest"].astype(np.float64), z["offsets"].astype(np.float64)
    head = rest @ C.T
    tail = tails(parents, rest, offsets) @ C.T
    name = track["name"]
    arm_data = bpy.data.armatures.new(name)
    arm = bpy.data.objects.new(name, arm_data)
    collection.objects.link(arm)
    bpy.context.view_layer.objects.active = arm
    bpy.ops.object.mode_set(mode="EDIT")
    ebones = []
    for b, n in enumerate(names):
        eb = arm_data.edit_bones.new(n)
        eb.head, eb.tail = head[b].tolist(), tail[b].tolist()
        if np.linalg.norm(tail[b] - head[b]) < 1e-4:
            eb.tail = (head[b] + [0, 0, 0.05]).tolist()
        eb.roll = 0.0
        ebones.append(eb)
    for b, p in enumerate(parents):
        if p >= 0:
            ebones[b].parent = ebones[p]
    bpy.ops.object.mode_set(mode="OBJECT")
    # each bone's rest orientation in armature space (Blender's own, from head, tail and roll)
    rest_rot = np.array([np.array(arm_data.bones[n].matrix_local)[:3, :3] for n in names])

    frames = z["frames"].astype(np.float64)
    rot = quat_matrix(z["rotations"])  # (T, B, 3, 3) local, y-up
    # the pose bone's rotation is the local rotation seen in the bone's own rest frame
    basis = np.einsum("bji,jk,tbkl,ml,bmn->tbin", rest_rot, C, rot, C, rest_rot)
    quats = matrix_quat_wxyz(basis)
    quats[1:] *= np.where((quats[1:] * quats[:-1]).sum(-1, keepdims=True) < 0, -1, 1)  # continuous
    loc = np.einsum("ji,tj->ti", rest_rot[parents.index(-1)], z["root"].astype(np.float64) @ C.T - head[parents.index(-1)])
    action = bpy.data.actions.new(f"{name}_action")

    keys = np.concatenate([[frames[0] - 1], frames]) if rest_key else frames

    def curve(path, index, group, values):
        if rest_key:
            values = np.concatenate([[1.0 if path.endswith("quaternion") and index == 0 else 0.0], values])
        fc = action.fcurves.new(path, index=index, action_group=group)
        fc.keyframe_points.add(len(keys))
        fc.keyframe_points.foreach_set("co", np.stack([keys, values], 1).ravel().astype(np.float32))
        fc.keyframe_points.foreach_set("interpolation", [1] * len(keys))  # LINEAR
        fc.update()

    for b, n in enumerate(names):
        arm.pose.bones[n].rotation_mode = "QUATERNION"
        for i in range(4):
            curve(f'pose.bones["{n}"].rotation_quaternion', i, n, quats[:, b, i])
    hips = names[parents.index(-1)]
    for i in range(3):
        curve(f'pose.bones["{hips}"].location', i, hips, loc[:, i])
    arm.animation_data_create()
    arm.animation_data.action = action  # after its curves: Blender 4.4+ then binds the action's one slot
    if getattr(arm.animation_data, "action_slot", 1) is None:
        arm.animation_data.action_slot = action.slots[0]

    color = list(track.get("color", (0.8, 0.8, 0.8))) + [1.0]
    arm.color = color
    if "vertices" in z.files:
        mesh = bpy.data.meshes.new(f"{name}_body")
        mesh.from_pydata((z["vertices"].astype(np.float64) @ C.T).tolist(), [], z["faces"].tolist())
        mesh.update()
        for poly in mesh.polygons:
            poly.use_smooth = True
        body = bpy.data.objects.new(f"{name}_body", mesh)
        collection.objects.link(body)
        body.parent = arm
        groups = [body.vertex_groups.new(name=n) for n in names]
        joints, weights = z["joints"], z["weights"]
        for v in range(len(joints)):
            for j, w in zip(joints[v], weights[v]):
                if w > 0:
                    groups[int(j)].add([v], float(w), "ADD")
        body.modifiers.new("Armature", "ARMATURE").object = arm
        mat = bpy.data.materials.new(f"{name}_colour")
        mat.diffuse_color = color
        body.data.materials.append(mat)
        body.color = color
    return arm


def add_camera(job, scene):
    cam_info = job["camera"]
    cam_data = bpy.data.cameras.new("camera")
    cam = bpy.data.objects.new("camera", cam_data)
    scene.collection.objects.link(cam)
    scene.camera = cam
    # the recording's camera: at the origin looking along -Z of the y-up frame (+Y in Blender's), up +Z;
    # with the world (the tracks on the floor), where the calibration puts it: world_from_camera maps the
    # camera frame (y down, z forward) to the y-up world, and Blender's camera looks along its own -Z, y up
    to_blender = Matrix.Rotation(math.pi / 2, 4, "X")  # y-up -> Blender's z-up, as the importers turn it
    if cam_info.get("world_from_camera") is not None:
        flip = Matrix.Diagonal((1.0, -1.0, -1.0, 1.0))
        cam.matrix_world = to_blender @ Matrix(cam_info["world_from_camera"]) @ flip
    else:
        cam.matrix_world = to_blender
    w, h = int(cam_info["width"]), int(cam_info["height"])
    scene.render.resolution_x, scene.render.resolution_y = w, h
    scene.render.resolution_percentage = 100
    cam_data.sensor_fit = "HORIZONTAL" if w >= h else "VERTICAL"
    cam_data.sensor_width = cam_data.sensor_height = 36.0
    cam_data.lens = float(cam_info["focal"]) * 36.0 / max(w, h)
    cam_data.clip_end = 1000.0
    video = job.get("video")
    if video:
        clip = bpy.data.movieclips.load(video)
        clip.frame_start = int(job.get("video_frame_start", 0))  # the scene frame of the video's first frame
        cam_data.show_background_images = True
        bg = cam_data.background_images.new()
        bg.source = "MOVIE_CLIP"
        bg.clip = clip
        bg.alpha = 1.0
        # a render shows the video too: the render over the clip in the compositor
        scene.render.film_transparent = True
        scene.use_nodes = True
        tree = scene.node_tree
        for node in list(tree.nodes):
            tree.nodes.remove(node)
        layers = tree.nodes.new("CompositorNodeRLayers")
        movie = tree.nodes.new("CompositorNodeMovieClip")
        movie.clip = clip
        scale = tree.nodes.new("CompositorNodeScale")
        scale.space = "RENDER_SIZE"
        over = tree.nodes.new("CompositorNodeAlphaOver")
        out = tree.nodes.new("CompositorNodeComposite")
        tree.links.new(movie.outputs["Image"], scale.inputs["Image"])
        tree.links.new(scale.outputs["Image"], over.inputs[1])
        tree.links.new(layers.outputs["Image"], over.inputs[2])
        tree.links.new(over.outputs["Image"], out.inputs["Image"])
    return cam


def main():
    job = json.load(open(sys.argv[sys.argv.index("--") + 1] if "--" in sys.argv else sys.argv[1]))
    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    fps = float(job["fps"])
    scene.render.fps = max(1, round(fps))
    scene.render.fps_base = scene.render.fps / fps
    scene.frame_start, scene.frame_end = int(job["frame_start"]), int(job["frame_end"])
    scene.unit_settings.system = "METRIC"
    arms = [build_track(t, scene.collection, rest_key=job["format"] == "fbx") for t in job["tracks"]]
    if job["format"] == "fbx":
        scene.frame_set(scene.frame_start - 1)  # the rest pose: the file's skeleton stands in the T-pose
        bpy.ops.export_scene.fbx(filepath=job["output"], add_leaf_bones=False, bake_anim_use_all_actions=False,
                                 bake_anim_use_nla_strips=False, bake_anim_simplify_factor=0.0,
                                 bake_anim_force_startend_keying=True)
        return
    if job.get("camera"):
        add_camera(job, scene)
    scene.render.engine = "BLENDER_WORKBENCH"
    scene.view_settings.view_transform = "Standard"  # the video's colours as they are
    scene.display.shading.light = "STUDIO"
    scene.display.shading.color_type = "OBJECT"
    for arm in arms:
        arm.data.display_type = "STICK"
        arm.show_in_front = True
    # the video's path stays absolute: the file is written in the export's scratch folder and moved into place
    # afterwards, which would break a path made relative to where it was saved
    bpy.ops.wm.save_as_mainfile(filepath=job["output"], relative_remap=False)
    if job.get("render"):
        scene.frame_set(int(job["render"]["frame"]))
        scene.render.filepath = job["render"]["png"]
        scene.render.image_settings.file_format = "PNG"
        bpy.ops.render.render(write_still=True)


if __name__ == "__main__":
    main()
