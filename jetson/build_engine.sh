#!/usr/bin/env bash
# Build a TensorRT engine for a clipxai bundle with trtexec.
#
#   jetson/build_engine.sh BUNDLE [--precision fp16] [--min-batch N] [--opt-batch N] [--max-batch N]
#   (a CLIP bundle: one engine; a mask-model bundle from clipxai-export-sam: its encoder and decoder)
#                                 [--fp32-layers auto|none|NAME,...] [--engine-root DIR] [-- TRTEXEC ARGS...]
#
# Shapes and precision come from the bundle's manifest (python -m clipxai.cli.trt_args).
# fp16/int8 engines keep LayerNorm, softmax and the normalisation layers in fp32
# (--precisionConstraints=obey --layerPrecisions=...:fp32) unless --fp32-layers none.
# The engine goes to the user cache, ~/.cache/clipxai/engines/<graph digest>/<key>/model.engine
# (key: builder, TensorRT version, GPU, precision, graph digest; CLIPXAI_CACHE_DIR moves the
# cache, --engine-root names another root), next to key.json, trtexec.args, build.log and
# engine.json (the engine's sha256: the runtime loads no engine that does not match it).
# Environment: PYTHON (default python3), TRTEXEC (default: trtexec on PATH, else
# /usr/src/tensorrt/bin/trtexec as installed by JetPack).
set -euo pipefail

usage() {
    sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'
}

if [ $# -lt 1 ]; then
    usage >&2
    exit 2
fi
if [ "$1" = "-h" ] || [ "$1" = "--help" ]; then
    usage
    exit 0
fi

BUNDLE=$1
shift
OPTS=()
EXTRA=()
while [ $# -gt 0 ]; do
    if [ "$1" = "--" ]; then
        shift
        EXTRA=("$@")
        break
    fi
    OPTS+=("$1")
    shift
done

PYTHON=${PYTHON:-python3}
# Run a clipxai module as a command, importing nothing from the working directory (python -m
# and python -c put it first on sys.path, so a planted click.py or numpy.py there would run).
clipxai_run() {
    "$PYTHON" -c 'import runpy, sys
sys.path[:] = [p for p in sys.path if p not in ("", ".")]
runpy.run_module(sys.argv.pop(1), run_name="__main__", alter_sys=True)' "$@"
}
if [ -z "${TRTEXEC:-}" ]; then
    if command -v trtexec > /dev/null 2>&1; then
        TRTEXEC=$(command -v trtexec)
    else
        TRTEXEC=/usr/src/tensorrt/bin/trtexec
    fi
fi
if [ ! -x "$TRTEXEC" ]; then
    echo "error: trtexec not found (PATH, /usr/src/tensorrt/bin/trtexec); install TensorRT or set TRTEXEC" >&2
    exit 1
fi
if [ ! -d "$BUNDLE" ]; then
    echo "error: $BUNDLE is not a bundle directory (export one with clipxai-export)" >&2
    exit 1
fi

PARTIAL=""
cleanup() {
    [ -z "$PARTIAL" ] || rm -f "$PARTIAL"
}
trap cleanup EXIT

# One engine per graph: "model" for a CLIP bundle, "encoder" and "decoder" for a mask model (SAM).
build_graph() {
    local GRAPH=$1 ENGINE_DIR ARGS_FILE LOG ENGINE BUILT_WITH KEY_VERSION
    local -a TRT_ARGS
    # The key's folder (emptied first if it holds another key's files); fails without TensorRT or a GPU.
    ENGINE_DIR=$(clipxai_run clipxai.cli.trt_args "$BUNDLE" "${OPTS[@]}" --graph "$GRAPH" --emit engine-dir)
    ARGS_FILE="$ENGINE_DIR/trtexec.args"
    LOG="$ENGINE_DIR/build.log"
    PARTIAL="$ENGINE_DIR/model.engine.partial"
    ENGINE="$ENGINE_DIR/model.engine"

    clipxai_run clipxai.cli.trt_args "$BUNDLE" "${OPTS[@]}" --graph "$GRAPH" --emit args > "$ARGS_FILE"
    mapfile -t TRT_ARGS < "$ARGS_FILE"
    if [ "${#TRT_ARGS[@]}" -eq 0 ]; then
        echo "error: no trtexec arguments were produced for $BUNDLE ($GRAPH)" >&2
        exit 1
    fi

    echo "building $ENGINE ($GRAPH)"
    echo "  with $TRTEXEC (log: $LOG)"
    rm -f "$ENGINE" "$ENGINE_DIR/engine.json"
    if ! "$TRTEXEC" "${TRT_ARGS[@]}" "--saveEngine=$PARTIAL" "${EXTRA[@]}" > "$LOG" 2>&1; then
        tail -n 30 "$LOG" >&2
        echo "error: trtexec failed; full log: $LOG" >&2
        exit 1
    fi
    if [ ! -s "$PARTIAL" ]; then
        echo "error: trtexec exited 0 but wrote no engine; see $LOG" >&2
        exit 1
    fi

    # The engine must come from the TensorRT the key names (trtexec and the Python module could differ).
    BUILT_WITH=$(sed -n 's/.*TensorRT version: *\([0-9][0-9.]*\).*/\1/p' "$LOG" | head -n 1)
    KEY_VERSION=$("$PYTHON" -c 'import json, sys; print(json.load(open(sys.argv[1]))["trt_version"])' \
        "$ENGINE_DIR/key.json")
    case "$BUILT_WITH" in
        *.*)
            if [ "$BUILT_WITH" != "$KEY_VERSION" ]; then
                echo "error: trtexec is TensorRT $BUILT_WITH but Python sees TensorRT $KEY_VERSION;" \
                    "use one TensorRT (set TRTEXEC or PYTHON)" >&2
                exit 1
            fi
            ;;
        *)
            echo "warning: could not read trtexec's TensorRT version from $LOG; assuming $KEY_VERSION" >&2
            ;;
    esac

    mv -f "$PARTIAL" "$ENGINE"
    clipxai_run clipxai.cli.trt_args "$BUNDLE" "${OPTS[@]}" --graph "$GRAPH" --emit record
}

GRAPHS=$(clipxai_run clipxai.cli.trt_args "$BUNDLE" --emit graphs)
for GRAPH in $GRAPHS; do
    build_graph "$GRAPH"
done
