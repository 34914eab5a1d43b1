"""What the engine-cache key needs to know about this machine: TensorRT version and GPU.

Torch-free and dependency-free: the TensorRT version comes from the ``tensorrt``
Python module when installed, else from ``getInferLibVersion()`` of the
libnvinfer shared library; the GPU name and compute capability come from the
CUDA driver library (libcuda) through ctypes, which exists on desktop GPUs and
on Jetson alike. Every failure is a ``ClipxaiError`` saying what to install.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

from clipxai.errors import ClipxaiError

_NVINFER_SONAMES = ("libnvinfer.so.10", "libnvinfer.so.8", "libnvinfer.so")
_CUDA_SONAMES = ("libcuda.so.1", "libcuda.so")
_CU_ATTR_CC_MAJOR, _CU_ATTR_CC_MINOR = 75, 76


@dataclass(frozen=True)
class Gpu:
    """name: as the CUDA driver reports it (e.g. "Orin", "NVIDIA H100 80GB HBM3"); cc: "8.7"."""

    name: str
    compute_capability: str

    @property
    def label(self) -> str:
        return f"{self.name} sm{self.compute_capability.replace('.', '')}"


def decode_trt_version(code: int) -> str:
    """getInferLibVersion() -> "M.m.p": TensorRT 10+ encodes M*10000+m*100+p, 8.x encodes M*1000+m*100+p."""
    if code >= 100000:
        return f"{code // 10000}.{(code // 100) % 100}.{code % 100}"
    return f"{code // 1000}.{(code // 100) % 10}.{code % 100}"


def tensorrt_version() -> str:
    """The TensorRT version this process would use (major.minor.patch)."""
    try:
        import tensorrt  # noqa: PLC0415 - optional, imported lazily
        return ".".join(str(tensorrt.__version__).split(".")[:3])
    except ImportError:
        pass
    for soname in _NVINFER_SONAMES:
        try:
            lib = ctypes.CDLL(soname)
        except OSError:
            continue
        lib.getInferLibVersion.restype = ctypes.c_int32
        return decode_trt_version(int(lib.getInferLibVersion()))
    raise ClipxaiError("TensorRT not found (no tensorrt Python module, no libnvinfer); install TensorRT "
                       "(JetPack ships it) or do not use the TensorRT provider/backend")


def gpu(device_id: int = 0) -> Gpu:
    """Name and compute capability of CUDA device ``device_id``, from the CUDA driver."""
    lib = None
    for soname in _CUDA_SONAMES:
        try:
            lib = ctypes.CDLL(soname)
            break
        except OSError:
            continue
    if lib is None:
        raise ClipxaiError("no CUDA driver (libcuda) on this machine; the TensorRT/CUDA paths need an NVIDIA GPU")

    def check(status: int, what: str) -> None:
        if status != 0:
            raise ClipxaiError(f"CUDA driver call {what} failed with status {status}; check the NVIDIA driver "
                               f"and that device {device_id} exists")

    check(lib.cuInit(0), "cuInit")
    dev = ctypes.c_int()
    check(lib.cuDeviceGet(ctypes.byref(dev), int(device_id)), "cuDeviceGet")
    name = ctypes.create_string_buffer(256)
    check(lib.cuDeviceGetName(name, 256, dev), "cuDeviceGetName")
    major, minor = ctypes.c_int(), ctypes.c_int()
    check(lib.cuDeviceGetAttribute(ctypes.byref(major), _CU_ATTR_CC_MAJOR, dev), "cuDeviceGetAttribute")
    check(lib.cuDeviceGetAttribute(ctypes.byref(minor), _CU_ATTR_CC_MINOR, dev), "cuDeviceGetAttribute")
    return Gpu(name.value.decode("utf-8", "replace").strip(), f"{major.value}.{minor.value}")
