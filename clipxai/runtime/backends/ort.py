"""onnxruntime with a provider no other backend claims: a plain session (the base of cpu.py and nvidia.py)."""

from __future__ import annotations

from clipxai.runtime.providers import SessionOptions, load_graph, session_options, started


class OnnxruntimeBackend:
    """A plain onnxruntime session with the resolved providers, checked to have started the first."""

    name = "onnxruntime"

    def open(self, bundle, graph_file: str, options, resolved: list):
        so = session_options(SessionOptions(threads=options.threads))
        return started(load_graph(bundle.path / graph_file, so, resolved), resolved)
