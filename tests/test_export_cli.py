"""clipxai-export: every user error is one line, non-zero exit, no traceback, nothing on disk."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from clipxai.export.cli import main
from helpers import leftovers, read_manifest
from tiny import TINY

TESTS = Path(__file__).parent


def invoke(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def tiny_args(out, *extra, classes="person,sky,tree"):
    return ["--backbone", TINY.name, "--pretrained", "random", "--image-size", "32",
            "--classes", classes, "-o", str(out), *extra]


def assert_user_error(result, pattern):
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    err = errors[0]
    assert result.stderr.strip().endswith(err)  # the error is the last thing said
    import re
    assert re.search(pattern, err), err


def test_export_succeeds_and_reports(tmp_path):
    out = tmp_path / "bundle"
    r = invoke(*tiny_args(out))
    assert r.exit_code == 0, r.output
    assert f"bundle: {out}" in r.stdout and "verified: max abs error similarity" in r.stdout
    assert "time:" in r.stdout
    assert "RANDOM" in r.stderr  # loud warning for random weights
    assert read_manifest(out)["weights"]["source"] == "random"


@pytest.mark.parametrize("args,pattern", [
    (["--backbone", "ViT-H/14"], r"unknown backbone 'ViT-H/14'; choose one of: ViT-B/32, ViT-B/16"),
    (["--pretrained", "nope_tag"], r"unknown weights 'nope_tag'.*choose one of: "),
    (["--classes", ""], r"class 1 is blank"),
    (["--classes", "a,,b"], r"class 2 is blank"),
    (["--classes", "dog,cat,Dog "], r"duplicate class 'Dog' \(entries 1 and 3\)"),
    (["--image-size", "30"], r"not a multiple of .*patch size 8; try 32"),
    (["--image-size", "0"], r"out of range"),
    (["--opset", "16"], r"--opset 16 is too old"),
    (["--classes", "dog", "--redundancy", "classes"], r"needs at least 2 classes"),
    (["--pretrained", "/nonexistent/weights.pt"], r"does not exist"),
])
def test_user_errors(tmp_path, args, pattern):
    base = tiny_args(tmp_path / "out")
    # later options override earlier ones in click
    r = invoke(*base, *args)
    assert_user_error(r, pattern)
    assert not (tmp_path / "out").exists() and not leftovers(tmp_path)


def test_classes_options(tmp_path):
    r = invoke("--backbone", TINY.name, "--pretrained", "random", "-o", str(tmp_path / "o"))
    assert_user_error(r, "no classes given")
    f = tmp_path / "c.txt"
    f.write_text("dog\n")
    r = invoke(*tiny_args(tmp_path / "o"), "--classes-file", str(f))
    assert_user_error(r, "either --classes or --classes-file")
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("caf\xe9\n".encode("latin-1"))
    r = invoke("--backbone", TINY.name, "--pretrained", "random", "--classes-file", str(bad), "-o", str(tmp_path / "o"))
    assert_user_error(r, "is not UTF-8")
    r = invoke("--backbone", TINY.name, "--pretrained", "random", "--classes-file", str(tmp_path / "missing.txt"),
               "-o", str(tmp_path / "o"))
    assert_user_error(r, "does not exist")
    good = tmp_path / "classes.txt"
    good.write_text("person\ntraffic light\ncafé\n\n", encoding="utf-8")
    r = invoke("--backbone", TINY.name, "--pretrained", "random", "--image-size", "32",
               "--classes-file", str(good), "-o", str(tmp_path / "o"))
    assert r.exit_code == 0, r.output
    assert read_manifest(tmp_path / "o")["classes"] == ["person", "traffic light", "café"]


def test_existing_output_needs_overwrite(tmp_path):
    out = tmp_path / "b"
    assert invoke(*tiny_args(out)).exit_code == 0
    digest = read_manifest(out)["files"]["text_embeddings.npy"]["sha256"]
    r = invoke(*tiny_args(out, classes="a,b"))
    assert_user_error(r, "already exists; pass --overwrite")
    assert read_manifest(out)["files"]["text_embeddings.npy"]["sha256"] == digest
    # --force only accepts a graph that fails the fidelity gate; it does not replace a bundle
    r = invoke(*tiny_args(out, "--force", classes="a,b"))
    assert_user_error(r, "already exists; pass --overwrite")
    assert read_manifest(out)["files"]["text_embeddings.npy"]["sha256"] == digest
    r = invoke(*tiny_args(out, "--overwrite", classes="a,b"))
    assert r.exit_code == 0, r.output
    assert read_manifest(out)["classes"] == ["a", "b"]
    assert not leftovers(tmp_path)


def test_verification_failure_writes_nothing(tmp_path, monkeypatch):
    import clipxai.export.pipeline as pipeline
    real_export = pipeline.export_onnx

    def broken_export(model, path, opset, **kw):
        # A graph whose baked text embeddings are off by 1e-2: ORT must disagree with torch.
        saved = model.text.clone()
        model.text += 1e-2
        try:
            return real_export(model, path, opset, **kw)
        finally:
            model.text.copy_(saved)

    monkeypatch.setattr(pipeline, "export_onnx", broken_export)
    out = tmp_path / "b"
    r = invoke(*tiny_args(out))
    assert_user_error(r, r"ONNX graph disagrees with PyTorch: max abs error similarity .* > 0.0001; no bundle written")
    assert not out.exists() and not leftovers(tmp_path)



def test_no_verify_skips_the_check(tmp_path):
    r = invoke(*tiny_args(tmp_path / "b", "--no-verify"))
    assert r.exit_code == 0 and "verification skipped" in r.stdout
    assert read_manifest(tmp_path / "b")["verification"] is None


def test_ctrl_c_leaves_nothing(tmp_path, monkeypatch):
    import clipxai.export.pipeline as pipeline

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "verify_onnx", interrupted)
    r = invoke(*tiny_args(tmp_path / "b"))
    assert r.exit_code == 130 and "interrupted: no bundle written" in r.stderr
    assert not (tmp_path / "b").exists() and not leftovers(tmp_path)


def _tiny_cli(*args, env=None):
    return [sys.executable, str(TESTS / "tiny.py"), *args]


def test_sigterm_mid_export_leaves_no_directory(tmp_path):
    out = tmp_path / "b"
    proc = subprocess.Popen(_tiny_cli(*tiny_args(out), "--text-batch-size", "1"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not leftovers(tmp_path):  # staging dir appears once encoding is done
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "export finished before it could be interrupted"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert "Traceback" not in err
    assert not out.exists() and not leftovers(tmp_path)


def test_stale_staging_from_a_killed_export_is_removed(tmp_path):
    stale = tmp_path / ".b.partial-999999999-abcdef"
    stale.mkdir()
    (stale / "model.onnx").write_bytes(b"partial")
    assert invoke(*tiny_args(tmp_path / "b")).exit_code == 0
    assert not stale.exists()


def test_download_failure_says_how_to_pass_a_file(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"), NO_PROXY="*",
               https_proxy="http://127.0.0.1:9", http_proxy="http://127.0.0.1:9")
    r = subprocess.run([sys.executable, "-m", "clipxai.export.cli",
                        "--backbone", "ViT-B/16", "--pretrained", "laion2b_s34b_b88k", "--classes", "dog,cat",
                        "-o", str(tmp_path / "b"), "--weights-dir", str(tmp_path / "cache")],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 3
    err = r.stderr.strip().splitlines()
    assert "Traceback" not in r.stderr
    assert err[-1].startswith("error: could not fetch the 'laion2b_s34b_b88k' weights of ViT-B/16")
    assert "--pretrained PATH" in err[-1]
    assert not (tmp_path / "b").exists()

