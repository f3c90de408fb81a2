"""The formats Blender writes (FBX through its own exporter, .blend): finds a Python with Blender as a module
(bpy), hands it a job (JSON + one npz per track) and runs tools/export/bpy_build.py there.

bpy 4.5 (PyPI `bpy==4.5.*`, Python 3.11 only) needs NumPy < 2, which the rest of the project's dependencies
may not allow in the same environment; so Blender runs as a child process, with this Python if it has bpy,
else the one named by FASTMETRO_BLENDER_PYTHON (for instance a venv holding only bpy: scripts/setup.sh makes
.venv-blender). Where neither has it, the export stops with one line that says how to get it.
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Optional

import numpy as np

BUILD_SCRIPT = Path(__file__).with_name("bpy_build.py")
ENV = "FASTMETRO_BLENDER_PYTHON"
MISSING = ("{what} needs Blender as a Python module: pip install 'fastmetro-stream[blender]' (Python 3.11), "
           "or set FASTMETRO_BLENDER_PYTHON to a Python that has bpy==4.5.*")


class BlenderMissing(RuntimeError):
    pass


class BlenderFailed(RuntimeError):
    """Blender ran and did not write the file; the message is one line with its last lines."""


def blender_python(what: str = "this format") -> str:
    """The interpreter that runs Blender's side; BlenderMissing (one line) when there is none."""
    named = os.environ.get(ENV)
    if named:
        if not Path(named).is_file():
            raise BlenderMissing(f"{ENV}={named} is not a file; " + MISSING.format(what=what))
        return named
    if importlib.util.find_spec("bpy") is not None:
        return sys.executable
    raise BlenderMissing(MISSING.format(what=what))


def track_job(path: Path, names, parents, rest, offsets, frames, rotations, root, body=None) -> Path:
    """One track's arrays for bpy_build.py (its module docstring lists them)."""
    arrays = dict(names=np.asarray([str(n) for n in names]), parents=np.asarray(parents, np.int64),
                  rest=np.asarray(rest, np.float64), offsets=np.asarray(offsets, np.float64),
                  frames=np.asarray(frames, np.int64), rotations=np.asarray(rotations, np.float32),
                  root=np.asarray(root, np.float32))
    if body is not None:
        arrays.update(vertices=body.vertices, faces=np.asarray(body.faces, np.int64), joints=body.joints,
                      weights=body.weights)
    np.savez(path, **arrays)
    return path


def run_build(job: dict, job_path: Path, timeout: Optional[float] = 1800) -> None:
    """Write the job and run Blender on it; a failure is a BlenderFailed with Blender's last lines."""
    python = blender_python(job["format"])
    job_path.write_text(json.dumps(job))
    proc = subprocess.run([python, str(BUILD_SCRIPT), str(job_path)], capture_output=True, text=True,
                          timeout=timeout)
    if proc.returncode != 0 or not Path(job["output"]).is_file():
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-8:]
        raise BlenderFailed(f"Blender could not write {job['output']}: " + " | ".join(tail))
