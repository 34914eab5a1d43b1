"""One `clipxai` command organised by task: every task listed, the old hyphenated names as aliases of the
same commands, one meaning per flag across commands, flags in any order, and `--help` without torch."""

from __future__ import annotations

import tomllib
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from clipxai.cli.main import COMMANDS, load_command, main
from clipxai.cli.options import CACHE_DIR_HELP, PROVIDERS_HELP
from helpers import commands_in_fresh_python

ROOT = Path(__file__).parent.parent
TASKS = ["export", "export-sam", "segment", "explain", "evaluate", "cache", "ros"]


def _commands() -> dict[str, click.Command]:
    """Every leaf command: name -> command (evaluate and cache are groups)."""
    out = {}
    for name in COMMANDS:
        command = load_command(name)
        if isinstance(command, click.Group):
            out.update({f"{name} {sub}": c for sub, c in command.commands.items()})
        else:
            out[name] = command
    return out


def test_clipxai_help_lists_every_task_in_one_line_each():
    r = CliRunner().invoke(main, ["--help"])
    assert r.exit_code == 0
    for task in TASKS:
        line = next((ln for ln in r.output.splitlines() if ln.strip().startswith(task + " ")), None)
        assert line is not None, (task, r.output)
    assert list(COMMANDS) == TASKS


def test_help_and_runtime_commands_never_import_torch():
    r = commands_in_fresh_python([["--help"], ["segment", "--help"], ["evaluate", "segmentation", "--help"],
                                  ["cache", "--help"]], "torch")
    assert r.stdout.strip().splitlines()[-1] == "NO-TORCH", r.stdout + r.stderr


def test_hyphenated_names_are_aliases_of_the_same_commands():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["clipxai"] == "clipxai.cli.main:main"
    for alias, target in scripts.items():
        if alias == "clipxai":
            continue
        task = alias.removeprefix("clipxai-")
        module, attribute = target.split(":")
        command = getattr(__import__(module, fromlist=[attribute]), attribute)
        assert command is load_command(task), alias


def test_one_meaning_per_flag_across_commands():
    seen: dict[str, tuple[str, str]] = {}
    for name, command in _commands().items():
        flags = {opt: p for p in command.params if isinstance(p, click.Option) and not p.hidden for opt in p.opts}
        assert "--output" not in flags, f"{name}: outputs are --out"
        if "--out" in flags:
            assert "-o" in flags["--out"].opts, name
        if "--cache-dir" in flags:
            assert flags["--cache-dir"].help == CACHE_DIR_HELP, f"{name}: --cache-dir is clipxai's cache root"
        if "--providers" in flags:
            assert flags["--providers"].help == PROVIDERS_HELP, name
        for opt in ("--batch-size", "--threads", "--slide", "--windows-per-batch", "--expect-digest"):
            if opt in flags:  # the same help and type wherever the flag appears
                meaning = (flags[opt].help.split("[")[0].strip(), str(flags[opt].type))
                first = seen.setdefault(opt, (name, meaning))
                assert first[1] == meaning, (opt, first, name, meaning)
    assert seen["--batch-size"][1][0] == "Images per graph run."


def test_flags_in_any_order(tmp_path):
    import numpy as np
    from PIL import Image
    from tiny import TINY
    from clipxai.export.pipeline import ExportConfig, export_bundle
    bundle = export_bundle(ExportConfig(output=tmp_path / "b", classes=["a", "b"], backbone=TINY.name,
                                        pretrained="random", image_size=32)).path
    Image.fromarray(np.full((20, 30, 3), 90, np.uint8)).save(tmp_path / "x.png")
    r = CliRunner().invoke(main, ["segment", "--out", str(tmp_path / "o"), "--no-overlays", "--providers", "cpu",
                                  str(bundle), str(tmp_path / "x.png"), "--batch-size", "2"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "o" / "x.json").is_file()


def test_exporter_keeps_output_as_an_alias_and_points_cache_dir_to_weights_dir(tmp_path):
    export = load_command("export")
    r = CliRunner().invoke(export, ["--classes", "a,b", "--output", str(tmp_path / "b"), "--pretrained", "random",
                                    "--backbone", "nope/1"])
    assert r.exit_code == 2 and "no bundle folder given" not in r.output  # --output reached --out
    r = CliRunner().invoke(export, ["--classes", "a,b", "--out", str(tmp_path / "b"), "--cache-dir", "x"])
    assert r.exit_code == 2 and "--weights-dir" in r.output
    r = CliRunner().invoke(export, ["--classes", "a,b"])
    assert r.exit_code == 2 and "pass --out DIR" in r.output


@pytest.mark.parametrize("args", [["evaluate", "--help"], ["export-sam", "--help"], ["explain", "--help"]])
def test_every_task_has_help(args):
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0 and "Usage:" in r.output
