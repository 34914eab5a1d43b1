#!/usr/bin/env bash
# Set up a virtual environment (.venv) with the exporter and test extras, then run
# the whole test suite, slow full-size checks included, except the tests marked gpu
# (they need an NVIDIA GPU with onnxruntime-gpu; run them with: scripts/test.sh -m gpu).
# Extra args go to pytest (a later -m replaces the default "not gpu").
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${CLIPXAI_VENV:-.venv}"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
LOG="$VENV/pip-install.log"
"$VENV/bin/python" -m pip install --quiet --upgrade pip > "$LOG" 2>&1 || { cat "$LOG"; exit 1; }
# constraints.txt pins the versions the suite was last run with.
"$VENV/bin/python" -m pip install --quiet -c constraints.txt -e ".[export,test,video,sam,eval,ray,ros,openvino]" >> "$LOG" 2>&1 || { cat "$LOG"; exit 1; }
# SAM 2.1 (clipxai-export-sam) is published as source only and builds against the torch installed above.
SAM2_BUILD_CUDA=0 "$VENV/bin/python" -m pip install --quiet --no-build-isolation -c constraints.txt sam2 \
    >> "$LOG" 2>&1 || { cat "$LOG"; exit 1; }
# ROS 2 (tests/test_ros.py): DDS discovery stays on this machine's loopback, in a test-only domain.
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
export ROS_DOMAIN_ID="${CLIPXAI_TEST_ROS_DOMAIN_ID:-87}"
exec "$VENV/bin/python" -m pytest -m "not gpu" "$@"
