#!/usr/bin/env bash
# Run this first whenever a GPU machine is lent (docs/device.md): checks the project on the device and writes
# one report, $OUT/device_check.md and .json (or ./device_check_out without $OUT).
#
#     bash scripts/device_wheels.sh                      # here, once: fills .whl/ (wheels, mesh data, fixtures)
#     bash scripts/device_check.sh                       # there: carry .whl; about 7 minutes on one GPU
#     bash scripts/device_check.sh --device cpu --quick  # CI: the same check, small, on the CPU
#
# The device image has its own Python 3.12 with torch (itself a virtual environment, so a venv on top of it
# would not see that torch): the wheels in .whl/wheels are installed with --target into a folder put on
# PYTHONPATH, beside the image's packages, when that Python lacks them. Otherwise the check runs on the Python
# given ($PYTHON, else this checkout's .venv, else python3) as it is.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -n "${PYTHON:-}" ]; then PY=$PYTHON
elif [ -x .venv/bin/python ]; then PY=.venv/bin/python
else PY=python3; fi
if ! "$PY" -c "import av, zmq, pydantic, filterpy, lap, ultralytics" 2>/dev/null && compgen -G ".whl/wheels/*.whl" >/dev/null; then
  SITE=${DEVICE_SITE:-/tmp/fastmetro-device-site}
  if [ ! -f "$SITE/.installed" ]; then
    echo "installing $(ls .whl/wheels/*.whl | wc -l) wheels from .whl/wheels into $SITE"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/wheels/*.whl
    touch "$SITE/.installed"
  fi
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
[ -d .whl/assets/smpl ] && export FASTMETRO_ASSETS=${FASTMETRO_ASSETS:-$PWD/.whl/assets/smpl}
[ -d .whl/assets/mano ] && export FASTMETRO_MANO_ASSETS=${FASTMETRO_MANO_ASSETS:-$PWD/.whl/assets/mano}
if [ -z "${FASTMETRO_PARITY:-}" ]; then
  for d in .whl/parity shared/fixtures/parity ../shared/fixtures/parity; do
    if [ -d "$d" ]; then export FASTMETRO_PARITY=$PWD/$d; break; fi
  done
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
exec "$PY" scripts/device_check.py "$@"
