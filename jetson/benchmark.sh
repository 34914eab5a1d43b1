#!/usr/bin/env bash
# Latency split of a bundle on this device: preprocessing, host-to-device copy, compute,
# device-to-host copy, postprocessing (python -m clipxai.cli.latency, the runtime's own
# code path), printed as a markdown table with the device and its power mode.
#
#   jetson/benchmark.sh BUNDLE [--providers cuda|tensorrt|cpu] [--backend tensorrt] [--trt-fp16]
#                              [--batch 1 --batch 4] [--runs 50] [--json out.json]
#
# On a Jetson the power mode is read with `nvpmodel -q`; whether jetson_clocks is on cannot be
# read without root, so set JETSON_CLOCKS=on|off (default: unknown). Every figure must state both.
# Environment: PYTHON (default python3).
set -euo pipefail

if [ $# -lt 1 ] || [ "$1" = "-h" ] || [ "$1" = "--help" ]; then
    sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'
    [ $# -ge 1 ] && exit 0
    exit 2
fi

PYTHON=${PYTHON:-python3}
# Run a clipxai module as a command, importing nothing from the working directory (python -m
# and python -c put it first on sys.path, so a planted click.py or numpy.py there would run).
clipxai_run() {
    "$PYTHON" -c 'import runpy, sys
sys.path[:] = [p for p in sys.path if p not in ("", ".")]
runpy.run_module(sys.argv.pop(1), run_name="__main__", alter_sys=True)' "$@"
}
MODE="n/a (not a Jetson)"
if command -v nvpmodel > /dev/null 2>&1; then
    NV=$(nvpmodel -q 2> /dev/null | sed -n 's/^NV Power Mode: *//p' | head -n 1 || true)
    MODE="nvpmodel ${NV:-unknown}, jetson_clocks ${JETSON_CLOCKS:-unknown}"
fi
echo "power mode: $MODE"
clipxai_run clipxai.cli.latency "$@" --power-mode "$MODE"
