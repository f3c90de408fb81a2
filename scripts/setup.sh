#!/usr/bin/env bash
# Set up fastmetro-stream in ./.venv (idempotent): PyTorch first, pinned, then the project with its
# test extras. Run from the repository root:  bash scripts/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "creating .venv with $($PY --version)"
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
# torch first, pinned: a newer or unpinned torch can pull gigabytes of other builds
.venv/bin/python -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
.venv/bin/python -m pip install -q -e ".[test]"
# The Node.js subscriber example (optional: its tests skip without it)
if command -v npm >/dev/null 2>&1 && [ ! -d examples/node/node_modules ]; then
  npm ci --silent --prefix examples/node || echo "npm ci failed: the Node.js example tests will be skipped"
fi
# The Khronos glTF validator and three.js for the export tests (tests/js; optional: those tests skip without it)
if command -v npm >/dev/null 2>&1 && [ ! -d tests/js/node_modules/three ]; then
  npm ci --silent --prefix tests/js || echo "npm ci failed: the glTF validator tests will be skipped"
fi
# Blender 4.5 LTS as a Python module (PyPI bpy, Python 3.11 only) for `export --format fbx,blend` and the
# export tests' Blender checks. bpy 4.5 needs NumPy < 2, which the project's other dependencies rule out in
# one environment: it gets a venv of its own, .venv-blender, named by FASTMETRO_BLENDER_PYTHON.
BPY_PY=${BLENDER_PYTHON_FOR_VENV:-$PY}
if [ ! -x .venv-blender/bin/python ] || ! .venv-blender/bin/python -c "import bpy" >/dev/null 2>&1; then
  if "$BPY_PY" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
    "$BPY_PY" -m venv .venv-blender && .venv-blender/bin/python -m pip install -q "bpy==4.5.*" \
      || echo "note: bpy did not install: export --format fbx,blend and the Blender checks will not run"
  else
    echo "note: bpy 4.5 needs Python 3.11 ($BPY_PY is $("$BPY_PY" --version 2>&1)): no .venv-blender"
  fi
fi
[ -x .venv-blender/bin/python ] && echo "Blender: export FASTMETRO_BLENDER_PYTHON=$PWD/.venv-blender/bin/python"
# The export tests' second reader (optional: they skip without it): the Open Asset Import Library
if ! command -v assimp >/dev/null 2>&1; then
  echo "note: no assimp here; the export tests' assimp checks will be skipped (apt-get install assimp-utils)"
fi
# The viewer's browser test drives Debian's Chromium (optional: it skips without it)
if ! command -v chromium >/dev/null 2>&1; then
  echo "note: no chromium here; the viewer's browser test will be skipped (apt-get install chromium)"
fi
echo "ready: .venv/bin/fastmetro-stream"
