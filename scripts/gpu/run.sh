#!/usr/bin/env bash
# The GPU check: one call on a lent GPU machine (docs/deployment.md, "The GPU check"). NEVER RUN ON A GPU YET.
#
#   scripts/gpu/run.sh             on the GPU machine, after scripts/gpu/stage.sh's calls brought the wheels
#   scripts/gpu/run.sh --dry-run   here: every step that needs no GPU, provider cpu, tiny models (GPU_CHECK_DRY_RUN=1 too)
# Settings (environment): OUT (default out/gpu-check), WORK (bundles), WHEELS, SITE, PYTHON, BACKBONE, SIZES,
# BATCHES, RUNS, WARMUP, SAM_MODEL ("" = none), GPU_CHECK_STEPS (comma-separated subset; default all),
# BUDGET_SCALE (budgets times this; 3 in a dry run), GPU_CHECK_PLUGINS (modules registering tiny models).
#
# Writes everything under $OUT as it goes (a run killed at its limit still returns what it had), and
# exactly these 8 files, the most a device call brings back:
#   run.log      every step's output, between "=== START step" and "=== END step" lines with the time
#   steps.jsonl  one JSON line per step: name, budget_s, seconds, rc, status (ok, failed, timed out, skipped)
#   summary.md   each step's result as markdown: environment, exports, parity, latency, mask model, steps
#   env.json  pytest.txt  parity.json  latency.json  sam.json   the steps' own results
#
# Steps, in the order of their value, each under its own `timeout` (budget in seconds on the GPU machine,
# 480 s = 8 min in all, so a 600 s call has room for the start and one rerun of a step fits the 15 min):
#   env      15   nvidia-smi, Python, torch, onnxruntime and its providers, missing modules
#   install  45   the carried wheels (sha256 checked first) into $SITE with pip --no-deps --target; the loader
#                 pointed at the nvidia/*/lib folders of that Python's site-packages; environment again
#   export  120   ViT-B/16 at 224 and 448, fp32 and fp16 (--pretrained random), SAM 2.1 Hiera-tiny (random), in parallel
#   pytest   60   pytest tests/test_gpu.py -m gpu, where the gpu tests live (TensorRT tests skip: not carried)
#   parity   60   CUDA against the PyTorch reference on the GPU: fp32 <= 1e-4; fp16 fidelity figures
#   latency 140   PyTorch fp32 / autocast fp16 vs clipxai fp32 / fp16 on CUDA, IO binding or not, 224/448, batch 1/8
#   sam      40   SAM 2.1 Hiera-tiny encoder and decoder on CUDA, PyTorch predictor beside them
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
SELF="$ROOT/scripts/gpu/run.sh"
ORT_WHEEL="onnxruntime_gpu-1.31.1-cp312-cp312-manylinux_2_28_x86_64.whl"
ORT_SHA256="05d548956197b9d01f59b625de740e0d6be3593f874e241a12dc0362650ecdf7"
STEPS=(env:15 install:45 export:120 pytest:60 parity:60 latency:140 sam:40)

if [[ "${1:-}" == "--dry-run" ]]; then
    export GPU_CHECK_DRY_RUN=1
    shift
fi
if [[ "${GPU_CHECK_DRY_RUN:-0}" == "1" ]]; then
    # Tiny models from the tests, the CPU provider, few runs: the script's logic, not GPU figures.
    : "${PYTHON:=$([[ -x "$ROOT/.venv/bin/python" ]] && echo "$ROOT/.venv/bin/python" || echo python3)}"
    : "${GPU_CHECK_PLUGINS:=tests/tiny.py,tests/tiny_sam.py}"
    : "${BACKBONE:=Tiny-ViT/8}" "${SIZES:=32 64}" "${SAM_MODEL=tiny-sam2}" "${BATCHES:=1 2}"
    : "${RUNS:=3}" "${WARMUP:=1}" "${DEVICE:=cpu}" "${PROVIDER:=cpu}" "${PARITY_PROVIDERS:=cpu}"
    : "${BUDGET_SCALE:=3}"  # a shared 2-core CPU, not a 16-core GPU machine
else
    : "${PYTHON:=python3}" "${GPU_CHECK_PLUGINS:=}"
    : "${BACKBONE:=ViT-B/16}" "${SIZES:=224 448}" "${SAM_MODEL=sam2.1-hiera-tiny}" "${BATCHES:=1 8}"
    : "${RUNS:=20}" "${WARMUP:=5}" "${DEVICE:=cuda}" "${PROVIDER:=cuda}" "${PARITY_PROVIDERS:=cuda|cuda, TF32 off}"
fi
: "${OUT:=$ROOT/out/gpu-check}" "${WORK:=/tmp/clipxai-gpu-check}" "${WHEELS:=/var/tmp/clipxai-gpu/wheels}"
: "${SITE:=/tmp/clipxai-gpu-site}" "${BUDGET_SCALE:=1}" "${GPU_CHECK_STEPS:=all}"
CLASSES="rocket,sky,smoke,tree,ground"
export PYTHON GPU_CHECK_PLUGINS BACKBONE SIZES SAM_MODEL BATCHES RUNS WARMUP DEVICE PROVIDER PARITY_PROVIDERS
export OUT WORK WHEELS SITE BUDGET_SCALE GPU_CHECK_STEPS PYTHONUNBUFFERED=1
read -r -a SIZE_LIST <<< "$SIZES"
read -r -a BATCH_LIST <<< "$BATCHES"
LARGEST="${SIZE_LIST[${#SIZE_LIST[@]}-1]}"

log() { printf '%s %s\n' "$(date -u +%H:%M:%S)" "$*" >> "$OUT/run.log"; }
gpu_py() { "$PYTHON" "$ROOT/scripts/gpu/$1" "${@:2}"; }

# ---------------------------------------------------------------- paths (the installed wheels, their CUDA libraries)

use_site() {  # in each step's process: the repository (clipxai is not installed there), then the wheels
    export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
    [[ -d "$SITE" ]] || return 0
    export PYTHONPATH="$SITE:$PYTHONPATH"
    local libs="" dir site
    for site in "$SITE" $("$PYTHON" -c 'import site; print(" ".join(site.getsitepackages()))' 2>/dev/null); do
        [[ -d "$site/nvidia" ]] || continue
        while IFS= read -r dir; do libs="$libs${libs:+:}$dir"; done < <(find "$site/nvidia" -type d -name lib | sort)
    done
    export LD_LIBRARY_PATH="$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
}

# ---------------------------------------------------------------- steps (each runs as `run.sh --step NAME` under timeout)

step_env() {
    if command -v nvidia-smi > /dev/null; then
        nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv || true
    else
        echo "nvidia-smi: not on this machine"
    fi
    gpu_py env.py --out "$OUT/env.json" --md "$OUT/summary.md"
}

step_install() {
    if [[ "${GPU_CHECK_DRY_RUN:-0}" == "1" ]]; then
        echo "dry run: nothing to install (this machine's environment is used as it is)"
        return 0
    fi
    [[ -f "$WHEELS/$ORT_WHEEL" ]] || { echo "no $WHEELS/$ORT_WHEEL: run scripts/gpu/stage.sh's calls first"; return 1; }
    echo "$ORT_SHA256  $WHEELS/$ORT_WHEEL" | sha256sum -c -
    (cd "$WHEELS" && sha256sum -c SHA256SUMS)
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
        "$WHEELS"/*.whl
    use_site
    echo "PYTHONPATH=$PYTHONPATH"
    echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
    gpu_py env.py --out "$OUT/env.json" --md "$OUT/summary.md"
}

export_one() {  # NAME BUDGET COMMAND...: one export in the background's log, its status in $WORK/NAME.status
    local name=$1 budget=$2 t0=$SECONDS rc=0
    shift 2
    timeout -k 5 "$budget" "$@" > "$WORK/$name.log" 2>&1 || rc=$?
    echo "$rc $((SECONDS - t0))" > "$WORK/$name.status"
}

step_export() {
    mkdir -p "$WORK"
    local threads=$(( $(nproc) / 5 > 0 ? $(nproc) / 5 : 1 )) size prec name names=()
    export OMP_NUM_THREADS=$threads
    for size in "${SIZE_LIST[@]}"; do
        for prec in fp32 fp16; do
            name="clip-$size-$prec"
            names+=("$name")
            export_one "$name" $((110 * BUDGET_SCALE)) "$PYTHON" "$ROOT/scripts/gpu/common.py" export \
                --backbone "$BACKBONE" --pretrained random --classes "$CLASSES" --image-size "$size" --precision "$prec" \
                -o "$WORK/$name" --overwrite --no-verify --force &
        done
    done
    [[ -z "$SAM_MODEL" ]] || names+=(sam)
    # shellcheck disable=SC2016  # expanded by that bash, from the exported variables
    [[ -z "$SAM_MODEL" ]] || export_one sam $((110 * BUDGET_SCALE)) bash -c '"$PYTHON" "$1/sam.py" \
        --save-checkpoint "$SAM_MODEL" --checkpoint "$WORK/sam.pt" && "$PYTHON" "$1/common.py" export-sam \
        --model "$SAM_MODEL" --checkpoint "$WORK/sam.pt" -o "$WORK/sam" --overwrite --no-verify' _ "$ROOT/scripts/gpu" &
    wait
    local failed=0 rc secs
    {
        echo "## Exports ($BACKBONE, random weights; $OMP_NUM_THREADS threads each, in parallel)"
        echo
        echo "| bundle | rc | seconds | MB | fidelity (manifest) |"
        echo "|---|---:|---:|---:|---|"
        for name in "${names[@]}"; do
            read -r rc secs < "$WORK/$name.status"
            [[ "$rc" == 0 ]] || failed=1
            echo "| $name | $rc | $secs | $(du -sm "$WORK/$name" 2>/dev/null | cut -f1) | $(fidelity "$WORK/$name") |"
        done
        echo
    } >> "$OUT/summary.md"
    for name in "${names[@]}"; do echo "--- $name"; tail -n 15 "$WORK/$name.log"; done
    return "$failed"
}

fidelity() {  # the fidelity record of a bundle's manifest, one line
    [[ -f "$1/manifest.json" ]] || { echo "—"; return; }
    "$PYTHON" -c 'import json, sys; f = json.load(open(sys.argv[1])).get("fidelity")
print(json.dumps({k: f[k] for k in ("passed", "correlation", "pixel_agreement", "mean_iou") if k in f}) if f else "—")' \
        "$1/manifest.json"
}

step_pytest() {
    cd "$ROOT"
    "$PYTHON" -m pytest tests/test_gpu.py -m gpu -rA -q -p no:cacheprovider 2>&1 | tee "$OUT/pytest.txt"
}

step_parity() {
    local providers=()
    IFS='|' read -r -a providers <<< "$PARITY_PROVIDERS"
    gpu_py parity.py --bundles "$WORK" --sizes "${SIZE_LIST[@]}" --backbone "$BACKBONE" --pretrained random \
        --device "$DEVICE" --providers "${providers[@]}" --out "$OUT/parity.json" --md "$OUT/summary.md"
}

step_latency() {
    gpu_py latency.py --bundles "$WORK" --sizes "${SIZE_LIST[@]}" --batches "${BATCH_LIST[@]}" --runs "$RUNS" \
        --warmup "$WARMUP" --backbone "$BACKBONE" --pretrained random --device "$DEVICE" --provider "$PROVIDER" \
        --out "$OUT/latency.json" --md "$OUT/summary.md"
}

step_sam() {
    [[ -n "$SAM_MODEL" ]] || { echo "SAM_MODEL is empty: no mask model"; return 0; }
    gpu_py sam.py --bundle "$WORK/sam" --checkpoint "$WORK/sam.pt" --clip "$WORK/clip-$LARGEST-fp32" --runs "$RUNS" \
        --warmup "$WARMUP" --device "$DEVICE" --provider "$PROVIDER" --out "$OUT/sam.json" --md "$OUT/summary.md"
}

# ---------------------------------------------------------------- the driver

run_step() {  # NAME BUDGET: under timeout, logged, one line in steps.jsonl
    local name=$1 budget=$(($2 * BUDGET_SCALE)) t0=$SECONDS rc=0 status=ok
    log "=== START $name (budget ${budget} s)"
    if [[ "$GPU_CHECK_STEPS" != all && ",$GPU_CHECK_STEPS," != *",$name,"* ]]; then
        status=skipped
    else
        timeout -k 10 "$budget" "$SELF" --step "$name" >> "$OUT/run.log" 2>&1 || rc=$?
    fi
    case $rc in 0) ;; 124 | 137) status="timed out" ;; *) status=failed ;; esac
    log "=== END $name: $status (rc $rc, $((SECONDS - t0)) s)"
    printf '{"step": "%s", "budget_s": %d, "seconds": %d, "rc": %d, "status": "%s"}\n' \
        "$name" "$budget" $((SECONDS - t0)) "$rc" "$status" >> "$OUT/steps.jsonl"
    echo "$name: $status ($((SECONDS - t0)) s of $budget)"
}

main() {
    mkdir -p "$OUT"
    : > "$OUT/run.log"
    : > "$OUT/steps.jsonl"
    printf '# GPU check%s\n\n' "$([[ "${GPU_CHECK_DRY_RUN:-0}" == 1 ]] && echo ' (DRY RUN on the CPU: not GPU figures)')" \
        > "$OUT/summary.md"
    log "run.sh: dry_run=${GPU_CHECK_DRY_RUN:-0} python=$PYTHON backbone=$BACKBONE sizes=$SIZES sam=$SAM_MODEL out=$OUT"
    local entry
    for entry in "${STEPS[@]}"; do
        run_step "${entry%%:*}" "${entry##*:}"
    done
    {
        echo "## Steps"
        echo
        echo "| step | status | seconds | budget s |"
        echo "|---|---|---:|---:|"
        "$PYTHON" -c 'import json, sys
for line in open(sys.argv[1]):
    print("| %(step)s | %(status)s (rc %(rc)s) | %(seconds)s | %(budget_s)s |" % json.loads(line))' "$OUT/steps.jsonl"
    } >> "$OUT/summary.md"
    echo "results: $OUT (summary.md)"
}

if [[ "${1:-}" == "--step" ]]; then
    use_site
    "step_$2"
else
    main
fi
