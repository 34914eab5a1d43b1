#!/usr/bin/env bash
# Stage what the GPU machine lacks for scripts/gpu/run.sh (docs/deployment.md, "The GPU check"):
#
#   scripts/gpu/stage.sh               download / build the wheels, split them, print the device calls
#   scripts/gpu/stage.sh --no-download only split what is in $STAGE/wheels and print the calls
#
# The GPU machine (Python 3.12, x86-64, no network) has torch, onnx and onnxruntime (CPU) but not
# onnxruntime-gpu, open_clip, onnx-graphsurgeon, sam2 and a few small ones. They go into $STAGE
# (default .gpu-stage/, git-ignored; never commit wheels): binary wheels by `pip download` for that
# platform, the source-only ones (sam2, antlr4, iopath: pure Python) built here with `pip wheel`.
# Everything is tarred, sha256-summed and split into parts of $PART_SIZE (55M: one part and the
# working tree fit the device call's 64 MiB carry limit); each device call carries one part, which
# scripts/gpu/receive.sh checks and keeps on the machine, and the last call runs run.sh.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
STAGE="${STAGE:-$ROOT/.gpu-stage}"
PART_SIZE="${PART_SIZE:-55M}"
PYTHON="${PYTHON:-$([[ -x "$ROOT/.venv/bin/python" ]] && echo "$ROOT/.venv/bin/python" || echo python3)}"
# Binary or universal wheels on PyPI, for the GPU machine's platform.
DOWNLOAD=(onnxruntime-gpu==1.31.1 open_clip_torch==3.3.0 ftfy==6.3.1 wcwidth==0.9.5 platformdirs==4.14.9
          onnx_graphsurgeon==0.6.1 hydra-core==1.3.2 omegaconf==2.3.0)
# Published as source only; pure Python, so a wheel built here installs there (sam2 needs torch to build).
BUILD=(sam2==1.1.0 antlr4-python3-runtime==4.9.3 iopath==0.1.10)
ORT_WHEEL="$(sed -n 's/^ORT_WHEEL="\(.*\)"$/\1/p' "$ROOT/scripts/gpu/run.sh")"
ORT_SHA256="$(sed -n 's/^ORT_SHA256="\(.*\)"$/\1/p' "$ROOT/scripts/gpu/run.sh")"

download() {
    mkdir -p "$STAGE/wheels"
    "$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d "$STAGE/wheels" "${DOWNLOAD[@]}"
    SAM2_BUILD_CUDA=0 "$PYTHON" -m pip wheel -q --no-deps --no-build-isolation -w "$STAGE/wheels" "${BUILD[@]}"
}

check_ort() {
    if [[ -f "$STAGE/wheels/$ORT_WHEEL" ]]; then
        echo "$ORT_SHA256  $STAGE/wheels/$ORT_WHEEL" | sha256sum -c --quiet - ||
            { echo "stage.sh: $ORT_WHEEL is not the one run.sh pins (ORT_SHA256)" >&2; exit 1; }
    else
        echo "stage.sh: warning: no $ORT_WHEEL in $STAGE/wheels (run.sh's install step needs it)" >&2
    fi
}

split_parts() {
    (cd "$STAGE/wheels" && sha256sum -- *.whl > SHA256SUMS)
    rm -rf "$STAGE/parts" && mkdir -p "$STAGE/parts"
    tar -cf "$STAGE/wheels.tar" -C "$STAGE" wheels
    split -b "$PART_SIZE" -d -a 2 "$STAGE/wheels.tar" "$STAGE/parts/wheels.tar.part-"
    (cd "$STAGE/parts" && sha256sum -- wheels.tar.part-* > SHA256SUMS)
    (cd "$STAGE" && sha256sum wheels.tar) >> "$STAGE/parts/SHA256SUMS"
    rm "$STAGE/wheels.tar"
}

print_calls() {
    local rel="${STAGE#"$ROOT"/}" parts=() n i part command timeout
    mapfile -t parts < <(cd "$STAGE/parts" && ls wheels.tar.part-*)
    n=${#parts[@]}
    echo "wheels ($(du -ch "$STAGE"/wheels/*.whl | tail -n 1 | cut -f1) in all):"
    (cd "$STAGE/wheels" && du -h -- *.whl)
    echo
    echo "$n part(s) of at most $PART_SIZE in $rel/parts. Device calls, one after the other, each within the"
    echo "machine's 30 s warm window (a machine given back loses the parts: start again from call 1):"
    for ((i = 0; i < n; i++)); do
        part="$rel/parts/${parts[i]}"
        command="bash scripts/gpu/receive.sh $part"
        timeout=120
        if ((i == n - 1)); then
            command="$command && scripts/gpu/run.sh"
            timeout=600
        fi
        printf '%d. run(carry=["%s", "%s/parts/SHA256SUMS"], timeout_s=%d, command="%s")\n' \
            $((i + 1)) "$part" "$rel" "$timeout" "$command"
    done
    echo "Then give_back. Results: the call's files (summary.md first); see docs/deployment.md."
}

if [[ "${1:-}" != "--no-download" ]]; then
    download
fi
check_ort
split_parts
print_calls
