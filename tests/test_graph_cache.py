"""The CPU graph cache: filled on first load, used after, never foreign, never tampered, never fatal."""

from __future__ import annotations

import json
import logging
import os
import shutil
import stat
import subprocess
import sys
import time

import numpy as np
import pytest

from clipxai.common.files import sha256_file
from clipxai.runtime import Predictor, load_bundle
from clipxai.runtime.cpu import graph_cache as gc
from tiny import TINY

CLASSES = ["rocket", "sky", "smoke"]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    from clipxai.export.pipeline import ExportConfig, export_bundle
    root = tmp_path_factory.mktemp("gc")
    return export_bundle(ExportConfig(output=root / "tiny", classes=CLASSES, backbone=TINY.name,
                                      pretrained="random", image_size=48)).path


@pytest.fixture(scope="module")
def other_bundle(tmp_path_factory):
    """Another model (other classes): a cache entry of it must never serve the first bundle."""
    from clipxai.export.pipeline import ExportConfig, export_bundle
    root = tmp_path_factory.mktemp("gc2")
    return export_bundle(ExportConfig(output=root / "tiny", classes=["dog", "cat", "car"], backbone=TINY.name,
                                      pretrained="random", image_size=48)).path


@pytest.fixture(autouse=True)
def _fresh_process_state():
    gc._unwritable.clear()
    from clipxai.common import cache
    cache._reported.clear()


def _entries(root):
    """Cache entries (hidden names are builders' locks and staging folders)."""
    graphs = root / "graphs"
    return sorted(p for p in graphs.iterdir() if not p.name.startswith(".")) if graphs.exists() else []


def _image():
    return np.random.default_rng(3).integers(0, 256, (37, 53, 3), dtype=np.uint8)


def _key(bundle):
    return gc.cache_key(load_bundle(bundle).graph_files())


def test_first_load_fills_the_cache_and_later_loads_use_it(bundle, tmp_path, caplog):
    root = tmp_path / "cache"
    plain = Predictor.from_bundle(bundle, providers="cpu", graph_cache=False).predict(_image())
    assert not root.exists()
    caplog.set_level(logging.INFO, logger="clipxai")
    first = Predictor.from_bundle(bundle, providers="cpu", cache_dir=str(root)).predict(_image())
    assert "cached the optimized graph" in caplog.text
    (entry,) = _entries(root)
    done = json.loads((entry / gc.DONE_FILE).read_text())
    assert done["key"] == _key(bundle) and set(done["key"]["files"]) == {"model.onnx", "model.onnx.data"}
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


def test_cache_folders_and_files_are_private(bundle, tmp_path):
    old = os.umask(0)  # the most permissive umask: the cache must not inherit it
    try:
        Predictor.from_bundle(bundle, providers="cpu", cache_dir=str(tmp_path / "cache"))
    finally:
        os.umask(old)
    (entry,) = _entries(tmp_path / "cache")
    for d in (tmp_path / "cache", tmp_path / "cache" / "graphs", entry):
        assert stat.S_IMODE(d.stat().st_mode) == 0o700, d
    for f in entry.iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f


def test_a_cache_folder_others_can_write_is_refused(bundle, tmp_path, caplog):
    root = tmp_path / "cache"
    (root / "graphs").mkdir(parents=True)
    os.chmod(root / "graphs", 0o777)
    caplog.set_level(logging.WARNING, logger="clipxai")
    p = Predictor.from_bundle(bundle, providers="cpu", cache_dir=str(root))
    assert "graph cache not used" in caplog.text and "writable by other users" in caplog.text
    assert p.predict(_image()).heatmaps.shape == (3, 37, 53)
    assert _entries(root) == []


def test_a_symlinked_cache_folder_is_refused(bundle, tmp_path, caplog):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    (tmp_path / "cache").mkdir(mode=0o700)
    (tmp_path / "cache" / "graphs").symlink_to(elsewhere)
    caplog.set_level(logging.WARNING, logger="clipxai")
    Predictor.from_bundle(bundle, providers="cpu", cache_dir=str(tmp_path / "cache"))
    assert "symbolic link" in caplog.text and not list(elsewhere.iterdir())


def test_weights_changed_in_place_are_detected_and_rebuilt(bundle, tmp_path, caplog):
    root = tmp_path / "cache"
    want = Predictor.from_bundle(bundle, providers="cpu", graph_cache=False).predict(_image())
    Predictor.from_bundle(bundle, providers="cpu", cache_dir=str(root))
    (entry,) = _entries(root)
    data = entry / gc.DATA_FILE
    blob = bytearray(data.read_bytes())
    blob[len(blob) // 2: len(blob) // 2 + 64] = bytes(64)  # same size: the old size check let this through
    mtime = data.stat().st_mtime_ns
    data.write_bytes(bytes(blob))
    os.utime(data, ns=(mtime, mtime))  # even with its old mtime
    caplog.set_level(logging.WARNING, logger="clipxai")
    got = Predictor.from_bundle(bundle, providers="cpu", cache_dir=str(root)).predict(_image())
    assert "graph.onnx.data changed since it was written (sha256 mismatch)" in caplog.text
    assert np.abs(got.heatmaps_grid - want.heatmaps_grid).max() <= 1e-5
    assert np.abs(got.scores - want.scores).max() <= 1e-5
    assert gc.lookup(root, _key(bundle)) is not None  # rebuilt


def test_another_models_entry_swapped_in_is_never_used(bundle, other_bundle, tmp_path, caplog):
    root = tmp_path / "cache"
    want = Predictor.from_bundle(bundle, providers="cpu", graph_cache=False).predict(_image())
    Predictor.from_bundle(bundle, providers="cpu", cache_dir=str(root))
    Predictor.from_bundle(other_bundle, providers="cpu", cache_dir=str(root))
    mine, theirs = gc.entry_dir(root, _key(bundle)), gc.entry_dir(root, _key(other_bundle))
    # The other model's files under this bundle's entry (its record too, or only its data)
    for name in (gc.GRAPH_FILE, gc.DATA_FILE, gc.DONE_FILE):
        shutil.copyfile(theirs / name, mine / name)
    caplog.set_level(logging.WARNING, logger="clipxai")
    got = Predictor.from_bundle(bundle, providers="cpu", cache_dir=str(root)).predict(_image())
    assert "discarding it" in caplog.text
    assert np.abs(got.scores - want.scores).max() <= 1e-5 and got.classes == CLASSES
    Predictor.from_bundle(bundle, providers="cpu", cache_dir=str(root))
    for name in (gc.GRAPH_FILE, gc.DATA_FILE):
        shutil.copyfile(theirs / name, mine / name)  # the data alone, its record kept
    caplog.clear()
    got = Predictor.from_bundle(bundle, providers="cpu", cache_dir=str(root)).predict(_image())
    assert "sha256 mismatch" in caplog.text and np.abs(got.scores - want.scores).max() <= 1e-5


def test_a_copied_cache_is_hashed_once_then_trusted(bundle, tmp_path, monkeypatch):
    root = tmp_path / "cache"
    Predictor.from_bundle(bundle, providers="cpu", cache_dir=str(root))
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)  # new inodes: the fingerprints differ, the bytes do not
    hashed, key = [], _key(bundle)
    from clipxai.common import files
    real = files.sha256_file
    monkeypatch.setattr(files, "sha256_file", lambda p: hashed.append(p) or real(p))
    assert gc.lookup(copy, key) is not None and len(hashed) == 2
    assert gc.lookup(copy, key) is not None and len(hashed) == 2  # fingerprints refreshed


def test_garbled_graph_of_the_right_fingerprint_is_refused_by_onnxruntime(bundle, tmp_path, caplog):
    root = tmp_path / "cache"
    want = Predictor.from_bundle(bundle, providers="cpu", graph_cache=False).predict(_image())
    Predictor.from_bundle(bundle, providers="cpu", cache_dir=str(root))
    (entry,) = _entries(root)
    done = json.loads((entry / gc.DONE_FILE).read_text())
    graph = entry / gc.GRAPH_FILE
    graph.write_bytes(b"\x00" * graph.stat().st_size)
    done["files"][gc.GRAPH_FILE] = {"sha256": sha256_file(graph), "stat": gc.stat_fingerprint(graph)}
    (entry / gc.DONE_FILE).write_text(json.dumps(done))  # a record forged to match (only this user can)
    caplog.set_level(logging.WARNING, logger="clipxai")
    p = Predictor.from_bundle(bundle, providers="cpu", cache_dir=str(root)).predict(_image())
    assert "discarding an unreadable graph cache entry" in caplog.text
    assert np.abs(p.heatmaps_grid - want.heatmaps_grid).max() <= 1e-5


def test_key_changes_with_graph_runtime_and_cpu(monkeypatch):
    files = {"model.onnx": "ab" * 32, "model.onnx.data": "cd" * 32}
    key = gc.cache_key(files)
    assert gc.cache_key({**files, "model.onnx.data": "ef" * 32}) != key  # weights changed, graph not
    monkeypatch.setattr(gc.ort, "__version__", "0.0.1")
    assert gc.cache_key(files) != key
    monkeypatch.undo()
    monkeypatch.setattr(gc, "cpu_fingerprint", lambda: "other cpu")
    other = gc.cache_key(files)
    assert other != key and gc.entry_dir(gc.Path("/c"), other) != gc.entry_dir(gc.Path("/c"), key)


def test_foreign_cpu_entry_is_not_used(bundle, tmp_path, monkeypatch):
    root = tmp_path / "cache"
    Predictor.from_bundle(bundle, providers="cpu", cache_dir=str(root))
    monkeypatch.setattr(gc, "cpu_fingerprint", lambda: "another machine")
    Predictor.from_bundle(bundle, providers="cpu", cache_dir=str(root))
    assert len(_entries(root)) == 2  # a new entry for the new key, the old one untouched


def test_unwritable_cache_is_reported_once_and_not_retried(bundle, tmp_path, monkeypatch, caplog):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    caplog.set_level(logging.WARNING, logger="clipxai")
    started = []
    monkeypatch.setattr(gc.subprocess, "Popen", lambda *a, **k: started.append(a))
    for mode in ("sync", "background", "background"):
        p = Predictor.from_bundle(bundle, providers="cpu", cache_dir=str(blocker / "cache"), graph_cache=mode)
        assert p.predict(_image()).heatmaps.shape == (3, 37, 53)
    assert caplog.text.count("cannot be written") == 1 and started == []
    monkeypatch.setenv("CLIPXAI_GRAPH_CACHE", "0")
    root = tmp_path / "off"
    Predictor.from_bundle(bundle, providers="cpu", cache_dir=str(root))
    assert not root.exists()


def test_read_only_cache_folder_is_reported_once(bundle, tmp_path, monkeypatch, caplog):
    if os.geteuid() == 0:  # root writes anywhere: make the folder unwritable through os.access
        monkeypatch.setattr(gc.os, "access", lambda *a, **k: False)
    root = tmp_path / "cache"
    (root / "graphs").mkdir(parents=True, mode=0o700)
    os.chmod(root / "graphs", 0o500)
    caplog.set_level(logging.WARNING, logger="clipxai")
    started = []
    monkeypatch.setattr(gc.subprocess, "Popen", lambda *a, **k: started.append(a))
    for _ in range(3):
        Predictor.from_bundle(bundle, providers="cpu", cache_dir=str(root), graph_cache="background")
    os.chmod(root / "graphs", 0o700)
    assert caplog.text.count("cannot be written") == 1 and started == []


def test_background_mode_loads_at_once_and_fills_the_cache_in_another_process(bundle, tmp_path, caplog):
    root = tmp_path / "cache"
    plain = Predictor.from_bundle(bundle, providers="cpu", graph_cache=False).predict(_image())
    caplog.set_level(logging.INFO, logger="clipxai")
    p = Predictor.from_bundle(bundle, providers="cpu", cache_dir=str(root), graph_cache="background")
    assert "in the background (pid" in caplog.text
    first = p.predict(_image())
    assert gc.wait_for_builds(timeout=120)
    (entry,) = _entries(root)
    assert json.loads((entry / gc.DONE_FILE).read_text())["key"] == _key(bundle)
    assert not [p for p in (root / "graphs").iterdir() if ".partial-" in p.name]
    caplog.clear()
    second = Predictor.from_bundle(bundle, providers="cpu", cache_dir=str(root), graph_cache="background")
    assert "loaded the optimized graph from" in caplog.text and "in the background" not in caplog.text
    for q in (first, second.predict(_image())):
        assert np.abs(q.heatmaps_grid - plain.heatmaps_grid).max() <= 1e-5
        assert np.abs(q.scores - plain.scores).max() <= 1e-5


def test_no_code_from_the_working_directory_runs_in_the_builder(bundle, tmp_path, monkeypatch):
    """A folder of received images holding a click.py (or any module the builder imports): the
    builder must not import it. Before, ``python -m`` put the working directory first on sys.path."""
    work = tmp_path / "received"
    work.mkdir()
    marker = tmp_path / "PLANTED-CODE-RAN"
    for name in ("click", "numpy", "onnxruntime", "clipxai", "filelock", "platformdirs", "sitecustomize"):
        (work / f"{name}.py").write_text(f"open({str(marker)!r}, 'a').write('{name} ')\n")
    monkeypatch.chdir(work)
    monkeypatch.setenv("PYTHONPATH", str(work))  # nor from the environment
    monkeypatch.setenv("PYTHONSTARTUP", str(work / "click.py"))
    root = tmp_path / "cache"
    Predictor.from_bundle(bundle, providers="cpu", cache_dir=str(root), graph_cache="background")
    assert gc.wait_for_builds(timeout=120)
    assert not marker.exists(), marker.read_text()
    assert len(_entries(root)) == 1  # and the builder did its work
    cmd = gc.builder_command(bundle, root)
    assert cmd[1] == "-I" and str(work) not in " ".join(cmd)


def test_a_killed_builders_staging_folder_is_removed_by_the_next_builder(bundle, tmp_path):
    root = tmp_path / "cache"
    graphs = root / "graphs"
    graphs.mkdir(parents=True, mode=0o700)
    root.chmod(0o700)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    staging = graphs / f".{gc.entry_dir(root, _key(bundle)).name}.partial-{dead.pid}-deadbeef"
    staging.mkdir()
    (staging / gc.DATA_FILE).write_bytes(b"x" * 1000)  # what it had written when it was killed
    alive = graphs / f".other.partial-{os.getpid()}-cafecafe"  # a live builder's: left alone
    alive.mkdir()
    b = load_bundle(bundle)
    assert gc.build(b.model_path, b.graph_files(), root) is not None
    assert not staging.exists() and alive.exists()


def test_one_builder_per_entry(bundle, tmp_path):
    root = tmp_path / "cache"
    b = load_bundle(bundle)
    key = gc.cache_key(b.graph_files())
    assert not gc.building(root, key)
    gc.usable_root(root)
    held = gc._lock(root, key)
    held.acquire()  # another process is filling it
    try:
        import threading
        result = {}
        t = threading.Thread(target=lambda: result.update(
            building=gc.building(root, key), started=gc.start_background_build(bundle, b.graph_files(), root),
            built=gc.build(b.model_path, b.graph_files(), root)))
        t.start()
        t.join()
        assert result == {"building": True, "started": None, "built": None}
    finally:
        held.release()
    assert not gc.building(root, key)
    entry = gc.build(b.model_path, b.graph_files(), root)
    assert entry is not None and gc.lookup(root, key) == entry / gc.GRAPH_FILE
    assert gc.build(b.model_path, b.graph_files(), root) == entry  # already there: nothing rebuilt


def test_a_builder_waits_out_a_process_that_only_asks(bundle, tmp_path):
    """``building()`` takes the lock for a moment to ask; a builder trying at that moment must
    not give up (it did: the entry stayed empty until the next load)."""
    import threading
    root = tmp_path / "cache"
    b = load_bundle(bundle)
    key = gc.cache_key(b.graph_files())
    gc.usable_root(root)
    asker = gc._lock(root, key)
    asker.acquire()
    threading.Timer(0.1, asker.release).start()  # the asker lets go after 0.1 s (a real one: microseconds)
    t = time.monotonic()
    done = {}
    worker = threading.Thread(target=lambda: done.update(entry=gc.build(b.model_path, b.graph_files(), root)))
    worker.start()
    worker.join()
    assert done["entry"] is not None and gc.lookup(root, key) == done["entry"] / gc.GRAPH_FILE
    assert time.monotonic() - t >= 0.1  # it did wait for the lock


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
    from clipxai.cli.cache import main
    root = tmp_path / "cache"
    r = CliRunner().invoke(main, ["warm", str(bundle), "--cache-dir", str(root)])
    assert r.exit_code == 0, r.output
    assert r.output.startswith("model.onnx: graph cache ready: ") and len(_entries(root)) == 1
    assert "7 attention blocks fused" in r.output  # tests/tiny.py: 4 plain q-k blocks + 3 v-v
    r = CliRunner().invoke(main, ["warm", str(tmp_path / "nope"), "--cache-dir", str(root)])
    assert r.exit_code == 2
    assert len(r.output.strip().splitlines()) == 1 and r.output.startswith("error: ") and "not a bundle" in r.output
    r = CliRunner().invoke(main, ["clear", "--cache-dir", str(root)])
    assert r.exit_code == 0 and "removed" in r.output and not (root / "graphs").exists()


def test_a_frozen_app_fills_the_cache_while_loading(bundle, tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(sys, "frozen", True, raising=False)  # PyInstaller & co: no interpreter to start
    assert not gc.background_supported()
    caplog.set_level(logging.INFO, logger="clipxai")
    root = tmp_path / "cache"
    Predictor.from_bundle(bundle, providers="cpu", cache_dir=str(root), graph_cache="background")
    assert "cached the optimized graph" in caplog.text and "in the background" not in caplog.text
    assert len(_entries(root)) == 1


def test_sessions_are_created_with_large_blocks_returned_to_the_system(bundle, monkeypatch):
    import platform
    from clipxai.runtime.cpu import memory
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
    # The opt-out: the host application's malloc settings are left alone.
    calls.clear()
    monkeypatch.setenv("CLIPXAI_MALLOC_TUNING", "0")
    Predictor.from_bundle(bundle, providers="cpu", graph_cache=False)
    assert calls == []
    memory.set_malloc_tuning(True)
    try:
        Predictor.from_bundle(bundle, providers="cpu", graph_cache=False)
        assert len(calls) == 3
    finally:
        memory._enabled = None
