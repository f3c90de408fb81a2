"""Offline export of a recording: one file per track in standard formats (npz, BVH, glTF binary, OBJ, FBX)
and a Blender scene, that animation tools open. docs/export.md describes every file.

    from tools.export import ExportOptions, export_recording
    summary = export_recording("run.msgpack", "out/", ExportOptions(formats=("npz", "bvh", "gltf")))
"""
from .exporter import FORMATS, ExportError, ExportOptions, ExportSummary, export_recording, parse_formats

__all__ = ["FORMATS", "ExportError", "ExportOptions", "ExportSummary", "export_recording", "parse_formats"]
