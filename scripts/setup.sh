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
# The Khronos glTF validator for the export tests (tests/js; optional: those tests skip without it)
if command -v npm >/dev/null 2>&1 && [ ! -d tests/js/node_modules ]; then
  npm ci --silent --prefix tests/js || echo "npm ci failed: the glTF validator tests will be skipped"
fi
# The export tests import files into Debian's Blender (optional: they skip without it)
if ! command -v blender >/dev/null 2>&1; then
  echo "note: no blender here; the export tests' Blender import will be skipped (apt-get install blender python3-numpy)"
fi
# The viewer's browser test drives Debian's Chromium (optional: it skips without it)
if ! command -v chromium >/dev/null 2>&1; then
  echo "note: no chromium here; the viewer's browser test will be skipped (apt-get install chromium)"
fi
echo "ready: .venv/bin/fastmetro-stream"
