#!/usr/bin/env bash
# The wheel works on its own: build it, install it (not editable) into a fresh virtual environment, and run
# the shipped sample from a directory outside the checkout, with no source given and a shipped config by
# name. Run from the repository root:  bash scripts/check_wheel.sh   (FASTMETRO_ASSETS: the mesh data files)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
"$PY" -m pip wheel -q --no-deps . -w "$WORK/dist"
"$PY" -m venv "$WORK/venv"
"$WORK/venv/bin/python" -m pip install -q --upgrade pip
# torch first, pinned (as scripts/setup.sh does), then the wheel with its dependencies
"$WORK/venv/bin/python" -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
"$WORK/venv/bin/python" -m pip install -q "$WORK"/dist/*.whl
mkdir "$WORK/elsewhere"
cd "$WORK/elsewhere"
"$WORK/venv/bin/fastmetro-stream" config -c offline_file >/dev/null
# infer.engine=manual: engine auto's one-time measurement (minutes of compiling) is the device check's to run
"$WORK/venv/bin/fastmetro-stream" run -c offline_file --record run.msgpack --set infer.engine=manual \
  --set progress=false --set detect.detector=hog --set publish.endpoint=tcp://127.0.0.1:0 --set publish.mode=latest \
  --set decode.max_frames=5
"$WORK/venv/bin/python" - <<'EOF'
from pipeline import wire
frames = [m for m in (wire.decode(r.payload) for r in wire.read_recording("run.msgpack")) if m["kind"] == "frame"]
assert len(frames) == 5, f"expected 5 frames of the sample, got {len(frames)}"
print(f"wheel install: the sample ran from the installed package ({len(frames)} frames recorded)")
EOF
