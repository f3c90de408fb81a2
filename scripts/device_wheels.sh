#!/usr/bin/env bash
# Fills .whl/ (ignored by git) with what scripts/device_check.sh needs on a lent GPU machine that has its own
# Python 3.12 with torch, numpy, scipy, OpenCV, PyYAML and msgpack but none of our other packages, and no
# network: our other dependencies as Python 3.12 manylinux x86_64 wheels (.whl/wheels), the SMPL and MANO
# mesh data files (.whl/assets) and the parity fixtures (.whl/parity). Run it here, where PyPI is reachable:
#
#     bash scripts/device_wheels.sh            # then name .whl in the device run's carry
#
# Everything must stay under 64 MiB (what a device run carries, the checkout included); the script fails
# if it does not. torch is NOT fetched (the machine's own is used), nor the YOLO weights (the check runs
# OpenCV's HOG detector). Versions are the ones this project's tests ran with.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
SHARED=${FASTMETRO_SHARED:-$(cd .. && pwd)/shared}
DEST=.whl
LIMIT_MIB=${DEVICE_BUNDLE_LIMIT_MIB:-56}  # leaves room for the checkout itself within the 64 MiB carried
# name==version; pure-Python ones are platform-independent wheels
WHEELS=(
  av==18.1.0 pyzmq==27.3.0 pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0
  typing-inspection==0.4.5 typing-extensions==4.16.0 filterpy==2.0.0 lap==0.5.13
  ultralytics==8.4.190 ultralytics-thop==2.2.3
)
mkdir -p "$DEST/wheels"
rm -f "$DEST"/wheels/*.whl
for spec in "${WHEELS[@]}"; do
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any -d "$DEST/wheels" "$spec"
done
copy_dir() {  # copy_dir FROM TO WHAT
  if [ -d "$1" ]; then
    mkdir -p "$2" && cp -f "$1"/* "$2/"
  else
    echo "warning: $1 not found: the device check will have no $3" >&2
  fi
}
copy_dir "${FASTMETRO_ASSETS:-$SHARED/assets/smpl}" "$DEST/assets/smpl" "SMPL mesh data"
copy_dir "${FASTMETRO_MANO_ASSETS:-$SHARED/assets/mano}" "$DEST/assets/mano" "MANO mesh data (hands)"
copy_dir "${FASTMETRO_PARITY:-$SHARED/fixtures/parity}" "$DEST/parity" "parity fixtures"
chmod -R u+w "$DEST"
size=$(du -sm "$DEST" | cut -f1)
ls "$DEST/wheels"
echo "$DEST: ${size} MiB (limit ${LIMIT_MIB} MiB)"
if [ "$size" -gt "$LIMIT_MIB" ]; then
  echo "error: $DEST is ${size} MiB, over ${LIMIT_MIB} MiB: a device run could not carry it" >&2
  exit 1
fi
