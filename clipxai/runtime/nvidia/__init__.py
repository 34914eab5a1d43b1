"""NVIDIA GPUs and Jetson: IO binding, the TensorRT engine cache, trtexec arguments, the native
TensorRT backend and GPU identification. UNTESTED on a GPU (see docs/deployment.md)."""
