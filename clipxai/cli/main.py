"""``clipxai <task>``: one click group over every task. Commands load on use, so ``clipxai --help``
and the runtime's commands never import torch.

The table is data: name -> (module:attribute, one line for ``clipxai --help``). Each command also
installs under its hyphenated name (``clipxai-segment``, ...; pyproject.toml) as an alias.
"""

from __future__ import annotations

import importlib

import click

from clipxai.cli.options import COMMAND

COMMANDS: dict[str, tuple[str, str]] = {
    "export": ("clipxai.export.cli:export", "Export a CLIP model and classes as a bundle (needs clipxai[export])."),
    "export-sam": ("clipxai.export.sam_cli:export_sam", "Export SAM or SAM 2.1 as a mask-model bundle."),
    "segment": ("clipxai.cli.segment:segment", "Segment images, videos or a camera with a bundle."),
    "explain": ("clipxai.cli.explain:explain", "Which words made CLIP match an image (Grad-ECLIP)."),
    "evaluate": ("clipxai.cli.evaluate:evaluate", "mIoU, multi-label mAP, or faithfulness of maps."),
    "cache": ("clipxai.cli.cache:cache", "Fill or clear clipxai's caches."),
    "ros": ("clipxai.cli.ros:ros", "A ROS 2 node: segmentation and scores for an image topic (clipxai[ros])."),
}


def load_command(name: str) -> click.Command:
    module, attribute = COMMANDS[name][0].split(":")
    return getattr(importlib.import_module(module), attribute)


class TaskGroup(click.Group):
    """A group whose commands come from ``COMMANDS``, imported only when one runs."""

    def list_commands(self, ctx) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx, name: str) -> click.Command | None:
        return load_command(name) if name in COMMANDS else None

    def format_commands(self, ctx, formatter) -> None:
        with formatter.section("Tasks"):
            formatter.write_dl([(name, line) for name, (_, line) in COMMANDS.items()])


@click.group(cls=TaskGroup, context_settings=COMMAND)
@click.version_option(package_name="clipxai", message="clipxai %(version)s")
def main():
    """clipxai: CLIP explainability on devices. Export once with PyTorch, run anywhere with numpy and
    onnxruntime. `clipxai TASK --help` tells each task's flags."""


if __name__ == "__main__":  # pragma: no cover
    main()
