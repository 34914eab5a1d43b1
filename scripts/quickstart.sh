#!/usr/bin/env bash
# Quickstart on a fresh machine: set up .venv, export ViT-B/16 with OpenAI's weights
# (or the checkpoint file given as $1), segment examples/rocket.jpg into heatmap
# overlays and a segmentation, and say where they are.
# Without network the weights cannot be downloaded: the script says so and runs
# the whole pipeline with RANDOM weights, labelled as such on every output.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${CLIPXAI_VENV:-.venv}"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
echo "• installing clipxai[export] into $VENV (PyTorch is large; the first time takes a few minutes)"
LOG="$VENV/pip-install.log"
"$VENV/bin/python" -m pip install --quiet --upgrade pip > "$LOG" 2>&1 || { cat "$LOG"; exit 1; }
"$VENV/bin/python" -m pip install --quiet -c constraints.txt -e ".[export]" >> "$LOG" 2>&1 || { cat "$LOG"; exit 1; }

WEIGHTS="${1:-openai}"
CLASSES="rocket,sky,smoke,tree,ground,building"
OUT="quickstart"
status=0
"$VENV/bin/clipxai" export --backbone ViT-B/16 --pretrained "$WEIGHTS" --classes "$CLASSES" \
    --out "$OUT/vitb16-224" --overwrite || status=$?
if [ "$status" -eq 3 ]; then
    echo
    echo "The $WEIGHTS weights could not be downloaded (no network?). To use real weights, download"
    echo "ViT-B-16.pt elsewhere and run: ./scripts/quickstart.sh /path/to/ViT-B-16.pt"
    echo "Running the whole pipeline now with RANDOM weights: the pictures show the mechanics, not real maps."
    echo
    "$VENV/bin/clipxai" export --backbone ViT-B/16 --pretrained random --classes "$CLASSES" \
        --out "$OUT/vitb16-224" --overwrite
elif [ "$status" -ne 0 ]; then
    exit "$status"
fi
"$VENV/bin/clipxai" segment "$OUT/vitb16-224" examples/rocket.jpg --out "$OUT/results"
echo
echo "Done. Heatmap overlays: $OUT/results/rocket_heatmap_<class>.png"
echo "      segmentation:     $OUT/results/rocket_segmentation.png"
echo "      scores, points:   $OUT/results/rocket.json"
