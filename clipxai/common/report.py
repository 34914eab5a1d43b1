"""How library code talks to whoever runs it: a ``Reporter``, never the terminal directly.

The library (export, runtime, apps, cluster) calls these methods; the default
says nothing. ``clipxai/cli/console.py`` implements them for a terminal (click
echoes and progress bars), a ROS node or a notebook can implement them their
own way. Nothing outside clipxai/cli (and the command modules) imports click.
"""

from __future__ import annotations

import contextlib
from typing import Callable, ContextManager, Iterator

# advance(n=1, info=None): n more units done; info: a short status (e.g. "3.2 frames/s").
Advance = Callable[..., None]


class Reporter:
    """The silent reporter: every message dropped, progress counted by nobody."""

    def step(self, message: str) -> None:
        """A step of the work begins (stdout in a terminal)."""

    def note(self, message: str) -> None:
        """Something worth knowing that is not a problem (stderr in a terminal)."""

    def warn(self, message: str) -> None:
        """Something the user must see: random weights, a failed gate (red in a terminal)."""

    def table(self, lines: list[str]) -> None:
        """Pre-formatted lines shown together."""

    def progress(self, total: int | None, label: str) -> ContextManager[Advance]:
        """A progress display of ``total`` units (None: unknown, a counter); yields ``advance``."""
        @contextlib.contextmanager
        def silent() -> Iterator[Advance]:
            yield lambda n=1, info=None: None
        return silent()


SILENT = Reporter()
