#!/usr/bin/env bash
# Install the clipxai runtime (numpy, Pillow, click, onnxruntime-gpu; no torch) on a bare Jetson
# running JetPack 5.1.x (L4T R35) or 6.x (L4T R36), into a virtual environment.
#
#   jetson/setup.sh                      # run from a clipxai source checkout
#
# Environment:
#   VENV       where to create the environment (default: $HOME/clipxai-venv)
#   ORT_WHEEL  path or URL of an onnxruntime-gpu wheel built for this JetPack (Jetson Zoo,
#              https://elinux.org/Jetson_Zoo#ONNX_Runtime); required on JetPack 5
#   ORT_INDEX  pip index with Jetson onnxruntime-gpu wheels, used when ORT_WHEEL is unset
#              (default on L4T R36.4 / JetPack 6.1-6.2: https://pypi.jetson-ai-lab.io/jp6/cu126)
#   CUDA_PYTHON=0  skip cuda-python (only the native TensorRT backend needs it)
# UNTESTED: written for JetPack 5.1.x and 6.x but never run on a Jetson (none was available).
set -euo pipefail

die() {
    echo "error: $*" >&2
    exit 1
}

ROOT=$(cd "$(dirname "$0")/.." && pwd)
[ -f "$ROOT/pyproject.toml" ] || die "run this from a clipxai source checkout ($ROOT has no pyproject.toml)"
[ "$(uname -m)" = "aarch64" ] || die "this is $(uname -m), not a Jetson (aarch64)"
[ -r /etc/nv_tegra_release ] || die "no /etc/nv_tegra_release: not an L4T (JetPack) system"

RELEASE=$(sed -n 's/^# R\([0-9]*\) (release), REVISION: \([0-9.]*\).*/\1.\2/p' /etc/nv_tegra_release)
[ -n "$RELEASE" ] || die "cannot read the L4T release from /etc/nv_tegra_release"
echo "L4T R$RELEASE"
case "$RELEASE" in
    35.*)
        CUDA_MAJOR=11
        NUMPY_SPEC="numpy>=1.23,<1.25"   # Python 3.8 on JetPack 5
        [ -n "${ORT_WHEEL:-}" ] || die "JetPack 5: set ORT_WHEEL to a Jetson Zoo onnxruntime-gpu wheel for Python 3.8"
        ;;
    36.*)
        CUDA_MAJOR=12
        NUMPY_SPEC="numpy>=1.23,<2"      # the Jetson onnxruntime-gpu wheels are built against numpy 1.x
        case "$RELEASE" in
            36.4*) ORT_INDEX=${ORT_INDEX:-https://pypi.jetson-ai-lab.io/jp6/cu126} ;;
            *) [ -n "${ORT_WHEEL:-}${ORT_INDEX:-}" ] || die "L4T R$RELEASE (JetPack 6.0): set ORT_WHEEL or ORT_INDEX" ;;
        esac
        ;;
    *)
        die "L4T R$RELEASE is not JetPack 5.1.x or 6.x; see jetson/README.md"
        ;;
esac

if ! dpkg -s python3-libnvinfer > /dev/null 2>&1 || ! dpkg -s python3-venv > /dev/null 2>&1; then
    echo "installing python3-venv, python3-pip and TensorRT's Python API (python3-libnvinfer) with apt"
    sudo apt-get update
    sudo apt-get install -y --no-install-recommends python3-venv python3-pip python3-libnvinfer
fi

VENV=${VENV:-$HOME/clipxai-venv}
# system site packages: TensorRT's Python API comes from apt, not pip
python3 -m venv --system-site-packages "$VENV"
PY="$VENV/bin/python"
"$PY" -m pip install --upgrade pip
"$PY" -m pip install "$NUMPY_SPEC" "pillow>=9.1" "click>=8.1"
if [ -n "${ORT_WHEEL:-}" ]; then
    "$PY" -m pip install "$ORT_WHEEL"
else
    "$PY" -m pip install --index-url "$ORT_INDEX" onnxruntime-gpu
fi
# --no-deps: the plain "onnxruntime" requirement would pull the CPU-only wheel over onnxruntime-gpu
"$PY" -m pip install --no-deps "$ROOT"
if [ "${CUDA_PYTHON:-1}" != "0" ]; then
    "$PY" -m pip install "cuda-python==${CUDA_MAJOR}.*"
fi

"$PY" - << 'PYEOF'
import onnxruntime as ort
import clipxai.runtime  # noqa: F401
providers = ort.get_available_providers()
print("onnxruntime", ort.__version__, "providers:", ", ".join(providers))
missing = [p for p in ("TensorrtExecutionProvider", "CUDAExecutionProvider") if p not in providers]
if missing:
    raise SystemExit(f"error: this onnxruntime lacks {', '.join(missing)}; install the Jetson onnxruntime-gpu wheel")
PYEOF
echo "done: activate with  source $VENV/bin/activate"
