"""The CPU graph cache: filled on first load, used after, never foreign, never fatal."""

from __future__ import annotations

import json
import os
import logging

import numpy as np
import pytest

from clipxai.runtime import Predictor
from clipxai.runtime import graph_cache as gc
from tiny import TINY

CLASSES = ["rocket", "sky", "smoke"]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    from clipxai.export.pipeline import ExportConfig, export_bundle
    root = tmp_path_factory.mktemp("gc")
    return export_bundle(ExportConfig(output=root / "tiny", classes=CLASSES, backbone=TINY.name,
                                      pretrained="random", image_size=48)).path


def _entries(root):
    """Cache entries (hidden names are builders' locks and staging folders)."""
    graphs = root / "graphs"
    return sorted(p for p in graphs.iterdir() if not p.name.startswith(".")) if graphs.exists() else []


def _image():
    return np.random.default_rng(3).integers(0, 256, (37, 53, 3), dtype=np.uint8)


def test_first_load_fills_the_cache_and_later_loads_use_it(bundle, tmp_path, caplog):
    root = tmp_path / "cache"
    plain = Predictor.from_bundle(bundle, providers="cpu", graph_cache=False).predict(_image())
    assert not root.exists()
    caplog.set_level(logging.INFO, logger="clipxai")
    first = Predictor.from_bundle(bundle, providers="cpu", cache_dir=str(root)).predict(_image())
    assert "cached the optimized graph" in caplog.text
    (entry,) = _entries(root)
    done = json.loads((entry / gc.DONE_FILE).read_text())
    assert done["key"]["model_sha256"] == json.loads((bundle / "manifest.json").read_text())["files"]["model.onnx"]["sha256"]
    assert (entry / gc.DATA_FILE).stat().st_size > 0
    caplog.clear()
    second = Predictor.from_bundle(bundle, providers="cpu", cache_dir=str(root)).predict(_image())
    assert "loaded the optimized graph from" in caplog.text
    assert _entries(root) == [entry]
    # The cached graph has its attention fused (test_attention_fusion.py): equal to the bundle's
    # graph within float rounding, and the same bits on every load.
    for name in ("similarity", "heatmaps_grid", "scores"):
        assert np.array_equal(getattr(first, name), getattr(second, name))
        assert np.abs(getattr(first, name) - getattr(plain, name)).max() <= 1e-5


def test_damaged_entries_are_rebuilt(bundle, tmp_path, caplog):
    root = tmp_path / "cache"
    want = Predictor.from_bundle(bundle, providers="cpu", graph_cache=False).predict(_image())
    Predictor.from_bundle(bundle, providers="cpu", cache_dir=str(root))
    (entry,) = _entries(root)
    # A truncated data file (a crash mid-copy, a full disk): the size check rejects it.
    data = entry / gc.DATA_FILE
    data.write_bytes(data.read_bytes()[:100])
    p = Predictor.from_bundle(bundle, providers="cpu", cache_dir=str(root)).predict(_image())
    assert np.abs(p.heatmaps_grid - want.heatmaps_grid).max() <= 1e-5  # fused attention: float rounding
    (entry,) = _entries(root)
    assert data.stat().st_size > 100
    # A garbled graph of the right size: onnxruntime refuses it, the entry is replaced.
    graph = entry / gc.GRAPH_FILE
    graph.write_bytes(b"\x00" * graph.stat().st_size)
    caplog.set_level(logging.WARNING, logger="clipxai")
    p = Predictor.from_bundle(bundle, providers="cpu", cache_dir=str(root)).predict(_image())
    assert "discarding an unreadable graph cache entry" in caplog.text
    assert np.abs(p.heatmaps_grid - want.heatmaps_grid).max() <= 1e-5  # fused attention: float rounding
    assert gc.lookup(root, json.loads((entry / gc.DONE_FILE).read_text())["key"]) is not None


def test_key_changes_with_runtime_and_cpu(monkeypatch):
    key = gc.cache_key("ab" * 32)
    monkeypatch.setattr(gc.ort, "__version__", "0.0.1")
    assert gc.cache_key("ab" * 32) != key
    monkeypatch.undo()
    monkeypatch.setattr(gc, "cpu_fingerprint", lambda: "other cpu")
    other = gc.cache_key("ab" * 32)
    assert other != key and gc.entry_dir(gc.Path("/c"), other) != gc.entry_dir(gc.Path("/c"), key)
    assert gc.cache_key("cd" * 32) != key


def test_foreign_entry_is_not_used(bundle, tmp_path, monkeypatch):
    root = tmp_path / "cache"
    Predictor.from_bundle(bundle, providers="cpu", cache_dir=str(root))
    (entry,) = _entries(root)
    monkeypatch.setattr(gc, "cpu_fingerprint", lambda: "another machine")
    Predictor.from_bundle(bundle, providers="cpu", cache_dir=str(root))
    assert len(_entries(root)) == 2  # a new entry for the new key, the old one untouched


def test_unwritable_cache_and_env_switch(bundle, tmp_path, monkeypatch, caplog):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    caplog.set_level(logging.WARNING, logger="clipxai")
    p = Predictor.from_bundle(bundle, providers="cpu", cache_dir=str(blocker / "cache"))
    assert "not writable" in caplog.text and p.predict(_image()).heatmaps.shape == (3, 37, 53)
    monkeypatch.setenv("CLIPXAI_GRAPH_CACHE", "0")
    root = tmp_path / "off"
    Predictor.from_bundle(bundle, providers="cpu", cache_dir=str(root))
    assert not root.exists()


def test_background_mode_loads_at_once_and_fills_the_cache_in_another_process(bundle, tmp_path, caplog):
    root = tmp_path / "cache"
    plain = Predictor.from_bundle(bundle, providers="cpu", graph_cache=False).predict(_image())
    caplog.set_level(logging.INFO, logger="clipxai")
    p = Predictor.from_bundle(bundle, providers="cpu", cache_dir=str(root), graph_cache="background")
    assert "in the background (pid" in caplog.text
    assert "cached the optimized graph" not in caplog.text  # this process did not write it
    first = p.predict(_image())
    assert gc.wait_for_builds(timeout=120)
    (entry,) = _entries(root)
    assert json.loads((entry / gc.DONE_FILE).read_text())["key"]["model_sha256"] == \
        json.loads((bundle / "manifest.json").read_text())["files"]["model.onnx"]["sha256"]
    assert not list((root / "graphs").glob(".partial-*"))
    caplog.clear()
    second = Predictor.from_bundle(bundle, providers="cpu", cache_dir=str(root), graph_cache="background")
    assert "loaded the optimized graph from" in caplog.text and "in the background" not in caplog.text
    for q in (first, second.predict(_image())):
        assert np.abs(q.heatmaps_grid - plain.heatmaps_grid).max() <= 1e-5
        assert np.abs(q.scores - plain.scores).max() <= 1e-5


def test_one_builder_per_entry(bundle, tmp_path):
    root = tmp_path / "cache"
    sha = json.loads((bundle / "manifest.json").read_text())["files"]["model.onnx"]["sha256"]
    key = gc.cache_key(sha)
    lock = gc._lock_path(root, key)
    assert not gc.building(root, key) and not lock.exists()  # asking creates no file
    held = gc._try_lock(lock)  # another process is filling it
    assert held is not None and gc.building(root, key)
    assert gc.start_background_build(bundle / "model.onnx", sha, root) is None
    assert gc.build(bundle / "model.onnx", sha, root) is None and gc.lookup(root, key) is None
    held.close()  # a builder that crashed: its file stays, unlocked
    assert lock.exists() and not gc.building(root, key)
    entry = gc.build(bundle / "model.onnx", sha, root)
    assert entry is not None and gc.lookup(root, key) == entry / gc.GRAPH_FILE
    assert not lock.exists()  # the builder removes its lock file
    assert gc.build(bundle / "model.onnx", sha, root) == entry  # already there: nothing rebuilt


def test_builder_refuses_a_model_that_changed(bundle, tmp_path):
    root = tmp_path / "cache"
    assert gc.build(bundle / "model.onnx", "0" * 64, root) is None
    assert _entries(root) == []


def test_mode_words_and_a_bad_mode(bundle, monkeypatch):
    from clipxai.errors import ClipxaiError
    assert gc.resolve_mode(False) == "off" and gc.resolve_mode("sync") == "sync"
    for word, mode in (("0", "off"), ("off", "off"), ("1", "background"), ("background", "background"),
                       ("SYNC", "sync")):
        monkeypatch.setenv("CLIPXAI_GRAPH_CACHE", word)
        assert gc.resolve_mode(True) == mode
    monkeypatch.setenv("CLIPXAI_GRAPH_CACHE", "sometimes")
    with pytest.raises(ClipxaiError, match="unknown graph cache mode 'sometimes'; use one of background, sync, off"):
        Predictor.from_bundle(bundle, providers="cpu")


def test_warm_and_clear_commands(bundle, tmp_path):
    from click.testing import CliRunner
    from clipxai.runtime.cache_cli import main
    root = tmp_path / "cache"
    r = CliRunner().invoke(main, ["warm", str(bundle), "--cache-dir", str(root)])
    assert r.exit_code == 0, r.output
    assert r.output.startswith("graph cache ready: ") and len(_entries(root)) == 1
    assert "7 attention blocks fused" in r.output  # tests/tiny.py: 4 plain q-k blocks + 3 v-v
    r = CliRunner().invoke(main, ["warm", str(tmp_path / "nope"), "--cache-dir", str(root)])
    assert r.exit_code == 2
    assert len(r.output.strip().splitlines()) == 1 and r.output.startswith("error: ") and "not a bundle" in r.output
    r = CliRunner().invoke(main, ["clear", "--cache-dir", str(root)])
    assert r.exit_code == 0 and "removed" in r.output and not (root / "graphs").exists()


def test_a_frozen_app_fills_the_cache_while_loading(bundle, tmp_path, monkeypatch, caplog):
    import sys
    monkeypatch.setattr(sys, "frozen", True, raising=False)  # PyInstaller & co: no `python -m` to start
    assert not gc.background_supported()
    caplog.set_level(logging.INFO, logger="clipxai")
    root = tmp_path / "cache"
    Predictor.from_bundle(bundle, providers="cpu", cache_dir=str(root), graph_cache="background")
    assert "cached the optimized graph" in caplog.text and "in the background" not in caplog.text
    assert len(_entries(root)) == 1


def test_sessions_are_created_with_large_blocks_returned_to_the_system(bundle, monkeypatch):
    import platform
    from clipxai.runtime import memory
    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        assert memory._glibc() is not None  # the real mallopt is found where it exists
    calls = []

    class FakeLibc:
        def mallopt(self, param, value):
            calls.append((param, value))
            return 1

    monkeypatch.setattr(memory, "_glibc", lambda: FakeLibc())
    Predictor.from_bundle(bundle, providers="cpu", graph_cache=False)
    # 128 KB while onnxruntime loads and prepacks (freed weights are unmapped), then 32 MB, and a
    # 64 MB trim threshold so freed arrays are reused instead of faulted in again.
    assert calls == [(memory.M_MMAP_THRESHOLD, 128 * 1024), (memory.M_MMAP_THRESHOLD, 32 * 1024 * 1024),
                     (memory.M_TRIM_THRESHOLD, 64 * 1024 * 1024)]


def test_a_lock_on_a_removed_lock_file_does_not_count(tmp_path, monkeypatch):
    """A process that opened the lock file just before its holder removed it must not think it holds
    the lock (two builders at once): ``_try_lock`` locks the file that is at the path now."""
    import fcntl
    path = tmp_path / ".entry.lock"
    first = gc._try_lock(path)
    assert first is not None and gc._try_lock(path) is None  # held: a second taker gets nothing
    gc._unlock(path, first)
    assert not path.exists()

    calls = []

    class HolderFinishesMeanwhile:  # the holder removes the file between our open and our flock
        LOCK_EX, LOCK_NB = fcntl.LOCK_EX, fcntl.LOCK_NB

        @staticmethod
        def flock(f, op):
            calls.append(op)
            if len(calls) == 1:
                path.unlink()
            fcntl.flock(f, op)

    monkeypatch.setattr(gc, "fcntl", HolderFinishesMeanwhile)
    got = gc._try_lock(path)
    assert len(calls) == 2  # the first lock was on a removed file: dropped, and the new file locked
    assert got is not None and os.fstat(got.fileno()).st_ino == os.stat(path).st_ino
    gc._unlock(path, got)


def test_a_builder_waits_out_a_process_that_only_asks(bundle, tmp_path):
    """``building()`` takes the lock for a moment to ask; a builder trying at that moment must
    not give up (it did: the entry stayed empty until the next load)."""
    import fcntl
    import threading
    import time
    root = tmp_path / "cache"
    sha = json.loads((bundle / "manifest.json").read_text())["files"]["model.onnx"]["sha256"]
    lock = gc._lock_path(root, gc.cache_key(sha))
    lock.parent.mkdir(parents=True)
    asker = open(lock, "a")  # another open file: flock conflicts with it even inside this process
    fcntl.flock(asker, fcntl.LOCK_EX | fcntl.LOCK_NB)
    threading.Timer(0.1, asker.close).start()  # the asker lets go after 0.1 s (a real one: microseconds)
    t = time.monotonic()
    entry = gc.build(bundle / "model.onnx", sha, root)
    assert entry is not None and gc.lookup(root, gc.cache_key(sha)) == entry / gc.GRAPH_FILE
    assert time.monotonic() - t >= 0.1  # it did wait for the lock
